"""Input validation shared by every module: one message format, always naming the argument.

Every public function validates its inputs with these helpers, so that bad input raises a
`ValueError` that says which argument is wrong and what range is allowed, never a crash deep in
numpy or a silent NaN.

Validation happens once, at the public boundary a user called. A caller that has validated its
inputs (models.forward, the training loop) runs its inner calls inside `trusted()`: there the helpers
pass values through unchanged (no copy, no dtype conversion: float32 stays float32), so the hot path
does not re-check what was checked.
"""

import contextlib
import contextvars

import numpy as np

from refssm.backend import array_module, is_device_array

_TRUSTED = contextvars.ContextVar("refssm_trusted", default=False)


@contextlib.contextmanager
def trusted():
    """Within this block the checks below are pass-throughs (inputs were validated by the caller)."""
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def as_array(name, x, *, ndim=None, min_ndim=None, dtype=np.float64, finite=True):
    """`x` as a numpy array of `dtype`, checked for dimensionality and finiteness.

    ndim: exact number of dimensions required; min_ndim: at least this many.
    Inside `trusted()`: np.asarray(x), whatever its dtype. A device (CuPy) array stays on its device: inside
    `trusted()` it is returned as it is; outside, it is checked there and returned as a device array of `dtype`.
    """
    device = is_device_array(x)
    if _TRUSTED.get():
        return x if device else np.asarray(x)
    try:
        a = x.astype(dtype, copy=False) if device else np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be array-like of {np.dtype(dtype).name}: {e}") from None
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have ndim == {ndim}, got shape {a.shape}")
    if min_ndim is not None and a.ndim < min_ndim:
        raise ValueError(f"{name} must have ndim >= {min_ndim}, got shape {a.shape}")
    if finite and a.size and not bool(array_module(a).isfinite(a).all()):       # on the device: one verdict
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return a


def in_range(name, value, lo=None, hi=None, *, lo_open=False, hi_open=False):
    """Check lo <= value <= hi elementwise (strict where *_open); return value as float array.

    The message states the allowed interval in the usual bracket notation, e.g. tau in [0, 1).
    """
    if _TRUSTED.get():
        return value if is_device_array(value) else np.asarray(value)
    v = as_array(name, value)
    xp = array_module(v)
    ok = xp.ones(v.shape, dtype=bool)
    if lo is not None:
        ok &= (v > lo) if lo_open else (v >= lo)
    if hi is not None:
        ok &= (v < hi) if hi_open else (v <= hi)
    if not bool(ok.all()):
        interval = ("(" if lo_open or lo is None else "[") + ("-inf" if lo is None else f"{lo:g}") + ", " \
            + ("inf" if hi is None else f"{hi:g}") + (")" if hi_open or hi is None else "]")
        bad = (v[~ok].ravel()[0] if v.ndim else v).item()
        raise ValueError(f"{name} must lie in {interval}, got {bad!r}")
    return v


def positive_int(name, n, minimum=1):
    """Check that n is an integer >= minimum; return it as int."""
    if _TRUSTED.get():
        return int(n)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    if n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n}")
    return int(n)


def choice(name, value, allowed):
    """Check that value is one of `allowed` (a tuple of strings); return it."""
    if _TRUSTED.get():
        return value
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def time_series(name, x, dtype=np.float64):
    """A finite signal (..., L) with L >= 1 along its last (time) axis."""
    x = as_array(name, x, min_ndim=1, dtype=dtype)
    if x.shape[-1] < 1:
        raise ValueError(f"{name} must have length L >= 1 along its last (time) axis, got shape {x.shape}")
    return x


def per_sequence(name, value, x, lo=None, hi=None, *, lo_open=False, hi_open=False):
    """A parameter checked for range and broadcast to x.shape[:-1]: one value per sequence (row) of x
    (..., L), e.g. a per-channel tau (H,) against x (B, H, L)."""
    v = in_range(name, value, lo, hi, lo_open=lo_open, hi_open=hi_open)
    try:
        return array_module(v).broadcast_to(v, x.shape[:-1])
    except ValueError:
        raise ValueError(f"{name} of shape {v.shape} does not broadcast against x.shape[:-1] = "
                         f"{x.shape[:-1]}") from None
