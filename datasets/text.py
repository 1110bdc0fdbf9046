"""Byte-level text: IMDb reviews (LRA Text) and AAN citation pairs (LRA Retrieval), from files you bring.

Tokens are the UTF-8 bytes shifted by one (id = byte + 1, so vocab_size = 257 and 0 is padding), stored
as uint16 and truncated to max_length. LRA also works on bytes; its encoder's id offset may differ
from this one. The language-modelling corpora (lm.py) use the same byte ids at their byte level.
"""

from pathlib import Path

import numpy as np

from refssm._checks import positive_int

from .core import Dataset, Split, holdout, pad, token_dtype

VOCAB_SIZE = 257
DTYPE = token_dtype(VOCAB_SIZE)  # uint16
IMDB_CLASSES = ("neg", "pos")  # labels 0 and 1
AAN_FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv",
             "test": "new_aan_pairs.test.tsv"}
_SPLIT_SEED = 0


def encode(data):
    """Token ids (uint16) of bytes or str (UTF-8): byte + 1."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return np.frombuffer(data, dtype=np.uint8).astype(DTYPE) + 1


def decode(ids):
    """The bytes of byte-level token ids (id - 1); padding (0) is dropped."""
    ids = np.asarray(ids)
    return (ids[ids > 0] - 1).astype(np.uint8).tobytes()


def read_imdb(directory, split):
    """(token sequences, labels (n,) int64) of aclImdb/<split>/{neg,pos}/*.txt, files in sorted order."""
    sequences, labels = [], []
    for label, name in enumerate(IMDB_CLASSES):
        folder = Path(directory) / split / name
        files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
        if not files:
            raise FileNotFoundError(f"{folder}: expected .txt reviews (the aclImdb layout: "
                                    "train/neg, train/pos, test/neg, test/pos)")
        sequences += [encode(f.read_bytes()) for f in files]
        labels += [label] * len(files)
    return sequences, np.array(labels, dtype=np.int64)


def load_imdb(data_dir=None, max_length=4096, val_fraction=0.1):
    """IMDb sentiment (LRA Text) from an aclImdb directory: x (n, max_length) uint16 byte tokens, y (n,) in
    {0, 1}.

    The official test reviews are the test split; val is a stratified `val_fraction` of the training
    reviews (seed 0). Reviews longer than max_length bytes are truncated.
    """
    if data_dir is None:
        raise ValueError("data_dir is required for task 'imdb': an aclImdb directory "
                         "(train/neg, train/pos, test/neg, test/pos holding .txt reviews)")
    max_length = positive_int("max_length", max_length)
    splits = {}
    for split in ("train", "test"):
        sequences, labels = read_imdb(data_dir, split)
        x, lengths = pad(sequences, max_length, DTYPE)
        splits[split] = Split(x, labels, lengths)
    train, val = holdout(splits["train"], val_fraction, np.random.default_rng(_SPLIT_SEED))
    return Dataset(name="imdb", source=f"aclImdb reviews in {data_dir}, bytes; val = stratified "
                                       f"{val_fraction:g} of train, seed 0",
                   train=train, val=val, test=splits["test"], n_classes=2, vocab_size=VOCAB_SIZE)


def read_aan(path):
    """(first texts, second texts, labels (n,) int64) from an LRA AAN TSV file.

    Each line: label (0 or 1, possibly written 0.0 / 1.0), the two paper ids, the two texts, separated
    by tabs; no header. ValueError naming the file and line if a line does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected an LRA AAN pairs TSV: "
                                "label<TAB>id1<TAB>id2<TAB>text1<TAB>text2 per line)")
    firsts, seconds, labels = [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.rstrip("\n").split("\t")
            try:
                label = float(fields[0])
            except ValueError:
                label = -1.0
            if len(fields) != 5 or label not in (0.0, 1.0):
                raise ValueError(f"{path}, line {number}: expected 5 tab-separated fields "
                                 f"(label 0/1, id1, id2, text1, text2), got {len(fields)} fields "
                                 f"starting {line[:40]!r}")
            firsts.append(encode(fields[3]))
            seconds.append(encode(fields[4]))
            labels.append(int(label))
    return firsts, seconds, np.array(labels, dtype=np.int64)


def load_aan(data_dir=None, max_length=4000):
    """AAN citation pairs (LRA Retrieval): x (n, 2, max_length) byte tokens, the two documents of each
    pair; lengths (n, 2); y (n,) in {0, 1} (1: the papers are linked by citation).

    Reads new_aan_pairs.train.tsv, new_aan_pairs.eval.tsv (val) and new_aan_pairs.test.tsv from
    data_dir; each document is truncated to max_length bytes (LRA uses 4,000).
    """
    if data_dir is None:
        raise ValueError("data_dir is required for task 'aan': a directory holding "
                         f"{', '.join(AAN_FILES.values())}")
    max_length = positive_int("max_length", max_length)
    splits = {}
    for split, name in AAN_FILES.items():
        firsts, seconds, labels = read_aan(Path(data_dir) / name)
        (x1, l1), (x2, l2) = pad(firsts, max_length, DTYPE), pad(seconds, max_length, DTYPE)
        splits[split] = Split(np.stack([x1, x2], axis=1), labels, np.stack([l1, l2], axis=1))
    return Dataset(name="aan", source=f"LRA AAN pairs in {data_dir}, bytes", **splits,
                   n_classes=2, vocab_size=VOCAB_SIZE)
