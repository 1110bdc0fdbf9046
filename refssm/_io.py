"""Atomic file writes: a temporary file in the same directory, then a rename, so a crash leaves either
the old file or the new one, never a half-written file in its place."""

import os
import secrets
from pathlib import Path

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
