"""Tests for refssm.checkpoint: exact round trip, RNG continuation, corrupt/foreign/new files, atomicity."""

import os
import shutil

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import refssm
from refssm import checkpoint as ck
from refssm.checkpoint import CheckpointError, load, save


def assert_identical(a, b, where="root"):
    """Same types, structure, key order, dtypes, shapes and bytes (NaN and -0.0 included)."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.dtype.str == b.dtype.str, (where, a.dtype, b.dtype)
        assert a.shape == b.shape, where
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), where
    elif isinstance(a, float):
        assert a.hex() == b.hex(), where
    else:
        assert a == b, where


def sample(rng_seed=0):
    g = np.random.default_rng(rng_seed)
    params = {"layers.0.ssm.log_dt": g.standard_normal(4),
              "layers.0.ssm.A": g.standard_normal((4, 2)) + 1j * g.standard_normal((4, 2)),
              "mask": g.random(5) < 0.5, "counts": np.arange(6, dtype=np.int32).reshape(2, 3)}
    opt = {"step": 7, "lr": 1e-3, "m": {k: np.zeros_like(v) for k, v in params.items()},
           "v": {k: np.ones_like(v) for k, v in params.items()}}
    return dict(params=params, opt_state=opt, step=7, config={"model": "s4d", "H": 4, "lrs": [1, 2.5]},
                rng_state=g.bit_generator.state, extra={"bn.running_mean": np.full(3, 0.5)})


def test_round_trip_fixed_sample(tmp_path):
    kw = sample()
    save(tmp_path / "c.h5", **kw)
    c = load(tmp_path / "c.h5")
    for field in ("params", "opt_state", "step", "config", "rng_state", "extra"):
        assert_identical(kw[field], getattr(c, field), field)
    assert c.format_version == ck.FORMAT_VERSION == 1
    assert c.refssm_version == refssm.__version__
    with h5py.File(tmp_path / "c.h5", "r") as f:  # the documented layout
        assert f.attrs["format"] == b"refssm-checkpoint"
        assert f["params/layers.0.ssm.log_dt"].attrs["kind"] == b"array"
        assert f["opt_state/step"][()] == b"7"
        assert len(f.attrs["sha256"]) == 64


def test_awkward_names_round_trip(tmp_path):
    names = [".", "..", ".hidden", "a/b", "/", "%2F", "%", "%2E", "ü ñ", "x\x00y", "layers.0.ssm.log_dt"]
    params = {n: np.full(2, i, dtype=np.float64) for i, n in enumerate(names)}
    kw = sample()
    kw.update(params=params, opt_state={"m": dict(params), ".": {"/": 1}})
    save(tmp_path / "c.h5", **kw)
    c = load(tmp_path / "c.h5")
    assert_identical(params, c.params)
    assert_identical(kw["opt_state"], c.opt_state)


def test_extra_none_round_trips_as_none(tmp_path):
    kw = sample()
    kw["extra"] = None
    save(tmp_path / "c.h5", **kw)
    assert load(tmp_path / "c.h5").extra is None


DTYPES = ["<f8", ">f8", "<f4", "<f2", "<c16", ">c8", "|b1", "|i1", "<i8", ">u2", "<u8"]
names = st.text(min_size=1, max_size=12)  # any characters: dots, slashes, %, unicode, "."
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**130, 2**130),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.sampled_from(DTYPES[:5] + ["|i1", "<u8"]).map(lambda dt: np.zeros((), dt)[()]))
trees = st.recursive(st.one_of(arrays, scalars), lambda c: st.dictionaries(names, c, max_size=3),
                     max_leaves=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(names, arrays, max_size=4), opt=st.dictionaries(names, trees, max_size=4),
       extra=st.one_of(st.none(), st.dictionaries(names, arrays, max_size=2)),
       step=st.integers(0, 2**63 - 1))
def test_round_trip_is_bit_exact(tmp_path, params, opt, extra, step):
    path = tmp_path / "c.h5"  # overwritten by each example, which also exercises replace-onto-existing
    config = {"a": [1, 2.5, None, "x"], "nested": {"b": True}}
    rng_state = np.random.default_rng(step).bit_generator.state
    save(path, params=params, opt_state=opt, step=step, config=config, rng_state=rng_state, extra=extra)
    c = load(path)
    assert_identical(params, c.params, "params")
    assert_identical(opt, c.opt_state, "opt_state")
    assert_identical(extra, c.extra, "extra")
    assert_identical(rng_state, c.rng_state, "rng_state")
    assert c.step == step and type(c.step) is int
    assert c.config == config


@pytest.mark.parametrize("bitgen", ["PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"])
def test_rng_stream_continues_after_round_trip(tmp_path, bitgen):
    g = np.random.Generator(getattr(np.random, bitgen)(1234))
    g.random(3)
    g.integers(0, 10, dtype=np.uint32)  # leaves a buffered 32-bit half (has_uint32) in the state
    kw = sample()
    kw["rng_state"] = g.bit_generator.state
    save(tmp_path / "c.h5", **kw)
    expected = (g.random(5), g.integers(0, 2**32, size=5, dtype=np.uint32), g.standard_normal(5))
    h = np.random.Generator(getattr(np.random, bitgen)(0))  # a different seed, then restored
    h.bit_generator.state = load(tmp_path / "c.h5").rng_state
    got = (h.random(5), h.integers(0, 2**32, size=5, dtype=np.uint32), h.standard_normal(5))
    for e, r in zip(expected, got):
        assert e.tobytes() == r.tobytes()


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        load(tmp_path / "nope.h5")


def test_truncated_file_raises(tmp_path):
    save(tmp_path / "c.h5", **sample())
    data = (tmp_path / "c.h5").read_bytes()
    (tmp_path / "half.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="half.h5"):
        load(tmp_path / "half.h5")


def test_random_bytes_raise(tmp_path):
    (tmp_path / "r.h5").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="r.h5.*not a readable HDF5"):
        load(tmp_path / "r.h5")


def test_foreign_hdf5_raises(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["params/w"] = np.ones(3)
    with pytest.raises(CheckpointError, match="other.h5.*not a refssm checkpoint"):
        load(tmp_path / "other.h5")


def test_newer_format_version_raises_naming_it(tmp_path):
    save(tmp_path / "c.h5", **sample())
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        f.attrs["format_version"] = np.int64(ck.FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match=f"format_version {ck.FORMAT_VERSION + 1}.*upgrade refssm"):
        load(tmp_path / "c.h5")


def test_flipped_byte_in_parameter_fails_checksum(tmp_path):
    kw = sample()
    save(tmp_path / "c.h5", **kw)
    with h5py.File(tmp_path / "c.h5", "r") as f:
        offset = f["params/layers.0.ssm.log_dt"].id.get_offset()  # contiguous raw data
    assert offset is not None
    with open(tmp_path / "c.h5", "r+b") as fh:
        fh.seek(offset + 3)
        b = fh.read(1)
        fh.seek(offset + 3)
        fh.write(bytes([b[0] ^ 0xFF]))
    with h5py.File(tmp_path / "c.h5", "r") as f:  # still valid HDF5, only the value changed
        assert not np.array_equal(f["params/layers.0.ssm.log_dt"][...], kw["params"]["layers.0.ssm.log_dt"])
    with pytest.raises(CheckpointError, match="c.h5.*checksum mismatch"):
        load(tmp_path / "c.h5")


@pytest.mark.parametrize("tamper", ["delete_dataset", "change_step", "change_kind"])
def test_structural_tampering_fails_checksum(tmp_path, tamper):
    save(tmp_path / "c.h5", **sample())
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        if tamper == "delete_dataset":
            del f["extra/bn.running_mean"]
        elif tamper == "change_step":
            f.attrs["step"] = np.int64(8)
        else:
            f["params/counts"].attrs["kind"] = np.bytes_(b"scalar")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load(tmp_path / "c.h5")


def _only(tmp_path, name):
    return sorted(os.listdir(tmp_path)) == [name]


def test_failure_mid_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "c.h5"
    old = sample(0)
    save(path, **old)
    before = path.read_bytes()
    real = ck._write_tree
    seen = []

    def failing(group, tree, where, leaves):
        real(group, tree, where, leaves)
        if where == "opt_state":  # params and opt_state already written into the temp file
            seen.extend(os.listdir(tmp_path))
            raise RuntimeError("disk full")

    monkeypatch.setattr(ck, "_write_tree", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        save(path, **sample(1))
    assert f"c.h5.tmp-{os.getpid()}" in seen  # the failure really happened with the temp file open
    assert _only(tmp_path, "c.h5") and path.read_bytes() == before
    assert_identical(old["params"], load(path).params)


def test_failure_at_rename_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "c.h5"
    save(path, **sample(0))
    before = path.read_bytes()

    def failing_replace(src, dst):
        assert os.path.getsize(src) > 0
        raise OSError("rename failed")

    monkeypatch.setattr(ck.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        save(path, **sample(1))
    assert _only(tmp_path, "c.h5") and path.read_bytes() == before


def test_temp_file_is_fsynced_before_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(ck.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(ck.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    save(tmp_path / "c.h5", **sample())
    assert events[:2] == ["fsync", "replace"]


@pytest.mark.parametrize("change, match", [
    (lambda kw: kw["params"].update(bad=np.array(["a"])), r"params\['bad'\].*dtype"),
    (lambda kw: kw["params"].update(bad=np.array([1], dtype=object)), r"params\['bad'\].*dtype"),
    (lambda kw: kw["params"].update(bad=[1.0, 2.0]), r"params\['bad'\] must be a numpy array"),
    (lambda kw: kw["params"].update({"": np.ones(1)}), "non-empty strings"),
    (lambda kw: kw["opt_state"].update({3: np.ones(1)}), "keys must be non-empty strings"),
    (lambda kw: kw["opt_state"].update(t=(1, 2)), r"opt_state\['t'\].*tuple"),
    (lambda kw: kw["config"].update(t=(1, 2)), "JSON round trip"),
    (lambda kw: kw["config"].update(f=np.ones(2)), "JSON-serialisable"),
    (lambda kw: kw.update(step=-1), "step"),
])
def test_bad_input_raises_value_error_and_writes_nothing(tmp_path, change, match):
    kw = sample()
    change(kw)
    with pytest.raises(ValueError, match=match):
        save(tmp_path / "c.h5", **kw)
    assert os.listdir(tmp_path) == []


def test_copy_of_checkpoint_loads(tmp_path):
    """A checkpoint is self-contained: a byte copy elsewhere loads identically."""
    kw = sample()
    save(tmp_path / "c.h5", **kw)
    os.mkdir(tmp_path / "sub")
    shutil.copy(tmp_path / "c.h5", tmp_path / "sub" / "d.h5")
    assert_identical(kw["params"], load(tmp_path / "sub" / "d.h5").params)


@pytest.mark.parametrize("new_dtype", ["<i8", "<u8", ">f8"])
def test_same_bytes_other_dtype_fails_checksum(tmp_path, new_dtype):
    """A dataset rewritten with its bytes unchanged but read as another dtype (float64 -> int64,
    uint64, big-endian float64) must not load: the checksum covers the dtype, not only the bytes."""
    kw = sample()
    save(tmp_path / "c.h5", **kw)
    name = "params/layers.0.ssm.log_dt"
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        raw, attrs = f[name][...].tobytes(), dict(f[name].attrs)
        del f[name]
        ds = f.create_dataset(name, data=np.frombuffer(raw, dtype=new_dtype))
        for k, v in attrs.items():
            ds.attrs[k] = v
        assert ds[...].tobytes() == raw or new_dtype.startswith(">")          # same bytes in memory order
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load(tmp_path / "c.h5")
