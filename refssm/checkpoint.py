"""Training checkpoints: one HDF5 file (h5py), written atomically, verified on load. Never pickle.

    save(path, params=..., opt_state=..., step=..., config=..., rng_state=..., extra=None)
    ckpt = load(path)        # -> Checkpoint (frozen dataclass)

On-disk layout (inspect with ``h5dump -A file.h5`` for the header, ``h5dump file.h5`` for all)::

    /                      root attributes:
                             format          "refssm-checkpoint"
                             format_version  int, FORMAT_VERSION of the writer
                             refssm_version  refssm.__version__ of the writer
                             step            int64
                             sha256          hex SHA-256 over every dataset below and `step`
    /config                JSON text (0-d fixed-length byte string), kind="json"
    /params/<name>         one dataset per parameter, kind="array"
    /opt_state/...         the nested dict: a dict is a group, a leaf is a dataset
    /rng_state/...         the bit generator's state dict, stored like opt_state
    /extra/<name>          like /params; the group is absent when extra was None

Every dataset carries an attribute ``kind`` saying how to restore it:
  "array"   a numpy array, dtype (byte order included) and shape as saved;
  "scalar"  a numpy scalar (np.float32(1.5), np.int64(3), ...), a 0-d dataset of its dtype;
  "json"    a Python None/bool/int/float/str as JSON text, e.g. ``7``, ``0.001``, ``"PCG64"``.
            JSON keeps ints of any size (PCG64's 128-bit state) and floats (repr) exactly.
Dict keys become HDF5 link names percent-escaped (urllib.parse.quote, safe=""): letters, digits
and ``_.-~`` stay as they are, so "layers.0.ssm.log_dt" is stored under that name; "/" becomes
"%2F", "%" becomes "%25", and a leading "." becomes "%2E". Groups track creation order, so dicts
come back in the order they were saved.

The checksum hashes, for each dataset in sorted path order, its path, kind, dtype string, shape
and raw bytes (each length-prefixed), then the step; it is computed from the caller's arrays and
checked against what is read back, so silent corruption and any lossy round trip both fail loudly.

Writing goes to ``<path>.tmp-<pid>`` in the same directory, is fsync'ed, then os.replace'd onto
`path` (and the directory fsync'ed where the OS allows): a crash leaves either the old file or
the new one, never half of one. On any error the temp file is removed.
"""

import dataclasses
import json
import os
import urllib.parse

import h5py
import numpy as np

import refssm
from refssm._checks import positive_int
from refssm._io import digest, hdf5_atomic

FORMAT = "refssm-checkpoint"
FORMAT_VERSION = 1

__all__ = ["FORMAT_VERSION", "Checkpoint", "CheckpointError", "save", "load"]


class CheckpointError(ValueError):
    """A file that is not a readable refssm checkpoint: corrupt, truncated, foreign, or too new."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Everything `save` stored, as restored by `load`."""
    params: dict
    opt_state: dict
    step: int
    config: dict
    rng_state: dict
    extra: dict | None
    format_version: int
    refssm_version: str


# ---------------------------------------------------------------- names and leaves

def _escape(where, key):
    """HDF5 link name for dict key `key` (reversible, see module docstring)."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}: keys must be non-empty strings, got {key!r}")
    try:
        name = urllib.parse.quote(key, safe="", errors="strict")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: key {key!r} is not encodable as UTF-8") from None
    return "%2E" + name[1:] if name.startswith(".") else name


def _unescape(name):
    return urllib.parse.unquote(name, errors="strict")


def _check_numeric(where, dtype):
    """Only plain numeric dtypes are stored (no object, string, structured, long double)."""
    if dtype.kind not in "biufc" or (dtype.kind == "f" and dtype.itemsize > 8) \
            or (dtype.kind == "c" and dtype.itemsize > 16):
        raise ValueError(f"{where} must have a bool, integer, float or complex dtype "
                         f"(at most 64-bit floats), got {dtype}")


def _leaf(where, value):
    """(kind, numpy value to write) for one leaf of a tree."""
    if isinstance(value, np.ndarray):
        _check_numeric(where, value.dtype)
        return "array", value
    if isinstance(value, np.generic):
        _check_numeric(where, value.dtype)
        return "scalar", np.asarray(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return "json", np.bytes_(json.dumps(value).encode("ascii"))
    raise ValueError(f"{where} must be a dict, numpy array, numpy scalar, or None/bool/int/"
                     f"float/str, got {type(value).__name__}")


def _write_tree(group, tree, where, leaves):
    """Write dict `tree` under `group`; append (path, kind, array) of each dataset to `leaves`."""
    if not isinstance(tree, dict):
        raise ValueError(f"{where} must be a dict, got {type(tree).__name__}")
    for key, value in tree.items():
        name = _escape(where, key)
        sub = f"{where}[{key!r}]"
        if isinstance(value, dict):
            _write_tree(group.create_group(name, track_order=True), value, sub, leaves)
        else:
            kind, data = _leaf(sub, value)
            ds = group.create_dataset(name, data=data)
            ds.attrs["kind"] = np.bytes_(kind.encode())
            leaves.append((ds.name, kind, data))


def _read_tree(group, leaves):
    """Inverse of `_write_tree`."""
    out = {}
    for name, obj in group.items():
        key = _unescape(name)
        if isinstance(obj, h5py.Group):
            out[key] = _read_tree(obj, leaves)
            continue
        kind = obj.attrs.get("kind")
        kind = kind.decode() if isinstance(kind, bytes) else kind
        data = obj[...]
        if kind == "array":
            out[key] = data
        elif kind == "scalar":
            out[key] = data[()]
        elif kind == "json":
            out[key] = json.loads(data[()].decode("ascii"))
        else:
            raise CheckpointError(f"dataset {obj.name} has unknown kind {kind!r}")
        leaves.append((obj.name, kind, data))
    return out


def _flat_arrays(where, d):
    """Check that `d` is a flat dict of name -> numeric ndarray (params, extra)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a dict of name -> numpy array, got {type(d).__name__}")
    for key, value in d.items():
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{where}[{key!r}] must be a numpy array, got {type(value).__name__}")


# ---------------------------------------------------------------- save / load

def save(path, *, params, opt_state, step, config, rng_state, extra=None):
    """Write a checkpoint to `path` atomically (see the module docstring for the layout).

    params: name -> numpy array (bool/int/float/complex); names may hold any characters.
    opt_state: nested dict of numpy arrays, numpy scalars and None/bool/int/float/str.
    step: int >= 0.  config: a dict that survives a JSON round trip unchanged.
    rng_state: ``Generator.bit_generator.state``.  extra: None or a dict like params.
    Raises ValueError (naming the argument) for input it cannot store exactly; the file at
    `path` is then untouched.
    """
    path = os.fspath(path)
    step = positive_int("step", step, minimum=0)
    if step >= 2**63:
        raise ValueError(f"step must be < 2**63, got {step}")
    _flat_arrays("params", params)
    if extra is not None:
        _flat_arrays("extra", extra)
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    try:
        config_json = json.dumps(config, allow_nan=False)
        same = json.loads(config_json) == config
    except (TypeError, ValueError) as e:
        raise ValueError(f"config must be JSON-serialisable: {e}") from None
    if not same:
        raise ValueError("config must survive a JSON round trip unchanged "
                         "(tuples become lists, non-string keys become strings)")
    if not isinstance(rng_state, dict):
        raise ValueError(f"rng_state must be a dict (Generator.bit_generator.state), "
                         f"got {type(rng_state).__name__}")

    leaves = []
    with hdf5_atomic(path) as f:
        ds = f.create_dataset("config", data=np.bytes_(config_json.encode("ascii")))
        ds.attrs["kind"] = np.bytes_(b"json")
        leaves.append((ds.name, "json", np.bytes_(config_json.encode("ascii"))))
        for section, tree in (("params", params), ("opt_state", opt_state),
                              ("rng_state", rng_state), ("extra", extra)):
            if tree is not None:
                _write_tree(f.create_group(section, track_order=True), tree, section, leaves)
        f.attrs["step"] = np.int64(step)
        f.attrs["sha256"] = np.bytes_(digest(leaves, step).encode())
        f.attrs["refssm_version"] = np.bytes_(refssm.__version__.encode())
        f.attrs["format_version"] = np.int64(FORMAT_VERSION)
        f.attrs["format"] = np.bytes_(FORMAT.encode())


def _text(attrs, name):
    v = attrs.get(name)
    return v.decode() if isinstance(v, bytes) else v


def load(path):
    """Read and verify the checkpoint at `path`; return a `Checkpoint`.

    Raises FileNotFoundError if `path` does not exist, and CheckpointError (naming the path) if it
    is not HDF5 or is truncated, is not a refssm checkpoint, has a newer format_version than this
    refssm reads, or fails its checksum.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, "checkpoint file not found", path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CheckpointError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {e}") from None
    try:
        with f:
            if _text(f.attrs, "format") != FORMAT:
                raise CheckpointError(f"{path}: not a refssm checkpoint "
                                      f"(root attribute format={_text(f.attrs, 'format')!r})")
            version = f.attrs.get("format_version")
            if not isinstance(version, (int, np.integer)) or version < 1:
                raise CheckpointError(f"{path}: invalid format_version {version!r}")
            version = int(version)
            writer = _text(f.attrs, "refssm_version")
            if version > FORMAT_VERSION:
                raise CheckpointError(
                    f"{path}: checkpoint format_version {version} (written by refssm {writer}) is "
                    f"newer than this refssm {refssm.__version__} reads (format_version "
                    f"{FORMAT_VERSION}); upgrade refssm to load it")
            step = int(f.attrs["step"])
            stored = _text(f.attrs, "sha256")
            leaves = []
            trees = {name: _read_tree(f[name], leaves) if name in f else None
                     for name in ("params", "opt_state", "rng_state", "extra")}
            ds = f["config"]
            config = json.loads(ds[()].decode("ascii"))
            leaves.append((ds.name, _text(ds.attrs, "kind"), ds[...]))
            actual = digest(leaves, step)
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt refssm checkpoint: {type(e).__name__}: {e}") from None
    if stored != actual:
        raise CheckpointError(f"{path}: checksum mismatch (stored sha256 {stored}, computed "
                              f"{actual}); the file is corrupt")
    for name in ("params", "opt_state", "rng_state"):
        if trees[name] is None:
            raise CheckpointError(f"{path}: corrupt refssm checkpoint: group /{name} missing")
    for name in ("params", "extra"):
        if trees[name] is not None and any(not isinstance(v, np.ndarray) for v in trees[name].values()):
            raise CheckpointError(f"{path}: corrupt refssm checkpoint: /{name} holds non-arrays")
    return Checkpoint(params=trees["params"], opt_state=trees["opt_state"], step=step,
                      config=config, rng_state=trees["rng_state"], extra=trees["extra"],
                      format_version=version, refssm_version=writer)
