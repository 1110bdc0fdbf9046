"""On-disk cache for generated datasets: one .npz per (generator, version, parameters).

The directory is `$REFSSM_CACHE/datasets`, with REFSSM_CACHE defaulting to ~/.cache/refssm. The file
name carries the generator's VERSION and a hash of its parameters, so a change to either (a bumped
VERSION when a generator's output for a seed changes) selects a new file instead of a stale one.
Files are written to a temporary name in the same directory and renamed into place, so a crash never
leaves a half-written file under the final name. Arrays only, read with allow_pickle=False.
"""

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from refssm._io import write_npz_atomic


def cache_dir():
    """The dataset cache directory: $REFSSM_CACHE/datasets (default ~/.cache/refssm/datasets)."""
    root = os.environ.get("REFSSM_CACHE") or Path.home() / ".cache" / "refssm"
    return Path(root) / "datasets"


def cache_path(kind, version, params):
    """Where the arrays of generator `kind` at `version` with JSON-able `params` are cached."""
    key = json.dumps({"kind": kind, "version": version, "params": params}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / f"{kind}-v{version}-{digest}.npz"


def cached(kind, version, params, build):
    """The dict of arrays `build()` returns, read from the cache if present, else built and stored."""
    path = cache_path(kind, version, params)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"cache file {path} is unreadable ({e}); delete it to regenerate") from None
    arrays = build()
    write_npz_atomic(path, arrays)
    return arrays


