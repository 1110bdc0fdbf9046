"""Input validation shared by every module: one message format, always naming the argument.

Every public function validates its inputs with these helpers, so that bad input raises a
`ValueError` that says which argument is wrong and what range is allowed, never a crash deep in
numpy or a silent NaN.
"""

import numpy as np


def as_array(name, x, *, ndim=None, min_ndim=None, dtype=np.float64, finite=True):
    """`x` as a numpy array of `dtype`, checked for dimensionality and finiteness.

    ndim: exact number of dimensions required; min_ndim: at least this many.
    """
    try:
        a = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be array-like of {np.dtype(dtype).name}: {e}") from None
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have ndim == {ndim}, got shape {a.shape}")
    if min_ndim is not None and a.ndim < min_ndim:
        raise ValueError(f"{name} must have ndim >= {min_ndim}, got shape {a.shape}")
    if finite and a.size and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return a


def in_range(name, value, lo=None, hi=None, *, lo_open=False, hi_open=False):
    """Check lo <= value <= hi elementwise (strict where *_open); return value as float array.

    The message states the allowed interval in the usual bracket notation, e.g. tau in [0, 1).
    """
    v = as_array(name, value)
    ok = np.ones(v.shape, dtype=bool)
    if lo is not None:
        ok &= (v > lo) if lo_open else (v >= lo)
    if hi is not None:
        ok &= (v < hi) if hi_open else (v <= hi)
    if not np.all(ok):
        interval = ("(" if lo_open else "[") + ("-inf" if lo is None else f"{lo:g}") + ", " \
            + ("inf" if hi is None else f"{hi:g}") + (")" if hi_open else "]")
        bad = v[~ok].ravel()[0] if v.ndim else v
        raise ValueError(f"{name} must lie in {interval}, got {bad!r}")
    return v


def positive_int(name, n, minimum=1):
    """Check that n is an integer >= minimum; return it as int."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    if n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n}")
    return int(n)


def choice(name, value, allowed):
    """Check that value is one of `allowed` (a tuple of strings); return it."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value
