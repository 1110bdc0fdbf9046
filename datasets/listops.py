"""LRA ListOps: the generator, evaluator, LRA text format, tokeniser and TSV files.

Rules of the original generator (lra_benchmarks/data/listops.py, Apache-2.0), re-implemented here:

* operators MIN, MAX, MED, SM (sum mod 10), written `[MIN`, `[MAX`, `[MED`, `[SM`, closed by `]`;
  values 0-9 (FIRST and LAST are commented out in the original);
* generate_tree(depth): below max_depth = 10 draw r ~ U[0, 1), at max_depth r = 1; if r > VALUE_P = 0.25
  the node is a leaf (a random digit, length 1), otherwise an operator node with randint(2, max_args = 10)
  (inclusive) children at depth + 1, of length 2 + the children's lengths; the root has depth 1;
* accept a tree only if min_length < length < max_length (strict; LRA uses 500 and 2000), drop
  duplicates, and split the accepted trees into train / val / test (LRA: 96,000 / 2,000 / 2,000, in the
  iteration order of a Python set; here in generation order);
* value: MIN, MAX; MED = int(np.median(values)) (even count: the mean of the two middle values,
  truncated); SM = sum(values) % 10; the label is the root's value (10 classes);
* text (to_string): the tree as a left-nested binary tuple, operator first, e.g. MAX(2, 9) is
  `( ( ( [MAX 2 ) 9 ) ] )`; files are TSV with the header `Source<TAB>Target`;
* tokens (LRA input_pipeline): `]` becomes `X`, parentheses are dropped, the rest is split on spaces and
  stripped of non-alphanumerics (`[MIN` -> `MIN`); the token count is the generator's length.

Reading LRA's files, every source must be one tree in exactly this text format (`encode` checks it,
vectorised, before dropping the parentheses): a line with unbalanced brackets or parentheses is a
ValueError naming the file and line, never a silently trained example. The label is not re-derived.
Token ids are uint8 (16 ids), so the full LRA set (100,000 x 2,000 tokens) takes 200 MB, not 1.6 GB.

Randomness: each random choice consumes one draw u ~ U[0, 1) from a numpy Generator (r = u; a digit is
floor(10 u); an operator floor(4 u); a child count 2 + floor(9 u)), so a seed fixes the data set. The
statistics are those of the original; the exact trees differ (it uses Python's `random`).
"""

import csv
from pathlib import Path

import numpy as np

from refssm._checks import positive_int

from .cache import cached
from .core import Dataset, Split, from_arrays, pad, to_arrays, token_dtype

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VALUE_P = 0.25  # a node is a leaf when r > VALUE_P, i.e. with probability 0.75
MAX_DEPTH = 10
MAX_ARGS = 10
VERSION = 2  # bump when the data generated for a given seed change (2: uint8 token ids)

# Token ids: 0 is padding; the 15 LRA tokens follow in a fixed order (LRA builds its vocabulary from
# the validation file, in set order; a fixed order makes ids reproducible).
VOCAB = ("<pad>", *"0123456789", "MIN", "MAX", "MED", "SM", "X")
TOKEN_ID = {token: i for i, token in enumerate(VOCAB)}
DTYPE = token_dtype(len(VOCAB))  # uint8
_DROP = str.maketrans("", "", "()[")
# Codes of the raw text tokens while checking a source: the LRA ids, and two more for the parentheses
# (which LRA drops, as encode does once the source is checked).
_OPEN, _CLOSE = len(VOCAB), len(VOCAB) + 1
_RAW_ID = {**{d: TOKEN_ID[d] for d in "0123456789"}, **{op: TOKEN_ID[op[1:]] for op in OPERATORS},
           END: TOKEN_ID["X"], "(": _OPEN, ")": _CLOSE}
_DIGITS = (TOKEN_ID["0"], TOKEN_ID["9"])
_OPS = (TOKEN_ID["MIN"], TOKEN_ID["SM"])


def random_tree(uniform, max_length=None, depth=1):
    """One random tree by the rules of LRA's generate_tree, and its length.

    uniform: a callable returning the next draw from U[0, 1). A tree is a digit (int) or a tuple
    (operator, children). Returns (tree, length); or None as soon as the length reaches max_length,
    without drawing the rest (such a tree would be rejected anyway, so the accepted trees keep the
    original distribution).
    """
    r = uniform() if depth < MAX_DEPTH else 1.0
    if r > VALUE_P:
        return int(10 * uniform()), 1
    op = OPERATORS[int(4 * uniform())]
    n_children = 2 + int((MAX_ARGS - 1) * uniform())  # randint(2, MAX_ARGS), inclusive
    children, length = [], 2  # the operator token and the closing `]`
    for _ in range(n_children):
        budget = None if max_length is None else max_length - length
        child = random_tree(uniform, budget, depth + 1)
        if child is None:
            return None
        children.append(child[0])
        length += child[1]
        if max_length is not None and length >= max_length:
            return None
    return (op, tuple(children)), length


def evaluate(tree):
    """The value of a tree, an int in 0..9."""
    if isinstance(tree, int):
        return tree
    op, children = tree
    values = sorted(evaluate(child) for child in children)
    if op == "[MIN":
        return values[0]
    if op == "[MAX":
        return values[-1]
    if op == "[SM":
        return sum(values) % 10
    mid = len(values) // 2  # [MED: int(np.median(values)); values are >= 0, so // truncates
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) // 2


def to_string(tree):
    """The tree in LRA's text format, e.g. ('[MAX', (2, 9)) -> '( ( ( [MAX 2 ) 9 ) ] )'."""
    out = []
    _write(tree, out)
    return "".join(out)


def _write(tree, out):
    # LRA builds t = op; t = (t, child) for each child; t = (t, END) and prints a tuple as '( a b )'.
    if isinstance(tree, int):
        out.append(str(tree))
        return
    op, children = tree
    out.append("( " * (len(children) + 1) + op)
    for child in children:
        out.append(" ")
        _write(child, out)
        out.append(" )")
    out.append(" " + END + " )")


def parse(source):
    """The tree written by `to_string` (or found in an LRA file); ValueError if `source` is malformed."""
    tokens = source.split()
    if not tokens:
        raise ValueError("ListOps source is empty")
    pair, i = _parse_pair(tokens, 0)
    if i != len(tokens):
        raise ValueError(f"ListOps source has extra tokens after position {i}: {' '.join(tokens[i:i + 5])!r}")
    return _tree(pair)


def _parse_pair(tokens, i):
    """Parse '( a b )' nesting into Python pairs; leaves stay strings."""
    if i >= len(tokens):
        raise ValueError("ListOps source ends early (unbalanced parentheses)")
    if tokens[i] != "(":
        return tokens[i], i + 1
    left, i = _parse_pair(tokens, i + 1)
    right, i = _parse_pair(tokens, i)
    if i >= len(tokens) or tokens[i] != ")":
        raise ValueError(f"ListOps source: expected ')' at token {i}")
    return (left, right), i + 1


def _tree(pair):
    if isinstance(pair, str):
        if len(pair) == 1 and pair.isdigit():
            return int(pair)
        raise ValueError(f"ListOps source: expected a digit or a '( ... ] )' group, got {pair!r}")
    spine, end = pair
    if end != END:
        raise ValueError(f"ListOps source: an operator group must close with ']', got {end!r}")
    children = []
    while isinstance(spine, tuple):
        spine, child = spine
        children.append(_tree(child))
    if spine not in OPERATORS or not children:
        raise ValueError(f"ListOps source: expected an operator {OPERATORS} with arguments, got {spine!r}")
    return spine, tuple(reversed(children))


def tokenize(source):
    """LRA tokens of a source string: ']' -> 'X', parentheses dropped, '[' stripped, split on spaces."""
    return source.replace(END, "X").translate(_DROP).split()


def encode(source):
    """Token ids (uint8, in [1, len(VOCAB))) of a source in LRA's text format, as LRA tokenises it.

    The source must be one tree written as `to_string` writes it; ValueError saying what is wrong
    (an unknown token, unbalanced parentheses, a group that is not `( a b )`, an operator group
    without `]`, ...) and at which token, otherwise.
    """
    raw = source.split()
    try:
        codes = np.array([_RAW_ID[t] for t in raw], dtype=np.uint8)
    except KeyError as e:
        raise ValueError(f"ListOps source has the unknown token {e.args[0]!r} (allowed: digits 0-9, "
                         f"{', '.join(OPERATORS)}, {END}, parentheses)") from None
    problem = _malformed(codes)
    if problem is not None:
        reason, at = problem
        raise ValueError(f"ListOps source is not one well-formed tree: {reason} at token {at + 1} of "
                         f"{len(raw)} ({raw[at]!r})" if raw else "ListOps source is empty")
    return codes[codes < _OPEN]


def _malformed(codes):
    """None if the raw codes of a source are one tree in LRA's text format, else (reason, token index).

    The grammar of `to_string`, with Child = digit | Group:
        Root = digit | Group;  Group = "(" Spine "]" ")";  Spine = "(" (operator | Spine) Child ")".
    So every parenthesised pair holds exactly two items; a pair whose second item is `]` (a Group)
    has a Spine as its first; any other pair (a Spine) has an operator or a Spine first and a digit or
    a Group second; the root is a Group. Checked with array operations, no per-token Python loop.
    """
    n = len(codes)
    if n == 0:
        return "empty", 0
    is_digit = (codes >= _DIGITS[0]) & (codes <= _DIGITS[1])
    if n == 1:
        return None if is_digit[0] else ("a one-token source must be a digit", 0)
    if codes[0] != _OPEN:
        return "a source of several tokens must start with '('", 0
    opens, closes = codes == _OPEN, codes == _CLOSE
    depth = np.cumsum(opens.astype(np.int64) - closes)  # after each token
    if depth.min() < 0:
        return "unbalanced parentheses: ')' closes nothing", int(np.argmax(depth < 0))
    if depth[-1] != 0:
        return f"unbalanced parentheses: {depth[-1]} '(' never closed", n - 1
    if (depth[:-1] == 0).any():
        return "extra tokens after the tree", int(np.argmax(depth == 0)) + 1
    # Items and pairs as events in token order: every token but ')' starts an item of the pair at
    # its depth; a '(' also opens a pair one level deeper. Sorted by level (stably: token order within
    # a level), the items of each pair directly follow its opening event.
    before = depth - opens + closes
    per_token = (~closes).astype(np.int64) + opens
    token = np.repeat(np.arange(n), per_token)
    is_open = np.arange(len(token)) - (np.cumsum(per_token) - per_token)[token] == 1
    level = (before[token] + is_open).astype(np.uint16 if n < 2 ** 16 else np.int64)
    order = np.argsort(level, kind="stable")
    token, is_open = token[order], is_open[order]
    pair = np.cumsum(is_open) - 1  # the pair each item belongs to; -1 for the root item
    items = token[~is_open & (pair >= 0)]
    counts = np.bincount(pair[~is_open & (pair >= 0)], minlength=int(opens.sum()))
    if (counts != 2).any():
        bad = int(np.argmax(counts != 2))
        return (f"a parenthesised pair must hold exactly 2 items, this one holds {counts[bad]}",
                int(token[is_open][bad]))
    first, second = items.reshape(-1, 2).T  # the items of pair g, in the order pairs are numbered
    left, right = codes[first], codes[second]
    is_group = right == TOKEN_ID["X"]
    inner = np.full(n, -1)  # the pair each '(' opens
    inner[token[is_open]] = np.arange(len(counts))
    left_is_op = (left >= _OPS[0]) & (left <= _OPS[1])
    checks = [
        (~(left_is_op | (left == _OPEN)), first, "a pair must start with an operator or '('"),
        (~(is_digit[second] | is_group | (right == _OPEN)), second, f"expected a digit, {END} or '('"),
        ((left == _OPEN) & is_group[inner[first]], first, f"a closed group (ending in {END}) "
                                                          "cannot take arguments"),
        ((right == _OPEN) & ~is_group[inner[second]], second, f"an argument must be a digit or a "
                                                              f"group closed by {END}"),
        (is_group & left_is_op, second, f"an operator needs at least one argument before {END}"),
        ((np.arange(len(counts)) == inner[0]) & ~is_group, first, f"the tree must close with {END}"),
    ]
    for bad, where, reason in checks:
        if bad.any():
            return reason, int(where[np.argmax(bad)])
    return None


def generate(n, seed, min_length=500, max_length=2000):
    """n distinct ListOps examples [(source, label)] in generation order, by LRA's rules.

    source: LRA text format; label: its value, 0..9. Only trees with min_length < length < max_length
    are kept (LRA: 500, 2000; smaller bounds give short variants for quick runs). seed: integer >= 0.
    """
    n = positive_int("n", n)
    min_length = positive_int("min_length", min_length, minimum=0)
    max_length = positive_int("max_length", max_length, minimum=min_length + 2)
    rng = np.random.default_rng(positive_int("seed", seed, minimum=0))
    uniform = _uniform_stream(rng).__next__
    examples, misses = {}, 0
    while len(examples) < n:
        drawn = random_tree(uniform, max_length)
        if drawn is not None and drawn[1] > min_length:
            source = to_string(drawn[0])
            if source not in examples:
                examples[source] = evaluate(drawn[0])
                misses = 0
                continue
        misses += 1
        if misses > 1_000_000:
            raise ValueError(f"min_length={min_length}, max_length={max_length}: a million draws gave no "
                             f"new tree; these bounds admit fewer than n={n} distinct trees")
    return list(examples.items())


def _uniform_stream(rng, block=8192):
    while True:
        yield from rng.random(block).tolist()


def write_tsv(path, examples):
    """Write [(source, label)] as an LRA ListOps TSV file (header `Source<TAB>Target`)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["Source", "Target"])
        writer.writerows(examples)


def _tsv_rows(path):
    """(line number, source, label) of each example in an LRA ListOps TSV file (header first);
    ValueError naming the file and line if the header or a row's layout or label is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected an LRA ListOps TSV file, "
                                "header Source<TAB>Target)")
    with open(path, newline="") as f:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows, None)
        if header != ["Source", "Target"]:
            raise ValueError(f"{path}: line 1 must be the header Source<TAB>Target, got {header!r}")
        for row in rows:
            if len(row) != 2 or not row[1].strip().isdigit() or not 0 <= int(row[1]) <= 9:
                raise ValueError(f"{path}, line {rows.line_num}: expected '<source><TAB><target 0-9>', "
                                 f"got {row!r}")
            yield rows.line_num, row[0], int(row[1])


def _encode_line(source, path, line):
    try:
        return encode(source)
    except ValueError as e:
        raise ValueError(f"{path}, line {line}: {e}") from None


def read_tsv(path):
    """[(source, label)] from an LRA ListOps TSV file; ValueError naming the file and line if a line is
    malformed, its source included (see `encode`)."""
    examples = []
    for line, source, label in _tsv_rows(path):
        _encode_line(source, path, line)
        examples.append((source, label))
    return examples


def _tsv_split(path, max_length):
    """A Split of an LRA ListOps TSV file: each line checked and encoded once."""
    sequences, labels = [], []
    for line, source, label in _tsv_rows(path):
        sequences.append(_encode_line(source, path, line))
        labels.append(label)
    x, lengths = pad(sequences, max_length, DTYPE)
    return Split(x, np.array(labels, dtype=np.int64), lengths)


def _to_split(examples, max_length, where):
    sequences = []
    for i, (source, _) in enumerate(examples):
        try:
            sequences.append(encode(source))
        except ValueError as e:
            raise ValueError(f"{where}, example {i}: {e}") from None
    x, lengths = pad(sequences, max_length, DTYPE)
    return Split(x, np.array([label for _, label in examples], dtype=np.int64), lengths)


TSV_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}


def generate_splits(n_train, n_val, n_test, seed, min_length=500, max_length=2000):
    """{"train", "val", "test"}: lists of (source, label), the n_train + n_val + n_test distinct examples
    of generate(..., seed, min_length, max_length) split in generation order (as LRA splits its set)."""
    sizes = [positive_int("n_train", n_train), positive_int("n_val", n_val, minimum=0),
             positive_int("n_test", n_test, minimum=0)]
    examples = generate(sum(sizes), seed, min_length, max_length)
    bounds = np.cumsum(sizes)
    return {"train": examples[:bounds[0]], "val": examples[bounds[0]:bounds[1]], "test": examples[bounds[1]:]}


def load(n_train=96_000, n_val=2_000, n_test=2_000, seed=0, min_length=500, max_length=2000, data_dir=None):
    """ListOps as a Dataset: x (n, max_length) uint8 token ids (0 = padding), y (n,) int64 in 0..9.

    Without data_dir: n_train + n_val + n_test distinct examples from `generate(..., seed, min_length,
    max_length)`, split in generation order and cached on disk. With data_dir: LRA's files
    basic_train.tsv, basic_val.tsv, basic_test.tsv from that directory (generation options unused),
    truncated to max_length tokens as LRA does.
    """
    max_length = positive_int("max_length", max_length, minimum=2)
    common = dict(name="listops", n_classes=10, vocab_size=len(VOCAB))
    if data_dir is not None:
        paths = {name: Path(data_dir) / file for name, file in TSV_FILES.items()}
        splits = {name: _tsv_split(p, max_length) for name, p in paths.items()}
        return Dataset(source=f"LRA ListOps TSV files in {data_dir}", **splits, **common)
    sizes = [positive_int("n_train", n_train), positive_int("n_val", n_val, minimum=0),
             positive_int("n_test", n_test, minimum=0)]
    seed = positive_int("seed", seed, minimum=0)
    min_length = positive_int("min_length", min_length, minimum=0)
    params = dict(sizes=sizes, seed=seed, min_length=min_length, max_length=max_length)

    def build():
        parts = generate_splits(*sizes, seed, min_length, max_length)
        return to_arrays({name: _to_split(part, max_length, "generated") for name, part in parts.items()})

    splits = from_arrays(cached("listops", VERSION, params, build))
    return Dataset(source=f"generated by LRA's ListOps rules: seed {seed}, {min_length} < length < "
                          f"{max_length}, {sizes[0]}/{sizes[1]}/{sizes[2]} in generation order",
                   **splits, **common)
