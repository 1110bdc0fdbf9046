"""The one form every task takes: `Split`, `Dataset`, and the helpers that build and batch them.

Layouts (n examples, L time steps; time is axis 1 of the raw data, unlike activations):

=============  ===================  =================  ==============================================
layout         x                    lengths            tasks
=============  ===================  =================  ==============================================
tokens         (n, L) unsigned int  (n,) int64         ListOps, IMDb, copy, recall, language modelling
features       (n, L, d) float64    (n,) int64         digits, MNIST, CIFAR, Pathfinder, speech
token pairs    (n, 2, L) unsigned   (n, 2) int64       AAN retrieval (two documents per example)
=============  ===================  =================  ==============================================

Token ids are stored in the smallest unsigned integer type that holds vocab_size - 1 (`token_dtype`:
uint8 up to 256 ids, uint16 up to 65,536, uint32 beyond); the models accept integer arrays of any
width. Token id 0 is padding in every token task; `lengths` counts the real (unpadded) steps, so the
time axis of `x` is always axis `lengths.ndim`. Targets `y` depend on `Dataset.target`:

* "class": (n,) int64 in [0, n_classes);
* "value": (n,) float64 (regression);
* "sequence": (n, K) int64 in [0, n_classes), the classes to emit at the last K steps;
* "lm" (causal language modelling): (n, L), the dtype of x, the next token at every step:
  y[i, t] is the token that follows x[i, t] in the text, an id in [1, vocab_size) at the real steps
  (t < lengths[i]) and 0 at padding; n_classes = vocab_size (class 0, padding, is never a target).
  The rows are consecutive non-overlapping windows of the split's token stream s (`lm_split`):
  x[i, t] = s[i L + t], y[i, t] = s[i L + t + 1]; only the last row may be shorter than L.

The models take activations as (B, H, L), time last: their encoder embeds tokens (B, L) or maps
features (B, L, d) to (B, H, L). The data stay (n, L) / (n, L, d) here, as the papers' loaders give them.
"""

from dataclasses import dataclass, field, replace

import numpy as np

from refssm._checks import choice, in_range, positive_int

TARGETS = ("class", "value", "sequence", "lm")


@dataclass(frozen=True)
class Split:
    """One split of a task: inputs `x`, targets `y`, unpadded `lengths` (layouts: module docstring)."""

    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray

    def __post_init__(self):
        n = len(self.x)
        if len(self.y) != n or len(self.lengths) != n:
            raise ValueError(f"x, y and lengths must have the same number of examples, got "
                             f"{n}, {len(self.y)}, {len(self.lengths)}")
        if self.lengths.size and (self.lengths.min() < 0 or self.lengths.max() > self.steps):
            raise ValueError(f"lengths must lie in [0, {self.steps}] (the padded length)")

    def __len__(self):
        return len(self.x)

    @property
    def steps(self):
        """L, the padded number of time steps (the size of axis `lengths.ndim` of x)."""
        return self.x.shape[self.lengths.ndim]

    def take(self, index):
        """The examples at `index` (an integer array or slice), as a new Split."""
        return Split(self.x[index], self.y[index], self.lengths[index])

    def mask(self, index=slice(None)):
        """Boolean mask lengths.shape + (L,): True at real steps, False at padding."""
        return np.arange(self.steps) < self.lengths[index][..., None]


@dataclass(frozen=True)
class Dataset:
    """A task with its three splits, what the model needs to know about it, and where it came from.

    name: the task name given to `load`; source: where the data came from and how it was split.
    n_classes: number of target classes (0 for regression targets); target: one of TARGETS.
    vocab_size: token tasks, ids lie in [0, vocab_size) with 0 = padding; None for feature tasks.
    d_input: feature tasks, the feature size d; None for token tasks.
    permutation: None, or the (L,) index array applied to the time axis of every split
    (psMNIST style: x_permuted[:, t] = x[:, permutation[t]]).
    vocab: None, or for token tasks whose ids stand for text, the text of each id (a tuple of
    vocab_size strings, vocab[0] = "<pad>"), so that "".join / " ".join of vocab[id] decodes them.
    """

    name: str
    source: str
    train: Split
    val: Split
    test: Split
    n_classes: int
    target: str = "class"
    vocab_size: int | None = None
    d_input: int | None = None
    permutation: np.ndarray | None = field(default=None, repr=False)
    vocab: tuple | None = field(default=None, repr=False)

    def __post_init__(self):
        choice("target", self.target, TARGETS)
        if (self.vocab_size is None) == (self.d_input is None):
            raise ValueError("exactly one of vocab_size (token inputs) and d_input (features) must be set")
        if self.vocab is not None and len(self.vocab) != self.vocab_size:
            raise ValueError(f"vocab must hold vocab_size = {self.vocab_size} entries, got {len(self.vocab)}")
        if self.target == "lm":
            if self.vocab_size is None or self.n_classes != self.vocab_size:
                raise ValueError("target 'lm' needs token inputs and n_classes == vocab_size")
            for name, split in self.splits.items():
                if split.y.shape != split.x.shape:
                    raise ValueError(f"target 'lm': y must have the shape of x in every split, got "
                                     f"{split.y.shape} and {split.x.shape} in {name}")

    @property
    def splits(self):
        """{"train": ..., "val": ..., "test": ...} in that order."""
        return {"train": self.train, "val": self.val, "test": self.test}


def as_rng(name, rng):
    """A numpy Generator from a Generator or an integer seed >= 0."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(positive_int(name, rng, minimum=0))


def batches(split, batch_size, rng=None, shuffle=True, drop_last=False):
    """Yield mini-batches (x, y, mask) of `split`.

    x, y: the split's rows for the batch (layouts: module docstring); mask: bool, lengths.shape + (L,),
    i.e. (B, L), or (B, 2, L) for token pairs, True at real steps. Every batch has the split's padded
    length L. shuffle: visit the examples in the order rng.permutation(n), where rng is a numpy
    Generator or an integer seed (required when shuffle is True); otherwise in stored order.
    drop_last: skip a final batch smaller than batch_size.
    """
    batch_size = positive_int("batch_size", batch_size)
    if shuffle:
        if rng is None:
            raise ValueError("rng must be a numpy Generator or an integer seed >= 0 when shuffle=True")
        order = as_rng("rng", rng).permutation(len(split))
    else:
        order = np.arange(len(split))
    stop = len(split) - len(split) % batch_size if drop_last else len(split)
    for start in range(0, stop, batch_size):
        index = order[start:start + batch_size]
        yield split.x[index], split.y[index], split.mask(index)


def stratified_split(y, fractions, rng):
    """Index arrays that split labels `y` class by class in the given fractions.

    For each class c with n_c examples (in a random order drawn from `rng`), part k >= 1 gets
    round(fractions[k] * n_c) of them and part 0 the rest. Each returned index array is sorted, so
    examples keep their original order within a part.
    """
    fractions = in_range("fractions", fractions, 0.0, 1.0)
    if abs(fractions.sum() - 1.0) > 1e-9:
        raise ValueError(f"fractions must sum to 1, got {fractions.sum()!r}")
    parts = [[] for _ in fractions]
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        sizes = [int(round(f * len(members))) for f in fractions[1:]]
        bounds = np.cumsum([len(members) - sum(sizes)] + sizes)
        for k, chunk in enumerate(np.split(members, bounds[:-1])):
            parts[k].append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def holdout(split, fraction, rng):
    """(rest, held_out): a stratified `fraction` of `split` (class targets) held out, e.g. as val."""
    fraction = float(in_range("val_fraction", fraction, 0.0, 1.0, hi_open=True))
    rest, held = stratified_split(split.y, [1.0 - fraction, fraction], rng)
    return split.take(rest), split.take(held)


def token_dtype(vocab_size):
    """The smallest unsigned integer dtype holding the ids 0 .. vocab_size - 1 (uint8, uint16, uint32)."""
    return np.min_scalar_type(positive_int("vocab_size", vocab_size) - 1)


def lm_split(stream, seq_len):
    """A Split for next-token prediction ("lm" target) over a 1-D token stream.

    The stream's len(stream) - 1 (input, next token) pairs are cut into consecutive windows of
    seq_len steps: x[i, t] = stream[i seq_len + t], y[i, t] = stream[i seq_len + t + 1], so every
    token but the first is a target exactly once. Only the last row may be shorter (lengths[-1] <
    seq_len); its padding is 0 in x and y. y is a view of one zero-padded copy of the stream; x is
    another view of it when no row is short, else a copy. Both keep the stream's dtype.
    """
    stream = np.asarray(stream)
    if stream.ndim != 1 or not np.issubdtype(stream.dtype, np.integer):
        raise ValueError(f"stream must be a 1-D integer token array, got {stream.dtype} {stream.shape}")
    seq_len = positive_int("seq_len", seq_len)
    pairs = len(stream) - 1
    if pairs < 1:
        raise ValueError(f"a language-modelling split needs a stream of at least 2 tokens, got {len(stream)}")
    rows = -(-pairs // seq_len)
    buffer = np.zeros(rows * seq_len + 1, dtype=stream.dtype)
    buffer[:len(stream)] = stream
    lengths = np.full(rows, seq_len, dtype=np.int64)
    lengths[-1] = pairs - (rows - 1) * seq_len
    x = buffer[:-1].reshape(rows, seq_len)
    if lengths[-1] < seq_len:  # x's first padded step would be the stream's last token: zero it in a copy
        x = x.copy()
        x[-1, lengths[-1]:] = 0
    return Split(x, buffer[1:].reshape(rows, seq_len), lengths)


def pad(sequences, length, dtype=np.int64):
    """Right-pad (or truncate) 1-D sequences with zeros to `length` steps.

    Returns x (n, length) of `dtype` and lengths (n,) int64, the kept length of each sequence.
    """
    length = positive_int("max_length", length)
    x = np.zeros((len(sequences), length), dtype=dtype)
    lengths = np.empty(len(sequences), dtype=np.int64)
    for i, seq in enumerate(sequences):
        kept = seq[:length]
        x[i, :len(kept)] = kept
        lengths[i] = len(kept)
    return x, lengths


def fixed_length(x):
    """A Split-ready lengths array for fixed-length data x (n, L, ...): every entry is L."""
    return np.full(len(x), x.shape[1], dtype=np.int64)


def permute(dataset, seed):
    """The dataset with its time axis permuted by np.random.default_rng(seed).permutation(L).

    The same permutation is applied to every split and recorded in `permutation`. Only fixed-length
    tasks (all lengths equal L) can be permuted: permuting padded sequences would scatter the padding.
    """
    seed = positive_int("permutation_seed", seed, minimum=0)
    if dataset.permutation is not None:
        raise ValueError("permutation_seed: the dataset is already permuted")
    steps = dataset.train.steps
    for name, split in dataset.splits.items():
        if split.lengths.ndim != 1 or np.any(split.lengths != steps):
            raise ValueError(f"permutation_seed: task {dataset.name!r} has variable-length sequences "
                             f"({name} split); only fixed-length tasks can be permuted")
    perm = np.random.default_rng(seed).permutation(steps)
    permuted = {name: Split(np.take(s.x, perm, axis=1), s.y, s.lengths)
                for name, s in dataset.splits.items()}
    return replace(dataset, **permuted, permutation=perm,
                   source=f"{dataset.source}; time axis permuted (permutation_seed={seed})")


def to_arrays(splits):
    """Splits {"train": Split, ...} as a flat dict {"train_x": ..., "train_y": ..., ...} (for caching)."""
    return {f"{name}_{part}": getattr(split, part)
            for name, split in splits.items() for part in ("x", "y", "lengths")}


def from_arrays(arrays):
    """{"train": Split, "val": Split, "test": Split} from a dict written by `to_arrays`."""
    return {name: Split(arrays[f"{name}_x"], arrays[f"{name}_y"], arrays[f"{name}_lengths"])
            for name in ("train", "val", "test")}


def describe(dataset, bins=10):
    """A plain-text summary: sizes, input shape, class balance and the length histogram per split."""
    d = dataset
    inputs = f"vocab_size={d.vocab_size}" if d.vocab_size is not None else f"d_input={d.d_input}"
    lines = [f"{d.name}: {d.source}",
             f"  target={d.target} n_classes={d.n_classes} {inputs} "
             f"permuted={'yes' if d.permutation is not None else 'no'}"]
    for name, split in d.splits.items():
        lines.append(f"  {name:5s} n={len(split):>7d}  x{tuple(split.x.shape)} {split.x.dtype}  "
                     f"y{tuple(split.y.shape)} {split.y.dtype}")
        if len(split) == 0:
            continue
        if d.target == "class":
            counts = np.bincount(split.y, minlength=d.n_classes)
            lines.append("        classes: " + " ".join(f"{c}:{k}" for c, k in enumerate(counts)))
        lengths = split.lengths.ravel()
        if lengths.min() == lengths.max():
            lines.append(f"        length: all {lengths[0]}")
            continue
        if d.target == "lm" and lengths[:-1].min() == lengths[:-1].max():  # windows of one stream
            lines.append(f"        length: {len(lengths) - 1} windows of {lengths[0]}, then {lengths[-1]} "
                         f"({lengths.sum():,} targets)")
            continue
        counts, edges = np.histogram(lengths, bins=bins)
        lines.append(f"        length: min {lengths.min()} median {int(np.median(lengths))} "
                     f"max {lengths.max()}")
        for k, count in enumerate(counts):
            close = "]" if k == len(counts) - 1 else ")"
            bar = "#" * int(round(40 * count / counts.max()))
            lines.append(f"        [{edges[k]:7.1f}, {edges[k + 1]:7.1f}{close} {count:>7d} {bar}")
    return "\n".join(lines)
