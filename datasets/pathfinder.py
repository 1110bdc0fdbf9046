"""LRA Pathfinder-32: are the two circles joined by one dashed curve? Re-implemented in numpy.

LRA's Pathfinder images come from drewlinsley/pathfinder (snakes2.py, MIT), run with the parameters in
LRA's builder docstring (`PATHFINDER32`). That code needs OpenCV, PIL and the long-removed
`scipy.misc.imresize`; this module re-implements its rules and its rasterisation (L = paddle_length,
m = paddle_margin, aa = antialias_scale; cells are (y, x), y down; angles from the x axis towards y):

* Paddle: a 1 px line (PIL's width-1 Bresenham line) of L aa px drawn at aa times the resolution from the
  centre of a (2n aa + 1)^2 canvas, n = L + ceil(thickness) + m, resized to (2n + 1)^2 by PIL's
  fixed-point Lanczos resampling (horizontal pass, 8 bits, vertical pass, 8 bits); its image is that / 255
  times its contrast. Its mask is the line dilated by a disc of radius m aa, resized the same way.
  Points move by the original's translate_coord: `distance` along the angle, rounded up.
* Seed: angle theta uniform in integer degrees [-180, 180); the tail is uniform among the cells where
  the mask, its outer frame set to 1 (1 px, or 2 seed_distance px for the first target snake) and
  dilated by the seed kernel (the cells where the paddle's mask is 1, drawn at (L + m + 1, L + m + 1)
  in a (2(L + m) + 1)^2 canvas, anchored at its centre as cv2.dilate does), is <= 0.3; no such cell ends
  the seed. head = tail + L (theta) and pivot = head - (L + m) (theta) must lie in the image, else theta
  is redrawn (at most 1 + max_paddle_retrial draws).
* Extension from pivot p and angle theta: q = p + (L + 2m) (theta); the candidate heads are the integer
  points (truncated) in the image on the circle of radius L + m around q, one per pixel of arc; the one
  at angle phi weighs cos^2(min(continuity |phi - theta|, pi / 2)) times 1 - (the mask's maximum within
  m of it); a dead end below a total of 1e-4. A head drawn by weight is kept if max(mask + the new
  paddle's mask) < 1.8, else redrawn (at most 1 + max_paddle_retrial draws); the paddle runs from the
  head back towards q, and the snake's previous paddle joins the mask (a paddle may touch its
  predecessor only).
* Two target snakes of contour_length paddles (contrast paddle_contrast * snake_contrast): the second
  tail is seed_distance px from the first in a uniform integer-degree direction (rounded), with its own
  theta; they grow alternately, and the pair is redrawn until both complete. As in the original, a
  new paddle is not checked against the other snake's newest paddle, so the two snakes touch in about
  a quarter of the images.
* num_distractor_snakes distractor snakes of distractor_length paddles (contrast snake_contrast), each
  tried up to 1 + max_distractor_retrial times from the same mask and left out if it never completes.
  As in the LRA wrapper (`use_single_paddles = False`), no single paddles.
* Markers: discs of radius marker_radius aa drawn at aa times the resolution around (y aa, x aa) and
  resized (Lanczos) to the image: on the origin tip (first tail) of target snake i, i uniform in
  {0, 1}, and on the terminal tip (last head) of snake i if the label is 1, else of snake 1 - i.
* The image, the maximum of paddles and markers, is rescaled to 0..255 by its minimum and maximum and
  rounded (scipy.misc.bytescale, as imsave applies it), and returned / 255.

The resampling and line drawing agree bit for bit with Pillow (tests check this where Pillow is
installed). Departures: after the pair completes, both target snakes' last paddles join the mask (the
original adds only the second's); the original's stop when under 1% of the image is free is not
modelled. Randomness comes from a numpy Generator, so the images differ from LRA's files but follow
their distribution. For speed, target pairs grow as many independent tries at once and every pair that
completes is used (the tries are i.i.d., so each completed pair has the distribution of the original's
redraw-until-success loop; about 2% complete); distractors and rendering are done for several images
at once.
"""

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from refssm._checks import positive_int

from .cache import cached
from .core import Dataset, Split, fixed_length, from_arrays, to_arrays

VERSION = 1  # bump when the images generated for a given seed change


@dataclass(frozen=True)
class Params:
    """Generator parameters: LRA's Pathfinder-32 (its builder docstring; one-element lists such as
    paddle_margin_list = [1] are single values here), and snakes2_wrapper.py's defaults for the retries."""

    size: int = 32
    padding: int = 1
    antialias_scale: int = 2
    paddle_length: int = 2
    paddle_thickness: float = 0.5
    paddle_margin: int = 1
    marker_radius: float = 1.5
    contour_length: int = 14
    distractor_length: int = 14 // 3
    num_distractor_snakes: int = 20 // (14 // 3)
    seed_distance: int = 7
    continuity: float = 1.0
    snake_contrast: float = 2.0
    paddle_contrast: float = 0.75
    max_paddle_retrial: int = 2
    max_distractor_retrial: int = 4


PATHFINDER32 = Params()
_PAIR_BATCH = 256  # target-pair tries grown at once (about 2% complete)
_CHUNK = 32  # images whose distractors and rendering are done at once
_MAX_PAIR_BATCHES = 1000  # batches in a row without a completed pair before giving up (per image)


@dataclass(frozen=True)
class Scene:
    """What was drawn. Snakes are arrays (k, 2, 2) of paddle segments (start, end) as (y, x), in
    growth order. markers (2, 2) int: the origin marker (first tail of targets[origin_snake]) and the
    terminal marker (last head of targets[terminal_snake]); label = 1 iff the two are the same snake."""

    targets: tuple
    distractors: tuple
    markers: np.ndarray
    origin_snake: int
    terminal_snake: int
    label: int


def generate(n, seed):
    """n images (n, size, size) float64 in [0, 1] (multiples of 1/255) and labels (n,) int64.

    Label i is i % 2, so every prefix is balanced to within one image. All randomness comes from
    np.random.default_rng(seed), consumed in chunks of _CHUNK images, so the first k images do not
    depend on n.
    """
    n = positive_int("n", n)
    rng = np.random.default_rng(positive_int("seed", seed, minimum=0))
    g = _geometry(PATHFINDER32)
    pairs = _pairs(rng, g)
    labels = np.arange(n, dtype=np.int64) % 2
    images = np.empty((n, g.params.size, g.params.size))
    for start in range(0, n, _CHUNK):
        chunk, _ = _draw(rng, pairs, np.arange(start, start + _CHUNK) % 2, g)
        images[start:start + _CHUNK] = chunk[:n - start]
    return images, labels


def sample(rng, label):
    """One image (size, size) float64 in [0, 1] with the given label (0 or 1) from the numpy Generator
    `rng`, and its Scene."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    g = _geometry(PATHFINDER32)
    images, scenes = _draw(rng, _pairs(rng, g), [label], g)
    return images[0], scenes[0]


def _pairs(rng, g):
    """Endless iterator over completed target pairs (mask, (paddles 0, paddles 1), tails (2, 2),
    heads (2, 2)), from batches of independent tries. Every pair that completes is used, in try order:
    the tries are i.i.d., so each follows the distribution of the original's redraw-until-success loop.

    The cap on tries is per pair, i.e. per image: only _MAX_PAIR_BATCHES batches in a row without
    a completed pair (about 2% of tries complete, so a run of 256,000 failures never happens with
    the LRA parameters) stop the generator; a whole data set draws as many batches as it needs.
    """
    failed = 0
    while True:
        tries = _target_pairs(rng, g, _PAIR_BATCH)
        failed = 0 if len(tries) else failed + 1
        if failed == _MAX_PAIR_BATCHES:
            raise RuntimeError(f"no pair of target snakes completed in {_MAX_PAIR_BATCHES * _PAIR_BATCH} "
                               "tries in a row (for one image): these parameters admit almost no pair")
        for i in range(len(tries)):
            yield tries.masks[i], (tries.paddles(i, 0), tries.paddles(i, 1)), tries.tail[i], tries.head[i]


def _draw(rng, pairs, labels, g):
    """Images (c, size, size) and Scenes for c labels: pairs from `pairs`, then distractors, markers."""
    p = g.params
    chosen = [next(pairs) for _ in labels]
    masks = np.stack([c[0] for c in chosen])
    distractors = _distractors(rng, masks, g)
    origins = rng.integers(2, size=len(labels))
    terminals = np.where(np.asarray(labels) == 1, origins, 1 - origins)
    rows = np.arange(len(labels))
    tails, heads = np.stack([c[2] for c in chosen]), np.stack([c[3] for c in chosen])
    markers = np.stack([tails[rows, origins], heads[rows, terminals]], 1)
    target_contrast = p.paddle_contrast * p.snake_contrast
    drawn = [[(*t, target_contrast) for t in c[1]] + [(*d, p.snake_contrast) for d in ds]
             for c, ds in zip(chosen, distractors)]
    scenes = [Scene(targets=tuple(_segments(t, g) for t in c[1]),
                    distractors=tuple(_segments(d, g) for d in ds),
                    markers=m, origin_snake=int(o), terminal_snake=int(t), label=int(label))
              for c, ds, m, o, t, label in zip(chosen, distractors, markers, origins, terminals, labels)]
    return _render(drawn, markers, g), scenes


def _segments(paddles, g):
    anchors, pids = paddles
    return g.segments[pids] + anchors[:, None, :]


# ---------------------------------------------------------------- rasterisation (PIL, OpenCV, scipy.misc)


def _ceil_step(theta, distance):
    """translate_coord of the original, as an offset from an integer cell: `distance` along theta
    (y = sin, x = cos), rounded up."""
    return np.array([math.ceil(distance * math.sin(theta)), math.ceil(distance * math.cos(theta))])


def _bresenham(y0, x0, y1, x1):
    """Cells of PIL's width-1 line from (y0, x0) to (y1, x1), both ends included."""
    dy, dx = abs(y1 - y0), abs(x1 - x0)
    ys, xs = (1 if y1 >= y0 else -1), (1 if x1 >= x0 else -1)
    cells = []
    if dx > dy:
        e = 2 * dy - dx
        for _ in range(dx + 1):
            cells.append((y0, x0))
            if e >= 0:
                y0, e = y0 + ys, e - 2 * dx
            e, x0 = e + 2 * dy, x0 + xs
    else:
        e = 2 * dx - dy
        for _ in range(dy + 1):
            cells.append((y0, x0))
            if e >= 0:
                x0, e = x0 + xs, e - 2 * dy
            e, y0 = e + 2 * dx, y0 + ys
    return cells


def _disc(radius):
    """Offsets (m, 2) of the cells with y^2 + x^2 <= radius^2 (generate_dilation_struct)."""
    r = int(radius)
    return np.array([(y, x) for y in range(-r, r + 1) for x in range(-r, r + 1)
                     if y * y + x * x <= radius ** 2])


def _dilate(image, offsets):
    """Grey dilation of a 2-D image by a set of offsets; cells outside the image do not count."""
    out = np.zeros_like(image)
    h, w = image.shape
    for dy, dx in offsets:
        out[max(0, -dy):min(h, h - dy), max(0, -dx):min(w, w - dx)] = np.maximum(
            out[max(0, -dy):min(h, h - dy), max(0, -dx):min(w, w - dx)],
            image[max(0, dy):min(h, h + dy), max(0, dx):min(w, w + dx)])
    return out


def _lanczos(x):
    return np.where(np.abs(x) < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)


@lru_cache(maxsize=16)
def _resample_weights(n_in, n_out):
    """PIL's Lanczos resampling weights (n_out, n_in) as 22-bit fixed-point integers."""
    scale = n_in / n_out
    support = 3.0 * max(scale, 1.0)
    weights = np.zeros((n_out, n_in))
    for j in range(n_out):
        centre = (j + 0.5) * scale
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in)
        k = _lanczos((np.arange(lo, hi) - centre + 0.5) / max(scale, 1.0))
        weights[j, lo:hi] = k / k.sum()
    fixed = np.where(weights < 0, np.ceil(weights * 2 ** 22 - 0.5), np.floor(weights * 2 ** 22 + 0.5))
    return fixed.astype(np.int64)


def _resize(image, n_out):
    """PIL's Lanczos resize of square 8-bit images (..., n, n) (int arrays) to n_out^2: two 8-bit passes."""
    weights = _resample_weights(image.shape[-1], n_out)
    horizontal = np.clip((image.astype(np.int64) @ weights.T + 2 ** 21) >> 22, 0, 255)
    return np.clip((weights @ horizontal + 2 ** 21) >> 22, 0, 255)


def _paddle(theta, p):
    """Image and mask (8-bit / 255) of a paddle along theta, as draw_line_n_mask draws them: arrays
    (2n + 1)^2 with the paddle's start cell at the centre."""
    n = p.paddle_length + math.ceil(p.paddle_thickness) + p.paddle_margin
    aa = p.antialias_scale
    centre = n * aa
    hires = np.zeros((2 * centre + 1,) * 2, dtype=np.int64)
    for y, x in _bresenham(centre, centre, *(centre + _ceil_step(theta, p.paddle_length * aa))):
        hires[y, x] = 255
    line = _resize(hires, 2 * n + 1) / 255.0
    mask = _resize(_dilate(hires, _disc(p.paddle_margin * aa)), 2 * n + 1) / 255.0
    return line, mask


def _place(patch, size, centre):
    """A size^2 image holding `patch` (odd side) centred at cell `centre`, clipped to the image."""
    n = patch.shape[0] // 2
    canvas = np.zeros((size + 2 * n + 1,) * 2)
    canvas[centre[0]:centre[0] + 2 * n + 1, centre[1]:centre[1] + 2 * n + 1] = patch
    return canvas[n:n + size, n:n + size]


# ---------------------------------------------------------------- geometry shared by all images


@dataclass(frozen=True)
class _Geometry:
    """Every paddle a snake can add, precomputed. Masks and images are flat int arrays of 8-bit values
    over a (width x width) grid: the image plus a frame of `pad` cells (always 0) that no paddle near
    the image reaches past. Paddle ids: 0..359 are seeds at integer degrees id - 180 anchored at their
    tail; 360 + k is the extension ending at candidate head k, anchored at q."""

    params: Params
    pad: int
    width: int
    inside: np.ndarray       # (width^2,) bool: image cells
    empty: np.ndarray        # (width^2,) int16: the initial mask, 255 on the `padding` border
    segments: np.ndarray     # (P, 2, 2) (start, end) of each paddle, (y, x) relative to its anchor
    line: tuple              # (cells (P, C) flat offsets, values (P, C) 0..255): the paddle images
    mask: tuple              # (cells, values) likewise: the paddle masks
    advance: np.ndarray      # (P, 2) q - pivot for the snake's orientation after the paddle
    turn: np.ndarray         # (P, K) turn weights of the K candidates for that orientation
    seed_head: np.ndarray    # (360, 2) head - tail of seeds
    seed_pivot: np.ndarray   # (360, 2) pivot - tail of seeds
    seed_kernels: np.ndarray  # (360, J, 2) offsets of the seed dilation kernels (repeats pad them)
    heads: np.ndarray        # (K, 2) candidate head offsets from q
    head_cells: np.ndarray   # (K,) their flat offsets
    near: np.ndarray         # (K, m) flat offsets from q of the disc of radius margin around head k

    def flat(self, cells):
        """Flat indices of (..., 2) image cells."""
        return (cells[..., 0] + self.pad) * self.width + cells[..., 1] + self.pad


def _patches(arrays, width):
    """(cells (P, C), values (P, C) int16) of patches (2n + 1)^2 with values in [0, 1], zero-padded."""
    n = arrays[0].shape[0] // 2
    flat = [((ys - n) * width + xs - n, np.round(a[ys, xs] * 255))
            for a in arrays for ys, xs in [np.nonzero(a)]]
    c = max(len(f[0]) for f in flat)
    cells = np.zeros((len(flat), c), dtype=np.int64)
    values = np.zeros((len(flat), c), dtype=np.int16)
    for i, (f, v) in enumerate(flat):
        cells[i, :len(f)], values[i, :len(v)] = f, v
    return cells, values


def _pad_repeating(arrays):
    """Stack (m_i, 2) arrays into (r, max m_i, 2), padding each with copies of its first row."""
    j = max(len(a) for a in arrays)
    return np.stack([np.concatenate([a, np.repeat(a[:1], j - len(a), axis=0)]) for a in arrays])


@lru_cache(maxsize=4)
def _geometry(params):
    p = params
    if round(p.paddle_thickness * p.antialias_scale) != 1:
        raise ValueError("paddle_thickness * antialias_scale must be 1 (a width-1 line at full resolution)")
    L, m = p.paddle_length, p.paddle_margin
    k = L + m
    # Candidate heads on the circle of radius k around q, one per pixel of arc, truncated as the
    # original does (for q + v >= 0, trunc(q + v) = q + floor(v)); orientations from the integer offsets.
    angles = np.arange(0.0, 360.0, 360.0 / (2 * k * np.pi)) * np.pi / 180
    heads = np.unique(np.floor(k * np.stack([np.sin(angles), np.cos(angles)], 1)).astype(int), axis=0)
    phis = np.arctan2(heads[:, 0], heads[:, 1])
    n = L + math.ceil(p.paddle_thickness) + m
    # q lies at most k + L + 2m outside the image (k from a head inside, plus one step), and the
    # cells read around q reach k + n further (a candidate head and its paddle's patch).
    pad = (k + L + 2 * m) + (k + n) + 1
    width = p.size + 2 * pad
    seed_thetas = [math.radians(d) for d in range(-180, 180)]
    drawn, segments, shifts, kernels = [], [], [], []
    for theta in seed_thetas:
        drawn.append(_paddle(theta, p))
        segments.append([(0.0, 0.0), (L * math.sin(theta), L * math.cos(theta))])
        shifts.append(0)
        # seed_snake's dilation kernel: the mask cells equal to 1 of a paddle drawn at (k + 1, k + 1)
        # in a (2k + 1)^2 canvas, anchored at the canvas centre as cv2.dilate does.
        kernels.append(np.argwhere(_place(drawn[-1][1], 2 * k + 1, (k + 1, k + 1)) == 1.0) - k)
    for (hy, hx), phi in zip(heads, phis):
        back = phi - math.pi if phi >= 0 else phi + math.pi  # flip_by_pi: drawn from the head back
        drawn.append(_paddle(back, p))
        segments.append([(hy + L * math.sin(back), hx + L * math.cos(back)), (float(hy), float(hx))])
        shifts.append(hy * width + hx)
    shifts = np.array(shifts)[:, None]
    line_cells, line_values = _patches([d[0] for d in drawn], width)
    mask_cells, mask_values = _patches([d[1] for d in drawn], width)
    thetas = np.array(seed_thetas + list(phis))
    delta = np.abs(phis[None, :] - thetas[:, None])
    delta = np.minimum(delta, 2 * np.pi - delta)
    turn = np.cos(np.minimum(p.continuity * delta, np.pi / 2)) ** 2
    seed_head = np.array([_ceil_step(t, L) for t in seed_thetas])
    reverse = [t + math.pi if t + math.pi < math.pi else t - math.pi for t in seed_thetas]
    seed_pivot = seed_head + np.array([_ceil_step(t, k) for t in reverse])
    grid = np.zeros((width, width), dtype=bool)
    grid[pad:pad + p.size, pad:pad + p.size] = True
    empty = np.zeros((width, width), dtype=np.int16)
    empty[grid] = 255
    inner = slice(pad + p.padding, pad + p.size - p.padding)
    empty[inner, inner] = 0
    disc = _disc(m)
    near = (heads[:, None, 0] + disc[None, :, 0]) * width + heads[:, None, 1] + disc[None, :, 1]
    return _Geometry(p, pad, width, grid.ravel(), empty.ravel(), np.array(segments),
                     (line_cells + shifts, line_values), (mask_cells + shifts, mask_values),
                     np.array([_ceil_step(t, L + 2 * m) for t in thetas]), turn, seed_head, seed_pivot,
                     _pad_repeating(kernels), heads, heads[:, 0] * width + heads[:, 1], near)


# ---------------------------------------------------------------- snakes, grown B independent tries at once


class _Tries:
    """B independent tries of S snakes each, grown in lockstep; arrays are indexed [try, snake].

    masks (B, width^2) int16: each try's shared mask, which holds every paddle but each snake's last.
    The paddles of try i, snake s are anchors[s, :count[s], ids[i]] and pids[s, :count[s], ids[i]],
    where ids maps the surviving tries to their original rows.
    """

    def __init__(self, masks, tails, degrees, length, g):
        b, n_snakes = degrees.shape
        self.g, self.masks, self.tail, self.ids = g, masks, tails, np.arange(b)
        self.last_anchor, self.last_pid = tails.copy(), degrees + 180
        self.head = tails + g.seed_head[self.last_pid]
        self.pivot = tails + g.seed_pivot[self.last_pid]
        self.anchors = np.zeros((n_snakes, length, b, 2), dtype=np.int64)
        self.pids = np.zeros((n_snakes, length, b), dtype=np.int64)
        self.anchors[:, 0] = np.moveaxis(tails, 1, 0)
        self.pids[:, 0] = self.last_pid.T
        self.count = np.ones(n_snakes, dtype=np.int64)

    def __len__(self):
        return len(self.masks)

    def keep(self, rows):
        """Drop every try not in `rows` (an index or boolean array)."""
        for name in ("masks", "tail", "head", "pivot", "ids", "last_anchor", "last_pid"):
            setattr(self, name, getattr(self, name)[rows])

    def commit(self, snake, rows=slice(None)):
        """Join the last paddle of `snake` to the masks of the tries `rows` (clipped to the image)."""
        g = self.g
        pids = self.last_pid[rows, snake]
        index = g.flat(self.last_anchor[rows, snake])[:, None] + g.mask[0][pids]
        offsets = (np.arange(len(self)) * self.masks.shape[1])[rows][:, None]
        np.maximum.at(self.masks.reshape(-1), offsets + index, g.mask[1][pids] * g.inside[index])

    def extend(self, rng, snake):
        """Add one paddle to `snake` in every try (extend_snake); tries where none fits are dropped."""
        g, p = self.g, self.g.params
        last = self.last_pid[:, snake]
        q = self.pivot[:, snake] + g.advance[last]
        base = g.flat(q)
        flat = self.masks.reshape(-1)
        offset = np.arange(len(self)) * self.masks.shape[1] + base
        near = np.take(flat, offset[:, None, None] + g.near).max(axis=2)
        weight = g.turn[last] * (1.0 - near / 255.0) * np.take(g.inside, base[:, None] + g.head_cells)
        cumulative = np.cumsum(weight, axis=1)
        total = cumulative[:, -1]
        chosen = np.where(total >= 1e-4, -1, -2)  # -1: still drawing; -2: dead end
        for _ in range(1 + p.max_paddle_retrial):
            drawing = chosen == -1
            if not drawing.any():
                break
            u = rng.random(len(self)) * total
            k = np.minimum((cumulative <= u[:, None]).sum(axis=1), len(g.heads) - 1)
            cells, values = g.mask[0][360 + k], g.mask[1][360 + k]
            fits = (np.take(flat, offset[:, None] + cells) + values).max(axis=1) < 459  # mask + m < 1.8
            chosen = np.where(drawing & fits, k, chosen)
        ok = chosen >= 0
        self.commit(snake, ok)
        self.keep(ok)
        k, q = chosen[ok], q[ok]
        self.last_anchor[:, snake], self.last_pid[:, snake] = q, 360 + k
        self.pivot[:, snake], self.head[:, snake] = q, q + g.heads[k]
        self.anchors[snake, self.count[snake], self.ids] = q
        self.pids[snake, self.count[snake], self.ids] = 360 + k
        self.count[snake] += 1

    def paddles(self, row, snake):
        """(anchors (k, 2), pids (k,)) of one snake of one surviving try."""
        n, i = self.count[snake], self.ids[row]
        return self.anchors[snake, :n, i], self.pids[snake, :n, i]


def _seeds(rng, free_cells, g, count):
    """`count` independent seeds (tails (count, 2), degrees (count,)) as seed_snake draws them.

    free_cells(rows, degrees) gives (r, size, size) bool: the free tails for seeds `rows` (indices in
    0..count - 1) at those angles. The tail is uniform among them; head and pivot must lie in the
    image, else theta is redrawn (up to 1 + max_paddle_retrial draws); no free tail at all ends the
    seed, as in the original. Rows whose seed failed hold tail (-1, -1).
    """
    p = g.params
    tails = np.full((count, 2), -1)
    degrees = np.zeros(count, dtype=np.int64)
    todo = np.arange(count)
    for _ in range(1 + p.max_paddle_retrial):
        if not len(todo):
            break
        drawn = rng.integers(-180, 180, len(todo))
        free = free_cells(todo, drawn).reshape(len(todo), -1)
        sizes = free.sum(axis=1)
        picks = (rng.random(len(todo)) * sizes).astype(np.int64)  # the picks-th free cell, row-major
        tail = np.stack(np.divmod(np.argmax(np.cumsum(free, axis=1) > picks[:, None], axis=1), p.size), 1)
        ends = np.concatenate([tail + g.seed_head[drawn + 180], tail + g.seed_pivot[drawn + 180]], 1)
        ok = (sizes > 0) & np.all((ends >= 0) & (ends < p.size), axis=1)
        tails[todo[ok]], degrees[todo[ok]] = tail[ok], drawn[ok]
        todo = todo[(sizes > 0) & ~ok]
    return tails, degrees


def _free_cells(masks, g, frame, drawn):
    """(r, size, size) bool: cells where seed_snake's lined mask (the image part of masks[i] with its
    outer `frame` cells set to 255), dilated by the seed kernel at drawn[i] degrees, is <= 0.3 (x 255)."""
    s, reach = g.params.size, int(np.abs(g.seed_kernels).max())
    lined = np.zeros((len(masks), s + 2 * reach, s + 2 * reach), dtype=np.int16)  # outside: no effect
    inner = lined[:, reach:reach + s, reach:reach + s]
    inner[:] = masks.reshape(-1, g.width, g.width)[:, g.pad:g.pad + s, g.pad:g.pad + s]
    inner[:, :frame], inner[:, s - frame:], inner[:, :, :frame], inner[:, :, s - frame:] = 255, 255, 255, 255
    kernels = g.seed_kernels[drawn + 180][:, :, :, None, None]  # (r, J, 2, 1, 1)
    ys, xs = np.mgrid[reach:reach + s, reach:reach + s]
    dilated = lined[np.arange(len(masks))[:, None, None, None], ys + kernels[:, :, 0], xs + kernels[:, :, 1]]
    return dilated.max(axis=1) <= 76


@lru_cache(maxsize=4)
def _first_free_cells(params):
    """Free tails of the first target snake for every angle (its mask is always the empty one)."""
    g = _geometry(params)
    return _free_cells(np.broadcast_to(g.empty, (360, g.empty.size)), g, 2 * params.seed_distance,
                       np.arange(-180, 180))


def _target_pairs(rng, g, count):
    """`count` independent tries of the two target snakes, grown alternately; those that completed."""
    p = g.params
    table = _first_free_cells(p)
    first, degrees1 = _seeds(rng, lambda rows, drawn: table[drawn + 180], g, count)
    second = np.full((count, 2), -1)
    degrees2 = np.zeros(count, dtype=np.int64)
    todo = np.flatnonzero(first[:, 0] >= 0)
    for _ in range(1 + p.max_paddle_retrial):  # seed_distance away in a uniform integer-degree direction
        drawn = rng.integers(-180, 180, len(todo))
        direction = np.radians(rng.integers(0, 360, len(todo)))
        tail = np.round(first[todo] + p.seed_distance * np.stack([np.sin(direction), np.cos(direction)], 1))
        tail = tail.astype(np.int64)
        ends = np.concatenate([tail + g.seed_head[drawn + 180], tail + g.seed_pivot[drawn + 180]], 1)
        ok = np.all((ends >= 0) & (ends < p.size), axis=1)
        second[todo[ok]], degrees2[todo[ok]] = tail[ok], drawn[ok]
        todo = todo[~ok]
    ok = (first[:, 0] >= 0) & (second[:, 0] >= 0)
    tries = _Tries(np.tile(g.empty, (int(ok.sum()), 1)), np.stack([first[ok], second[ok]], 1),
                   np.stack([degrees1[ok], degrees2[ok]], 1), p.contour_length, g)
    for _ in range(p.contour_length - 1):
        for snake in (0, 1):
            if len(tries):
                tries.extend(rng, snake)
    tries.commit(0)
    tries.commit(1)
    return tries


def _distractors(rng, masks, g):
    """Distractor snakes for c images at once, joined to their masks (c, width^2) in place.

    Each snake is the first to complete of 1 + max_distractor_retrial independent tries from the
    image's mask (the original's retry loop), or absent. Returns per image a list of (anchors, pids).
    """
    p = g.params
    retries = 1 + p.max_distractor_retrial
    image_of = np.repeat(np.arange(len(masks)), retries)
    found = [[] for _ in masks]
    for _ in range(p.num_distractor_snakes):
        tails, degrees = _seeds(rng, lambda rows, drawn: _free_cells(masks[image_of[rows]], g, 1, drawn), g,
                                len(image_of))
        rows = np.flatnonzero(tails[:, 0] >= 0)
        tries = _Tries(masks[image_of[rows]], tails[rows][:, None], degrees[rows][:, None],
                       p.distractor_length, g)
        for _ in range(p.distractor_length - 1):
            if len(tries):
                tries.extend(rng, 0)
        images = image_of[rows[tries.ids]]
        first = np.unique(images, return_index=True)[1]  # tries stay in order: the first per image
        tries.keep(first)
        tries.commit(0)
        masks[images[first]] = tries.masks
        for i, image in enumerate(images[first]):
            found[image].append(tries.paddles(i, 0))
    return found


# ---------------------------------------------------------------- rendering


def _render(drawn, markers, g):
    """Images (c, size, size): paddle images (x contrast) and marker discs by maximum, each image
    rescaled to 8 bits as scipy.misc.imsave does, / 255.

    drawn: per image a list of (anchors (k, 2), pids (k,), contrast); markers (c, 2, 2) cells.
    """
    p = g.params
    s, aa, c = p.size, p.antialias_scale, len(drawn)
    index, values = [], []
    for i, snakes in enumerate(drawn):
        for anchors, pids, contrast in snakes:
            index.append((i * g.width ** 2 + g.flat(anchors))[:, None] + g.line[0][pids])
            values.append(contrast * g.line[1][pids] / 255.0)
    images = np.zeros(c * g.width ** 2)
    np.maximum.at(images, np.concatenate([i.ravel() for i in index]),
                  np.concatenate([v.ravel() for v in values]))
    images = images.reshape(c, g.width, g.width)[:, g.pad:g.pad + s, g.pad:g.pad + s]
    yy, xx = np.mgrid[0:s * aa, 0:s * aa]
    centres = markers.reshape(-1, 2)[:, :, None, None] * aa
    discs = 255 * ((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2 <= (p.marker_radius * aa) ** 2)
    circles = _resize(discs, s).reshape(c, 2, s, s).max(axis=1) / 255.0  # draw_circle, resized
    images = np.maximum(images, circles)
    low, high = images.min(axis=(1, 2), keepdims=True), images.max(axis=(1, 2), keepdims=True)
    return np.floor(np.clip((images - low) * (255.0 / (high - low)), 0, 255) + 0.5) / 255.0  # bytescale


# ---------------------------------------------------------------- task


def load(n_train=160_000, n_val=20_000, n_test=20_000, seed=0):
    """Pathfinder-32 as a Dataset: x (n, 1024, 1) float64 in [0, 1] (row-major pixels), y (n,) in {0, 1}.

    n_train + n_val + n_test images from `generate(..., seed)`, split in order (each split balanced to
    within one image) and cached on disk as 8-bit images. The default 200,000 images take a while to
    generate once (validation/bench_datasets.py measures the rate).
    """
    sizes = [positive_int("n_train", n_train), positive_int("n_val", n_val, minimum=0),
             positive_int("n_test", n_test, minimum=0)]
    seed = positive_int("seed", seed, minimum=0)

    def build():
        images, labels = generate(sum(sizes), seed)
        pixels = np.round(images * 255).astype(np.uint8).reshape(len(images), -1, 1)
        bounds = np.cumsum(sizes)[:-1]
        return to_arrays({name: Split(x, y, fixed_length(x)) for name, x, y in
                          zip(("train", "val", "test"), np.split(pixels, bounds), np.split(labels, bounds))})

    splits = from_arrays(cached("pathfinder32", VERSION, dict(sizes=sizes, seed=seed), build))
    splits = {name: Split(s.x / 255.0, s.y, s.lengths) for name, s in splits.items()}
    return Dataset(name="pathfinder", source=f"generated by Pathfinder-32 rules (drewlinsley/pathfinder, "
                   f"LRA parameters): seed {seed}, {sizes[0]}/{sizes[1]}/{sizes[2]} in generation order",
                   **splits, n_classes=2, d_input=1)
