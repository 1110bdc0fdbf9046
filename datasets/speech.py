"""Speech Commands (v0.02 layout) from a folder you bring: 16 kHz one-second keyword clips.

Layout: <data_dir>/<keyword>/<clip>.wav (16-bit PCM, mono, 16 kHz), plus validation_list.txt and
testing_list.txt naming the clips of those splits as `<keyword>/<clip>.wav`; every other clip of the
chosen keywords is training data. `_background_noise_` and keywords outside the chosen set are ignored.
"""

import struct
import wave
from pathlib import Path

import numpy as np

from refssm._checks import choice

from .core import Dataset, Split, pad

SAMPLE_RATE = 16_000
KEYWORDS_35 = ("backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward",
               "four", "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one",
               "right", "seven", "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow",
               "yes", "zero")
KEYWORDS_10 = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
LISTS = {"val": "validation_list.txt", "test": "testing_list.txt"}


def read_wav(path):
    """Samples (n,) float64 in [-1, 1) of a 16 kHz mono 16-bit PCM WAV file (int16 / 32768)."""
    try:
        with wave.open(str(path), "rb") as f:
            rate, width, channels = f.getframerate(), f.getsampwidth(), f.getnchannels()
            frames = f.readframes(f.getnframes())
    except (wave.Error, EOFError, struct.error) as e:
        raise ValueError(f"{path}: not a readable WAV file ({e})") from None
    if rate != SAMPLE_RATE or width != 2 or channels != 1:
        raise ValueError(f"{path}: expected 16-bit PCM mono at {SAMPLE_RATE} Hz, got {8 * width}-bit, "
                         f"{channels} channel(s) at {rate} Hz")
    return np.frombuffer(frames, dtype="<i2") / 32768.0


def _read_list(path):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (the official split list of Speech Commands, one "
                                "<keyword>/<clip>.wav per line)")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def load_speechcommands(data_dir=None, classes=35):
    """Speech Commands as a Dataset: x (n, 16000, 1) float64 samples, zero-padded (lengths = the clip's
    samples), y (n,) int64, with classes=35 (every keyword, labels in the order of KEYWORDS_35) or
    classes=10 (KEYWORDS_10, in that order; other keywords are dropped).

    The official validation_list.txt and testing_list.txt choose val and test. Memory: 128 kB per clip
    in float64 (about 13 GB for all 105,829 clips of v0.02).
    """
    if data_dir is None:
        raise ValueError("data_dir is required for task 'speechcommands': a Speech Commands folder "
                         "(<keyword>/*.wav, validation_list.txt, testing_list.txt)")
    keywords = {35: KEYWORDS_35, 10: KEYWORDS_10}[choice("classes", classes, (35, 10))]
    root = Path(data_dir)
    lists = {split: _read_list(root / name) for split, name in LISTS.items()}
    found = {split: ([], []) for split in ("train", "val", "test")}
    for label, keyword in enumerate(keywords):
        for path in sorted((root / keyword).glob("*.wav")):
            name = f"{keyword}/{path.name}"
            split = next((s for s, members in lists.items() if name in members), "train")
            found[split][0].append(read_wav(path))
            found[split][1].append(label)
    if not any(found[split][0] for split in found):
        raise FileNotFoundError(f"{root}: no <keyword>/*.wav clips of the {classes} keywords found")
    splits = {}
    for split, (clips, labels) in found.items():
        x, lengths = pad(clips, SAMPLE_RATE, dtype=np.float64)
        splits[split] = Split(x[..., None], np.array(labels, dtype=np.int64), lengths)
    return Dataset(name="speechcommands", source=f"Speech Commands clips in {data_dir}, {classes} keywords, "
                                                 "official validation/testing lists",
                   **splits, n_classes=classes, d_input=1)
