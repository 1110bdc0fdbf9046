"""Numba fast paths of refssm.neurons: LIF, the refractory neuron and PMBC (forward passes only;
the surrogate forward/backward pairs of refssm.spiking have theirs in refssm.kernels.spiking).

Each function validates its arguments with the oracle module's public checks (same ValueError, same
message), flattens the leading dims of x (..., L) to rows, and runs one compiled loop: rows in
parallel (prange), time inside. The arithmetic is written in the oracle's order and compiled without
fastmath, in the oracle's dtype (refssm.neurons.compute_dtype: float32 stays float32, with every
constant typed to match), so spikes and potentials equal the oracle's bit for bit in both dtypes.
"""

import math

import numpy as np
from numba import njit, prange

from refssm.kernels import rows
from refssm._checks import time_series
from refssm.neurons import compute_dtype, lif_params, refractory_params


def _per_row(*params):
    """Per-channel parameters, already broadcast to x.shape[:-1], as contiguous (R,) vectors."""
    return [np.ascontiguousarray(p).reshape(-1) for p in params]


def _signal(x):
    return time_series("x", x, dtype=compute_dtype(x))


def _constants(dtype):
    """(0, 1) in `dtype`: the loops use these instead of literals, which Numba types as float64."""
    return dtype.type(0), dtype.type(1)


@njit(cache=True)
def _fires(v, v_th, fire_at_equality):
    return v >= v_th if fire_at_equality else v > v_th


# --------------------------------------------------------------------------------------------------
# LIF
# --------------------------------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _lif_rows(x, tau, v_th, v_reset, hard, fire_at_equality, zero, one, s, v):
    R, L = x.shape
    for i in prange(R):
        u = zero
        for t in range(L):
            v_t = tau[i] * u + x[i, t]
            s_t = one if _fires(v_t, v_th[i], fire_at_equality) else zero
            v[i, t], s[i, t] = v_t, s_t
            u = v_t * (one - s_t) + s_t * v_reset[i] if hard else v_t - s_t * v_th[i]


def lif(x, tau, v_th=1.0, reset="hard", v_reset=0.0, fire_at_equality=True):
    """Fast path of refssm.neurons.lif; must match it bit for bit (spikes and potential).

    x: (..., L); tau in [0, 1), v_th > 0, v_reset: scalars or broadcasting against x.shape[:-1].
    Returns (s, v), both (..., L) in x's dtype (float32 or float64).
    """
    x = _signal(x)
    tau, v_th, v_reset = lif_params(x, tau, v_th, reset, v_reset)
    s, v = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
    _lif_rows(*rows(x), *_per_row(tau, v_th, v_reset), reset == "hard", bool(fire_at_equality),
              *_constants(x.dtype), *rows(s, v))
    return s, v


# --------------------------------------------------------------------------------------------------
# Soft-reset refractory neuron and PMBC
# --------------------------------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _refractory_rows(x, tau, v_th, theta_r, beta, fire_at_equality, zero, one, s, m):
    R, L = x.shape
    for i in prange(R):
        v = r = zero
        for t in range(L):
            a = tau[i] * v + x[i, t]                                           # tau v_{t-1} + x_t
            m_t = a - theta_r[i] * r
            s_t = one if _fires(m_t, v_th[i], fire_at_equality) else zero
            m[i, t], s[i, t] = m_t, s_t
            v, r = a - v_th[i] * s_t, beta[i] * r + s_t


def refractory(x, tau, v_th, theta_r, beta, fire_at_equality=True):
    """Fast path of refssm.neurons.refractory; must match it bit for bit (spikes and potential m).

    x: (..., L); tau, beta in [0, 1), v_th > 0, theta_r >= 0, each broadcasting against x.shape[:-1].
    Returns (s, m), both (..., L) in x's dtype.
    """
    x = _signal(x)
    params = refractory_params(x, tau, v_th, theta_r, beta)
    s, m = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
    _refractory_rows(*rows(x), *_per_row(*params), bool(fire_at_equality), *_constants(x.dtype),
                     *rows(s, m))
    return s, m


@njit(parallel=True, cache=True)
def _pmbc_rows(x, tau, v_th, theta_r, beta, fire_at_equality, zero, one, tiny, s, m, iterations):
    """PMBC row by row. A row's decisions depend on that row alone, so the oracle's global iteration
    count is the maximum of the per-row counts. Within an iteration the bounds use the iteration's
    starting states (the oracle's snapshot); the scan starts at the earliest undetermined step from
    the state of the determined prefix, which is the oracle's arithmetic on the same spikes."""
    R, L = x.shape
    for i in prange(R):
        iterations[i] = 0
        state = np.full(L, -1, np.int8)                                        # -1 undetermined
        th = v_th[i]
        first = 0                                                              # earliest undetermined
        v = r = zero                                                           # state after the prefix
        while first < L:
            iterations[i] += 1
            v_lo, r_lo, v_hi, r_hi = v, r, v, r                                # s_lo: fewest spikes
            for t in range(first, L):
                known = state[t]
                a_lo = tau[i] * v_lo + x[i, t]
                m_max = a_lo - theta_r[i] * r_lo
                a_hi = tau[i] * v_hi + x[i, t]
                m_min = a_hi - theta_r[i] * r_hi
                if known < 0:
                    if (_fires(m_min, th, fire_at_equality)
                            and (t == first or m_min - th > tiny * (one + abs(m_min)))):
                        state[t] = 1
                    if (not _fires(m_max, th, fire_at_equality)
                            and (t == first or th - m_max > tiny * (one + abs(m_max)))):
                        state[t] = 0
                s_lo = one if known == 1 else zero
                s_hi = zero if known == 0 else one
                v_lo, r_lo = a_lo - th * s_lo, beta[i] * r_lo + s_lo
                v_hi, r_hi = a_hi - th * s_hi, beta[i] * r_hi + s_hi
            while first < L and state[first] >= 0:                             # extend the prefix
                s_t = one if state[first] == 1 else zero
                v, r = tau[i] * v + x[i, first] - th * s_t, beta[i] * r + s_t
                first += 1
        v = r = zero
        for t in range(L):                                                     # refractory_potential
            a = tau[i] * v + x[i, t]
            s_t = one if state[t] == 1 else zero
            m[i, t], s[i, t] = a - theta_r[i] * r, s_t
            v, r = a - th * s_t, beta[i] * r + s_t


def pmbc(x, tau, v_th, theta_r, beta, fire_at_equality=True):
    """Fast path of refssm.neurons.pmbc; must match it bit for bit, iteration count included.

    Same bounds, margin rule (1e-9 (1 + |m|) away from v_th, waived at the earliest undetermined step)
    and snapshot semantics as the oracle, in x's dtype (the margin's 1e-9 rounded to it, as numpy
    rounds a Python float against a float32 array). Returns (s, m, iterations).
    """
    x = _signal(x)
    params = refractory_params(x, tau, v_th, theta_r, beta)
    s, m = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
    iterations = np.empty(math.prod(x.shape[:-1]), np.int64)                 # per row
    _pmbc_rows(*rows(x), *_per_row(*params), bool(fire_at_equality), *_constants(x.dtype),
               x.dtype.type(1e-9), *rows(s, m), iterations)
    return s, m, int(iterations.max(initial=0))
