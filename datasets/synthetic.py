"""Small synthetic tasks for teaching and fast tests: copy, adding problem, delayed recall, and two-document
matching (the shape of LRA Retrieval, for the dual-encoder head without the AAN files).

Each `load_*` returns a Dataset whose three splits are drawn from np.random.default_rng(seed) in the
order train, val, test. Token id 0 is the blank (padding) symbol in the token tasks, whose Datasets
store x in the smallest unsigned type (core.token_dtype); the *_task functions return int64.
"""

import numpy as np

from refssm._checks import positive_int

from .core import Dataset, Split, fixed_length, token_dtype


def _splits(n_train, n_val, n_test, seed, draw, vocab_size=None):
    """{"train", "val", "test"}: Splits of draw(rng, n) -> (x, y), drawn in that order from one seed;
    token inputs (vocab_size given) are stored in token_dtype(vocab_size)."""
    sizes = (positive_int("n_train", n_train), positive_int("n_val", n_val, minimum=0),
             positive_int("n_test", n_test, minimum=0))
    rng = np.random.default_rng(positive_int("seed", seed, minimum=0))
    splits = {}
    for name, n in zip(("train", "val", "test"), sizes):
        x, y = draw(rng, n)
        if vocab_size is not None:
            x = x.astype(token_dtype(vocab_size))
        splits[name] = Split(x, y, fixed_length(x))
    return splits


def copy_task(rng, n, n_symbols, n_copy, delay):
    """The copy-memory task (Hochreiter & Schmidhuber 1997; as in Arjovsky et al. 2016).

    x (n, L) int64 with L = 2 n_copy + delay: n_copy symbols drawn uniformly from 1..n_symbols, then
    delay - 1 blanks (0), the cue n_symbols + 1, and n_copy blanks. y (n, n_copy) int64: the symbols as
    classes 0..n_symbols - 1, to be emitted at the last n_copy steps in order.
    """
    symbols = rng.integers(1, n_symbols + 1, size=(n, n_copy))
    x = np.zeros((n, 2 * n_copy + delay), dtype=np.int64)
    x[:, :n_copy] = symbols
    x[:, n_copy + delay - 1] = n_symbols + 1
    return x, symbols - 1


def adding_task(rng, n, length):
    """The adding problem (Hochreiter & Schmidhuber 1997; as in Le et al. 2015).

    x (n, L, 2) float64: channel 0 holds values ~ U[0, 1); channel 1 marks one step uniform in the first
    half [0, L // 2) and one uniform in the second half [L // 2, L) with 1.0. y (n,) float64: the sum of
    the two marked values.
    """
    values = rng.random((n, length))
    rows = np.arange(n)
    first = rng.integers(0, length // 2, size=n)
    second = rng.integers(length // 2, length, size=n)
    marks = np.zeros((n, length))
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    return np.stack([values, marks], axis=-1), values[rows, first] + values[rows, second]


def recall_task(rng, n, n_classes, length):
    """Delayed recall: name the symbol shown at step 0 when the cue appears at the last step.

    x (n, L) int64: step 0 holds symbol c + 1 with class c uniform in 0..n_classes - 1, steps 1..L - 2
    hold distractor symbols uniform in 1..n_classes, and step L - 1 the cue n_classes + 1. y (n,) int64 = c.
    """
    labels = rng.integers(0, n_classes, size=n)
    x = rng.integers(1, n_classes + 1, size=(n, length))
    x[:, 0] = labels + 1
    x[:, -1] = n_classes + 1
    return x, labels


def load_copy(n_train=10_000, n_val=1_000, n_test=1_000, seed=0, n_symbols=8, n_copy=10, delay=100):
    """The copy task as a Dataset: x (n, 2 n_copy + delay) tokens, y (n, n_copy) classes (see copy_task)."""
    n_symbols = positive_int("n_symbols", n_symbols, minimum=2)
    n_copy, delay = positive_int("n_copy", n_copy), positive_int("delay", delay)
    splits = _splits(n_train, n_val, n_test, seed, lambda rng, n: copy_task(rng, n, n_symbols, n_copy, delay),
                     n_symbols + 2)
    return Dataset(name="copy", source=f"copy task: seed {seed}, {n_copy} of {n_symbols} symbols, "
                                       f"delay {delay}",
                   **splits, n_classes=n_symbols, target="sequence", vocab_size=n_symbols + 2)


def load_adding(n_train=10_000, n_val=1_000, n_test=1_000, seed=0, length=200):
    """The adding problem as a Dataset: x (n, length, 2) float64, y (n,) float64 (see adding_task)."""
    length = positive_int("length", length, minimum=2)
    splits = _splits(n_train, n_val, n_test, seed, lambda rng, n: adding_task(rng, n, length))
    return Dataset(name="adding", source=f"adding problem: seed {seed}, length {length}",
                   **splits, n_classes=0, target="value", d_input=2)


def load_recall(n_train=10_000, n_val=1_000, n_test=1_000, seed=0, n_classes=8, length=100):
    """Delayed recall as a Dataset: x (n, length) tokens, y (n,) classes (see recall_task)."""
    n_classes = positive_int("n_classes", n_classes, minimum=2)
    length = positive_int("length", length, minimum=2)
    splits = _splits(n_train, n_val, n_test, seed, lambda rng, n: recall_task(rng, n, n_classes, length),
                     n_classes + 2)
    return Dataset(name="recall", source=f"delayed recall: seed {seed}, {n_classes} symbols, length {length}",
                   **splits, n_classes=n_classes, vocab_size=n_classes + 2)


def match_task(rng, n, n_topics, vocab, length):
    """Two-document matching: is the second document about the same topic as the first?

    Each topic t is a Zipf-like distribution over the ids 1..vocab, p_t(v) proportional to 1 / rank_t(v),
    with its own random ranking. An example draws topic a for document 0 and, with probability 1/2, the same
    topic (label 1) or another one (label 0) for document 1; each document has a length uniform in
    [length // 2, length] and its tokens drawn i.i.d. from its topic, then zero padding.
    x (n, 2, length) int64, lengths (n, 2) int64, y (n,) int64 in {0, 1}.
    """
    ranks = np.stack([rng.permutation(vocab) + 1 for _ in range(n_topics)])    # (T, V): rank of each id
    probs = 1.0 / ranks
    probs /= probs.sum(axis=1, keepdims=True)
    a = rng.integers(0, n_topics, n)
    y = rng.integers(0, 2, n)
    b = np.where(y == 1, a, (a + rng.integers(1, n_topics, n)) % n_topics)
    lengths = rng.integers(length // 2, length + 1, (n, 2))
    x = np.zeros((n, 2, length), dtype=np.int64)
    for i in range(n):
        for d, topic in enumerate((a[i], b[i])):
            x[i, d, :lengths[i, d]] = rng.choice(vocab, lengths[i, d], p=probs[topic]) + 1
    return x, y, lengths


def load_match(n_train=4_000, n_val=500, n_test=500, seed=0, n_topics=8, vocab=32, length=64):
    """Two-document matching as a Dataset (token pairs, class target; see match_task)."""
    n_topics = positive_int("n_topics", n_topics, minimum=2)
    vocab, length = positive_int("vocab", vocab, minimum=2), positive_int("length", length, minimum=2)
    sizes = (positive_int("n_train", n_train), positive_int("n_val", n_val, minimum=0),
             positive_int("n_test", n_test, minimum=0))
    rng = np.random.default_rng(positive_int("seed", seed, minimum=0))
    splits = {}
    for name, n in zip(("train", "val", "test"), sizes):
        x, y, lengths = match_task(rng, n, n_topics, vocab, length)
        splits[name] = Split(x.astype(token_dtype(vocab + 1)), y, lengths)
    return Dataset(name="match", source=f"two-document matching: seed {seed}, {n_topics} topics, {vocab} tokens, "
                                        f"length {length // 2}..{length}",
                   **splits, n_classes=2, vocab_size=vocab + 1)
