"""Generated tasks: LRA ListOps, Pathfinder-32, and the synthetic copy / adding / recall tasks."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refssm.datasets as D
from refssm.datasets import listops, pathfinder, synthetic


# ---------------------------------------------------------------- ListOps

HAND_CHECKED = [  # (source, value), evaluated by hand
    ("7", 7),
    ("( ( ( [MAX 2 ) 9 ) ] )", 9),
    ("( ( ( ( [MIN 8 ) 2 ) ( ( ( [MIN 8 ) 6 ) ] ) ) ] )", 2),  # MIN(8, 2, MIN(8, 6)), LRA's example
    ("( ( ( ( [MED 7 ) 1 ) 5 ) ] )", 5),  # median of 1 5 7
    ("( ( ( [MED 3 ) 4 ) ] )", 3),  # int(3.5)
    ("( ( ( ( ( [MED 9 ) 0 ) 2 ) 3 ) ] )", 2),  # int((2 + 3) / 2)
    ("( ( ( ( [SM 9 ) 8 ) 7 ) ] )", 4),  # 24 % 10
    ("( ( ( ( [MAX ( ( ( [SM 5 ) 6 ) ] ) ) ( ( ( ( [MIN 3 ) 9 ) 2 ) ] ) ) 0 ) ] )", 2),  # MAX(1, 2, 0)
]


@pytest.mark.parametrize("source, value", HAND_CHECKED)
def test_evaluator_agrees_with_hand_checked_expressions(source, value):
    tree = listops.parse(source)
    assert listops.evaluate(tree) == value
    assert listops.to_string(tree) == source


def test_text_form_of_a_tree():
    tree = ("[MAX", (2, ("[SM", (4, 5)), 1))
    assert listops.to_string(tree) == "( ( ( ( [MAX 2 ) ( ( ( [SM 4 ) 5 ) ] ) ) 1 ) ] )"
    assert listops.tokenize(listops.to_string(tree)) == ["MAX", "2", "SM", "4", "5", "X", "1", "X"]


@pytest.mark.parametrize("source", ["", "( ( [MAX 2 ) 9 ) ] )", "( ( ( [FOO 2 ) 9 ) ] )",
                                    "( ( ( [MAX 2 ) 9 ) X )", "( ( ( [MAX 2 ) 9 ) ] ) 4", "( [MAX ] )", "12"])
def test_parse_rejects_malformed_sources(source):
    with pytest.raises(ValueError, match="ListOps source"):
        listops.parse(source)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_token_count_equals_the_generators_length(seed):
    uniform = iter(np.random.default_rng(seed).random(200_000).tolist()).__next__
    tree, length = listops.random_tree(uniform)
    source = listops.to_string(tree)
    assert len(listops.tokenize(source)) == length == len(listops.encode(source))
    assert listops.evaluate(listops.parse(source)) == listops.evaluate(tree)


def test_random_tree_follows_the_branching_rules():
    uniform = iter(np.random.default_rng(0).random(3_000_000).tolist()).__next__
    roots = [listops.random_tree(uniform)[0] for _ in range(4000)]
    operators = [t for t in roots if not isinstance(t, int)]
    assert abs(1 - len(operators) / len(roots) - 0.75) < 0.03  # a node is a leaf with probability 0.75
    counts = np.bincount([len(t[1]) for t in operators])
    assert counts[:2].sum() == 0 and len(counts) == 11  # 2..10 arguments
    assert abs(np.mean([len(t[1]) for t in operators]) - 6) < 0.3
    assert {t[0] for t in operators} == set(listops.OPERATORS)

    def depth(tree):
        return 0 if isinstance(tree, int) else 1 + max(depth(c) for c in tree[1])
    assert max(depth(t) for t in roots) <= listops.MAX_DEPTH - 1  # root at depth 1, leaves at depth 10


@pytest.mark.parametrize("n, seed, lo, hi", [(60, 1, 500, 2000), (300, 2, 20, 60)])
def test_generated_lengths_respect_the_bounds(n, seed, lo, hi):
    examples = listops.generate(n, seed, min_length=lo, max_length=hi)
    lengths = [len(listops.tokenize(source)) for source, _ in examples]
    assert len(examples) == n and all(lo < k < hi for k in lengths)
    assert len({source for source, _ in examples}) == n
    assert all(listops.evaluate(listops.parse(source)) == label for source, label in examples)


_MUTATIONS = ["(", ")", "]", "[MIN", "[SM", "3", "7"]


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), edits=st.lists(
    st.tuples(st.sampled_from(["delete", "insert", "replace", "swap"]), st.integers(0, 10**6),
              st.integers(0, 10**6)), min_size=1, max_size=3))
def test_encode_accepts_exactly_what_the_parser_accepts(seed, edits):
    """The vectorised check in encode against the recursive parser, on generated trees with random edits
    (most of them malformed: unbalanced brackets, pairs of 1 or 3 items, stray operators)."""
    uniform = iter(np.random.default_rng(seed).random(20_000).tolist()).__next__
    drawn = None
    while drawn is None:
        drawn = listops.random_tree(uniform, max_length=60)
    tokens = listops.to_string(drawn[0]).split()
    for kind, i, j in edits:
        if kind == "insert":
            tokens.insert(i % (len(tokens) + 1), _MUTATIONS[j % len(_MUTATIONS)])
        elif tokens and kind == "delete":
            del tokens[i % len(tokens)]
        elif tokens and kind == "replace":
            tokens[i % len(tokens)] = _MUTATIONS[j % len(_MUTATIONS)]
        elif tokens:
            a, b = i % len(tokens), j % len(tokens)
            tokens[a], tokens[b] = tokens[b], tokens[a]
    source = " ".join(tokens)
    try:
        tree = listops.parse(source)
    except ValueError:
        with pytest.raises(ValueError, match="ListOps source"):
            listops.encode(source)
    else:
        ids = listops.encode(source)
        assert ids.dtype == np.uint8
        assert [listops.VOCAB[i] for i in ids] == listops.tokenize(listops.to_string(tree))


def test_generation_is_deterministic_for_a_seed():
    assert listops.generate(30, 7, 10, 200) == listops.generate(30, 7, 10, 200)
    assert listops.generate(30, 7, 10, 200) != listops.generate(30, 8, 10, 200)


@pytest.mark.parametrize("kwargs, match", [(dict(n=0), "n must be"), (dict(min_length=-1), "min_length"),
                                           (dict(min_length=50, max_length=51), "max_length"),
                                           (dict(seed=-3), "seed")])
def test_generate_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        listops.generate(**{"n": 5, "seed": 0, **kwargs})


def test_tsv_round_trip_in_lra_format(tmp_path):
    examples = listops.generate(20, 3, 10, 100)
    listops.write_tsv(tmp_path / "basic_train.tsv", examples)
    assert (tmp_path / "basic_train.tsv").read_text().splitlines()[0] == "Source\tTarget"
    assert listops.read_tsv(tmp_path / "basic_train.tsv") == examples


def test_listops_dataset_tokens_and_padding():
    ds = D.load("listops", n_train=40, n_val=5, n_test=5, seed=4, min_length=30, max_length=150)
    assert ds.train.x.shape == (40, 150) and ds.vocab_size == 16 and ds.n_classes == 10
    assert ds.train.x.dtype == np.uint8  # the full LRA set: 200 MB, not 1.6 GB of int64
    parts = listops.generate_splits(40, 5, 5, 4, 30, 150)
    for name, split in ds.splits.items():
        for row, n, label, (source, target) in zip(split.x, split.lengths, split.y, parts[name]):
            np.testing.assert_array_equal(row[:n], listops.encode(source))
            assert not row[n:].any() and row[:n].all() and label == target


# ---------------------------------------------------------------- Pathfinder-32


def test_pathfinder_images_size_range_balance_and_seed():
    images, labels = pathfinder.generate(24, seed=5)
    assert images.shape == (24, 32, 32) and images.dtype == np.float64
    assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(images * 255, np.round(images * 255))  # 8-bit levels
    assert np.bincount(labels).tolist() == [12, 12]
    again, _ = pathfinder.generate(24, seed=5)
    np.testing.assert_array_equal(images, again)
    other, _ = pathfinder.generate(24, seed=6)
    assert not np.array_equal(images, other)
    prefix, _ = pathfinder.generate(10, seed=5)
    np.testing.assert_array_equal(prefix, images[:10])


def _distance_to_snake(point, segments):
    """Smallest distance from a point to a snake given as segments (k, 2, 2)."""
    a, b = segments[:, 0], segments[:, 1]
    d = b - a
    t = np.clip(np.einsum("kj,kj->k", point - a, d) / np.einsum("kj,kj->k", d, d), 0, 1)
    return np.min(np.linalg.norm(point - (a + t[:, None] * d), axis=1))


@pytest.mark.parametrize("seed", range(12))
def test_markers_lie_on_the_same_snake_iff_label_is_1(seed):
    label = seed % 2
    image, scene = pathfinder.sample(np.random.default_rng(seed), label)
    assert [len(t) for t in scene.targets] == [14, 14] and all(len(d) == 4 for d in scene.distractors)
    owners = []
    for marker in scene.markers:
        distances = [_distance_to_snake(marker.astype(float), t) for t in scene.targets]
        on = [i for i, d in enumerate(distances) if d < 1e-9]
        assert len(on) == 1  # each marker sits on exactly one target snake
        owners.append(on[0])
    assert (owners[0] == owners[1]) == (label == 1)
    first, last = scene.targets[owners[0]][0, 0], scene.targets[owners[1]][-1, 1]
    np.testing.assert_array_equal(scene.markers, [first, last])  # origin tip and terminal tip
    for snake in scene.targets + scene.distractors:  # a dashed curve: paddles 2 long, gaps under 5
        np.testing.assert_allclose(np.linalg.norm(snake[:, 1] - snake[:, 0], axis=1), 2.0)
        assert np.all(np.linalg.norm(snake[1:, 0] - snake[:-1, 1], axis=1) < 5)
    for y, x in scene.markers:
        assert image[y, x] > 0.5  # the markers are drawn


def test_pathfinder_rasterisation_matches_pillow():
    image_module = pytest.importorskip("PIL.Image", reason="the cross-check against Pillow needs Pillow")
    draw_module = pytest.importorskip("PIL.ImageDraw")
    rng = np.random.default_rng(0)
    for n_in, n_out in ((17, 9), (64, 32), (20, 7)):
        picture = (rng.random((n_in, n_in)) > 0.7).astype(np.uint8) * 255
        pillow = np.array(image_module.fromarray(picture, "L").resize((n_out, n_out), image_module.LANCZOS))
        np.testing.assert_array_equal(pathfinder._resize(picture.astype(np.int64), n_out), pillow)
    for end in [(12, 9), (11, 13), (8, 4), (3, 2), (5, 8), (14, 14), (8, 13), (2, 11), (16, 1)]:
        canvas = image_module.new("L", (17, 17), 0)
        draw_module.Draw(canvas).line([(8, 8), end], fill=255, width=1)
        mine = np.zeros((17, 17), dtype=np.uint8)
        for y, x in pathfinder._bresenham(8, 8, end[1], end[0]):
            mine[y, x] = 255
        np.testing.assert_array_equal(mine, np.array(canvas))


# Hand-derived from the documented rules (module docstring of pathfinder.py, snakes2.py), not from the code:
# L = paddle_length = 2, m = paddle_margin = 1, k = L + m = 3. translate_coord moves a cell by
# (ceil(d sin t), ceil(d cos t)), so cos(pi/2) = 6e-17 rounds *up* to 1, as in the original.
def _ceil_step(theta, d):
    return np.array([math.ceil(d * math.sin(theta)), math.ceil(d * math.cos(theta))])


def _flip(theta):  # flip_by_pi of the original
    return theta + math.pi if theta + math.pi < math.pi else theta - math.pi


# Candidate heads: floor(3 (sin a, cos a)) for a = j 360 / (2 pi 3) degrees, j = 0..18 (19.0986 degrees
# apart), worked out by hand; j = 12 and 13 both give (-3, -2), so 18 distinct cells.
HEADS_BY_HAND = [(0, 3), (0, 2), (1, 2), (2, 1), (2, 0), (2, -1), (2, -2), (2, -3), (1, -3), (0, -3),
                 (-1, -3), (-2, -3), (-3, -2), (-3, -1), (-3, 0), (-3, 1), (-2, 2), (-1, 2)]


def test_pathfinder_candidate_heads_and_turn_weights():
    g = pathfinder._geometry(pathfinder.PATHFINDER32)
    assert sorted(map(tuple, g.heads.tolist())) == sorted(HEADS_BY_HAND)
    # turn weight cos^2(min(continuity |phi - theta|, pi / 2)), continuity = 1: for unit u = (sin theta,
    # cos theta) and a head h, that is (u . h)^2 / |h|^2 where u . h > 0, else 0
    thetas = [math.radians(d) for d in range(-180, 180)] + list(np.arctan2(g.heads[:, 0], g.heads[:, 1]))
    for row, theta in enumerate(thetas):
        dot = math.sin(theta) * g.heads[:, 0] + math.cos(theta) * g.heads[:, 1]
        expected = np.where(dot > 1e-12, dot ** 2 / (g.heads ** 2).sum(axis=1), 0.0)
        np.testing.assert_allclose(g.turn[row], expected, atol=1e-12)
    # e.g. a seed at 0 degrees: (0, 3) and (0, 2) straight on weigh 1, (1, 2) 4/5, (2, 1) 1/5, (2, 0) 0
    straight = dict(zip(map(tuple, g.heads.tolist()), g.turn[180]))
    assert straight[(0, 3)] == straight[(0, 2)] == 1.0
    assert (round(straight[(1, 2)], 12), round(straight[(2, 1)], 12)) == (0.8, 0.2)
    assert straight[(2, 0)] < 1e-30 and straight[(-2, -3)] < 1e-30


@pytest.mark.parametrize("degrees, head, pivot, step", [
    (0, (0, 2), (0, -1), (0, 4)),      # head 2 along x; pivot 3 back; q 4 further on
    (90, (2, 1), (-1, 2), (4, 1)),     # cos(pi/2) > 0 rounds up to 1
    (-90, (-2, 1), (1, 2), (-4, 1)),
    (-180, (0, -2), (0, 1), (0, -4)),  # sin(-pi) < 0 rounds up to 0; flipped back to 0 degrees
    (45, (2, 2), (0, 0), (3, 3)),
])
def test_pathfinder_seed_paddle_by_hand(degrees, head, pivot, step):
    g = pathfinder._geometry(pathfinder.PATHFINDER32)
    theta = math.radians(degrees)
    assert tuple(_ceil_step(theta, 2)) == head
    assert tuple(_ceil_step(theta, 2) + _ceil_step(_flip(theta), 3)) == pivot
    assert tuple(_ceil_step(theta, 4)) == step
    np.testing.assert_array_equal(g.seed_head[degrees + 180], head)
    np.testing.assert_array_equal(g.seed_pivot[degrees + 180], pivot)
    np.testing.assert_array_equal(g.advance[degrees + 180], step)


@pytest.mark.parametrize("seed", range(6))
def test_pathfinder_snakes_follow_the_growth_rule(seed):
    """Every snake of a drawn scene, read back from its segments: 14 paddles per target snake and 4 per
    distractor (contour_length // 3), at most 5 distractors (20 // 4); each paddle 2 long; the seed at
    an integer angle; each extension's head one of the 18 cells around its q, and q moving by
    ceil-step(L + 2m = 4) along the previous paddle's orientation from the previous q (or pivot)."""
    image, scene = pathfinder.sample(np.random.default_rng(100 + seed), seed % 2)
    assert [len(t) for t in scene.targets] == [14, 14]
    assert 1 <= len(scene.distractors) <= 5 and all(len(d) == 4 for d in scene.distractors)
    for snake in scene.targets + scene.distractors:
        directions = (snake[:, 1] - snake[:, 0]) / 2.0
        np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0)
        degrees = math.degrees(math.atan2(*directions[0]))
        assert abs(degrees - round(degrees)) < 1e-9
        theta = math.radians(round(degrees))
        tail = snake[0, 0].astype(int)
        np.testing.assert_array_equal(tail, snake[0, 0])
        previous = tail + _ceil_step(theta, 2) + _ceil_step(_flip(theta), 3)  # the pivot
        for (start, end), u in zip(snake[1:], directions[1:]):
            head = end.astype(int)
            np.testing.assert_array_equal(head, end)
            q = previous + _ceil_step(theta, 4)
            offset = tuple(head - q)
            assert offset in HEADS_BY_HAND
            np.testing.assert_allclose(np.array(offset) / np.hypot(*offset), u, atol=1e-12)  # head -> q
            previous, theta = q, math.atan2(*offset)


def test_pathfinder_markers_by_hand():
    """Two hand-made straight target snakes: a seed at 0 degrees from tails (6, 4) and (20, 4) (head +2,
    pivot -1: x = 3), then 6 extensions with q 4 further each (x = 7, 11, ..., 27) and heads (0, 2) from
    q, the last at x = 29. The origin marker goes on snake i's first tail, the terminal
    marker on snake i's last head for label 1 and on the other snake's for label 0; each marker is a
    disc of intensity 1, so after rescaling it is at least 1 / (2 x 0.6) of the image's brightest
    paddle (snake_contrast 2, paddle line intensity below 0.6)."""
    g = pathfinder._geometry(pathfinder.PATHFINDER32)
    straight = 360 + next(i for i, h in enumerate(g.heads.tolist()) if h == [0, 2])
    snakes, tails, heads = [], np.array([[6, 4], [20, 4]]), np.array([[6, 29], [20, 29]])
    mask = g.empty.copy()
    for tail in tails:
        anchors = np.array([tail] + [tail + (0, 4 * i - 1) for i in range(1, 7)])  # the seed's tail, the q's
        pids = np.array([180] + [straight] * 6)
        snakes.append((anchors, pids))
        cells = g.flat(anchors)[:, None] + g.mask[0][pids]
        np.maximum.at(mask, cells.ravel(), (g.mask[1][pids] * g.inside[cells]).ravel())
    np.testing.assert_array_equal(g.segments[straight][1] + snakes[0][0][-1], heads[0])
    pair = (mask, tuple(snakes), tails, heads)
    rng = np.random.default_rng(3)
    images, scenes = pathfinder._draw(rng, iter([pair] * 4), [1, 1, 0, 0], g)
    for image, scene in zip(images, scenes):
        i = scene.origin_snake
        terminal = i if scene.label == 1 else 1 - i
        assert scene.terminal_snake == terminal
        np.testing.assert_array_equal(scene.markers, [tails[i], heads[terminal]])
        for y, x in scene.markers:
            assert image[y, x] >= 0.8
    assert {s.origin_snake for s in scenes} == {0, 1}  # rng 3 draws both origins


def test_pathfinder_caps_tries_per_image_not_per_data_set(monkeypatch):
    """The cap counts tries since the last completed pair: with a cap of 3 batches (768 tries, about
    15 pairs), 64 images still generate; only a run of failures stops it."""
    monkeypatch.setattr(pathfinder, "_MAX_PAIR_BATCHES", 3)
    images, labels = pathfinder.generate(64, seed=2)
    assert images.shape == (64, 32, 32)
    real = pathfinder._target_pairs
    monkeypatch.setattr(pathfinder, "_target_pairs", lambda rng, g, count: real(rng, g, 0))
    with pytest.raises(RuntimeError, match="768 tries in a row"):
        pathfinder.generate(1, seed=2)


def test_pathfinder_dataset_is_a_balanced_sequence_task():
    ds = D.load("pathfinder", n_train=8, n_val=2, n_test=2, seed=1)
    assert ds.train.x.shape == (8, 1024, 1) and ds.d_input == 1 and ds.n_classes == 2
    assert np.bincount(ds.train.y).tolist() == [4, 4]
    images, labels = pathfinder.generate(12, seed=1)
    np.testing.assert_array_equal(ds.test.x[:, :, 0], images[10:].reshape(2, 1024))
    np.testing.assert_array_equal(ds.val.y, labels[8:10])


def test_sample_rejects_a_bad_label():
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        pathfinder.sample(np.random.default_rng(0), 2)


# ---------------------------------------------------------------- synthetic tasks


def test_copy_task_layout():
    ds = D.load("copy", n_train=50, n_val=5, n_test=5, seed=3, n_symbols=4, n_copy=3, delay=6)
    x, y = ds.train.x, ds.train.y
    assert x.shape == (50, 12) and y.shape == (50, 3) and ds.target == "sequence" and ds.vocab_size == 6
    np.testing.assert_array_equal(y, x[:, :3] - 1)
    assert np.all((x[:, :3] >= 1) & (x[:, :3] <= 4))
    np.testing.assert_array_equal(x[:, 3:8], 0)
    np.testing.assert_array_equal(x[:, 8], 5)  # the cue after delay - 1 blanks
    np.testing.assert_array_equal(x[:, 9:], 0)


def test_adding_task_marks_one_value_in_each_half():
    ds = D.load("adding", n_train=200, n_val=1, n_test=1, seed=2, length=10)
    x, y = ds.train.x, ds.train.y
    assert x.shape == (200, 10, 2) and ds.target == "value" and ds.n_classes == 0
    marks = x[:, :, 1]
    assert np.all(marks[:, :5].sum(axis=1) == 1) and np.all(marks[:, 5:].sum(axis=1) == 1)
    np.testing.assert_allclose(y, (x[:, :, 0] * marks).sum(axis=1))


def test_recall_task_asks_for_the_first_symbol():
    ds = D.load("recall", n_train=100, n_val=1, n_test=1, seed=9, n_classes=5, length=20)
    x, y = ds.train.x, ds.train.y
    np.testing.assert_array_equal(y, x[:, 0] - 1)
    np.testing.assert_array_equal(x[:, -1], 6)
    assert np.all((x[:, 1:-1] >= 1) & (x[:, 1:-1] <= 5)) and ds.vocab_size == 7


def test_synthetic_tasks_are_deterministic_and_check_arguments():
    a, b = D.load("adding", n_train=5, seed=1), D.load("adding", n_train=5, seed=1)
    np.testing.assert_array_equal(a.test.x, b.test.x)
    with pytest.raises(ValueError, match="length must be an integer >= 2"):
        D.load("adding", length=1)
    with pytest.raises(ValueError, match="n_classes must be an integer >= 2"):
        synthetic.load_recall(n_classes=1)


def test_match_pairs_share_a_topic_exactly_when_labelled_one():
    """Shapes, padding and lengths as documented; labels balanced; same-topic documents have closer token
    histograms (total variation) than different-topic ones, by a wide margin."""
    from refssm.datasets import synthetic

    x, y, lengths = synthetic.match_task(np.random.default_rng(0), 600, n_topics=4, vocab=16, length=80)
    assert x.shape == (600, 2, 80) and lengths.shape == (600, 2)
    assert lengths.min() >= 40 and lengths.max() <= 80
    steps = np.arange(80)
    assert np.all((x > 0) == (steps < lengths[..., None]))                    # tokens exactly at real steps
    assert 0.4 < y.mean() < 0.6
    hist = np.stack([[np.bincount(x[i, d, :lengths[i, d]], minlength=17)[1:] / lengths[i, d] for d in (0, 1)]
                     for i in range(600)])
    tv = 0.5 * np.abs(hist[:, 0] - hist[:, 1]).sum(axis=1)
    assert tv[y == 1].mean() + 0.2 < tv[y == 0].mean()
