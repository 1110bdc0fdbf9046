"""Atomic file writes: a temporary file in the same directory, then a rename, so a crash leaves either
the old file or the new one, never a half-written file in its place; and the content digest that
refssm's HDF5 files (checkpoints, fixtures) carry."""

import contextlib
import hashlib
import os
import secrets
from pathlib import Path

import h5py
import numpy as np


def write_npz_atomic(path, arrays):
    """Save a dict of arrays with np.savez (no pickle) at `path`, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:  # a new file, with the permissions the umask gives
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_path(path, flags):
    """fsync a file (flags os.O_RDWR) or a directory (os.O_RDONLY) by path."""
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def hdf5_atomic(path):
    """Yield an h5py.File open for writing on a temporary file beside `path`; when the block ends without
    error the file is closed, fsynced and renamed over `path` (then the directory is fsynced, where the OS
    allows); on any error the temporary file is removed and `path` is untouched."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with h5py.File(tmp, "w", track_order=True) as f:
            yield f
        fsync_path(tmp, os.O_RDWR)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable; not possible on every OS
        fsync_path(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        pass


def digest(leaves, step):
    """SHA-256 over (path, kind, dtype, shape, bytes) of every dataset in path order, then step: a change of
    any value, dtype, shape or name is detected."""
    h = hashlib.sha256()
    for path, kind, a in sorted(leaves, key=lambda t: t[0]):
        a = np.ascontiguousarray(a)
        for part in (path.encode(), kind.encode(), a.dtype.str.encode(),
                     repr(a.shape).encode(), a.tobytes()):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    h.update(b"step=%d" % step)
    return h.hexdigest()
