"""Numba fast paths of refssm.neurons (LIF, refractory neuron, PMBC) and the LIF BPTT VJP.

Each function validates its arguments with the oracle module's own checks (same ValueError, same
message), flattens the leading dims of x (..., L) to rows, and runs one compiled loop: rows in
parallel (prange), time inside. The arithmetic is written in the oracle's order and compiled without
fastmath, so spikes and potentials equal the oracle's bit for bit.
"""

import math

import numpy as np
from numba import njit, prange

from refssm._checks import as_array, choice
from refssm.neurons import _check_input, _per_channel, _refractory_params
from refssm.ops import _match


def _rows(*arrays):
    """Arrays (..., n) as C-contiguous rows (R, n), R the product of the leading dims (also for n = 0).

    Contiguous arrays give views, so the compiled loops write their outputs through them. Outputs are
    allocated by numpy rather than inside the loops: numpy asks for huge pages (fewer page faults)
    and tracemalloc sees its allocations."""
    return [np.ascontiguousarray(a.reshape(math.prod(a.shape[:-1]), a.shape[-1])) for a in arrays]


def _per_row(*params):
    """Per-channel parameters, already broadcast to x.shape[:-1], as contiguous (R,) vectors."""
    return [np.ascontiguousarray(p).reshape(-1) for p in params]


@njit(cache=True)
def _fires(v, v_th, fire_at_equality):
    return v >= v_th if fire_at_equality else v > v_th


# --------------------------------------------------------------------------------------------------
# LIF
# --------------------------------------------------------------------------------------------------

def _lif_params(x, tau, v_th, reset, v_reset):
    """The checks of refssm.neurons.lif, in its order; returns (tau, v_th, v_reset) per row."""
    tau = _per_channel("tau", tau, x, 0, 1, hi_open=True)
    v_th = _per_channel("v_th", v_th, x, 0, None, lo_open=True)
    choice("reset", reset, ("hard", "soft"))
    return tau, v_th, _per_channel("v_reset", v_reset, x)


@njit(parallel=True, cache=True)
def _lif_rows(x, tau, v_th, v_reset, hard, fire_at_equality, s, v):
    R, L = x.shape
    for i in prange(R):
        u = 0.0
        for t in range(L):
            v_t = tau[i] * u + x[i, t]
            s_t = 1.0 if _fires(v_t, v_th[i], fire_at_equality) else 0.0
            v[i, t], s[i, t] = v_t, s_t
            u = v_t * (1 - s_t) + s_t * v_reset[i] if hard else v_t - s_t * v_th[i]


def lif(x, tau, v_th=1.0, reset="hard", v_reset=0.0, fire_at_equality=True):
    """Fast path of refssm.neurons.lif; must match it bit for bit (spikes and potential).

    x: (..., L); tau in [0, 1), v_th > 0, v_reset: scalars or broadcasting against x.shape[:-1].
    Returns (s, v), both (..., L) float64.
    """
    x = _check_input(x)
    tau, v_th, v_reset = _lif_params(x, tau, v_th, reset, v_reset)
    s, v = np.empty(x.shape), np.empty(x.shape)
    _lif_rows(*_rows(x), *_per_row(tau, v_th, v_reset), reset == "hard", bool(fire_at_equality),
              *_rows(s, v))
    return s, v


@njit(parallel=True, cache=True)
def _lif_vjp_rows(gs, s, v, sg_grad, tau, v_th, v_reset, hard, through_reset, gx, gv_th):
    R, L = gs.shape
    for i in prange(R):
        gu = 0.0                                                               # dL/du_t
        acc = 0.0                                                              # dL/dv_th
        for t in range(L - 1, -1, -1):
            du_dv, du_ds = (1.0 - s[i, t], v_reset[i] - v[i, t]) if hard else (1.0, -v_th[i])
            g_s = gs[i, t] + gu * du_ds if through_reset else gs[i, t]         # dL/ds_t
            gx[i, t] = g_s * sg_grad[i, t] + gu * du_dv                        # dL/dv_t = dL/dx_t
            acc -= g_s * sg_grad[i, t] if hard else g_s * sg_grad[i, t] + gu * s[i, t]
            gu = tau[i] * gx[i, t]
        gv_th[i] = acc


def lif_vjp(gs, x, s, v, tau, v_th, reset, v_reset, sg_grad, detach_reset=False):
    """Backpropagation through time of refssm.neurons.lif: (dL/dx, dL/dv_th) for upstream dL/ds = gs.

    The forward v_t = tau u_{t-1} + x_t, s_t = H(v_t - v_th), hard: u_t = v_t (1 - s_t) + s_t v_reset,
    soft: u_t = v_t - v_th s_t, differentiated with ds_t/dv_t := sg_grad_t (the surrogate derivative
    at v_t - v_th, computed by the caller) and ds_t/dv_th := -sg_grad_t. In reverse time, with
    dL/du_{L-1} = 0:

        dL/ds_t = gs_t + dL/du_t du_t/ds_t      (du_t/ds_t = v_reset - v_t or -v_th; dropped if detach_reset)
        dL/dv_t = dL/ds_t sg_grad_t + dL/du_t du_t/dv_t,   du_t/dv_t = 1 - s_t (hard) or 1 (soft)
        dL/dx_t = dL/dv_t,   dL/du_{t-1} = tau dL/dv_t
        dL/dv_th = sum_t -dL/ds_t sg_grad_t [- dL/du_t s_t for the soft reset's explicit v_th]

    gs, x, s, v, sg_grad: (..., L), s and v from `lif` on x; parameters as in `lif`.
    Returns gx (..., L) and gv_th (x.shape[:-1],), one value per row (sum over rows that share a
    threshold). The numpy reference loop lives in tests/test_kernels_neurons.py.
    """
    x = _check_input(x)
    tau, v_th, v_reset = _lif_params(x, tau, v_th, reset, v_reset)
    gs, s, v, sg_grad = (_match(name, as_array(name, a), x.shape)
                         for name, a in (("gs", gs), ("s", s), ("v", v), ("sg_grad", sg_grad)))
    gx, gv_th = np.empty(x.shape), np.empty(x.shape[:-1])
    _lif_vjp_rows(*_rows(gs, s, v, sg_grad), *_per_row(tau, v_th, v_reset), reset == "hard",
                  not detach_reset, *_rows(gx), gv_th.reshape(-1))
    return gx, gv_th


# --------------------------------------------------------------------------------------------------
# Soft-reset refractory neuron and PMBC
# --------------------------------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _refractory_rows(x, tau, v_th, theta_r, beta, fire_at_equality, s, m):
    R, L = x.shape
    for i in prange(R):
        v = r = 0.0
        for t in range(L):
            a = tau[i] * v + x[i, t]                                           # tau v_{t-1} + x_t
            m_t = a - theta_r[i] * r
            s_t = 1.0 if _fires(m_t, v_th[i], fire_at_equality) else 0.0
            m[i, t], s[i, t] = m_t, s_t
            v, r = a - v_th[i] * s_t, beta[i] * r + s_t


def refractory(x, tau, v_th, theta_r, beta, fire_at_equality=True):
    """Fast path of refssm.neurons.refractory; must match it bit for bit (spikes and potential m).

    x: (..., L); tau, beta in [0, 1), v_th > 0, theta_r >= 0, each broadcasting against x.shape[:-1].
    Returns (s, m), both (..., L) float64.
    """
    x = _check_input(x)
    params = _refractory_params(x, tau, v_th, theta_r, beta)
    s, m = np.empty(x.shape), np.empty(x.shape)
    _refractory_rows(*_rows(x), *_per_row(*params), bool(fire_at_equality), *_rows(s, m))
    return s, m


@njit(parallel=True, cache=True)
def _pmbc_rows(x, tau, v_th, theta_r, beta, fire_at_equality, s, m, iterations):
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
        v = r = 0.0                                                            # state after the prefix
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
                            and (t == first or m_min - th > 1e-9 * (1 + abs(m_min)))):
                        state[t] = 1
                    if (not _fires(m_max, th, fire_at_equality)
                            and (t == first or th - m_max > 1e-9 * (1 + abs(m_max)))):
                        state[t] = 0
                s_lo = 1.0 if known == 1 else 0.0
                s_hi = 0.0 if known == 0 else 1.0
                v_lo, r_lo = a_lo - th * s_lo, beta[i] * r_lo + s_lo
                v_hi, r_hi = a_hi - th * s_hi, beta[i] * r_hi + s_hi
            while first < L and state[first] >= 0:                             # extend the prefix
                s_t = float(state[first])
                v, r = tau[i] * v + x[i, first] - th * s_t, beta[i] * r + s_t
                first += 1
        v = r = 0.0
        for t in range(L):                                                     # refractory_potential
            a = tau[i] * v + x[i, t]
            s_t = float(state[t])
            m[i, t], s[i, t] = a - theta_r[i] * r, s_t
            v, r = a - th * s_t, beta[i] * r + s_t


def pmbc(x, tau, v_th, theta_r, beta, fire_at_equality=True):
    """Fast path of refssm.neurons.pmbc; must match it bit for bit, iteration count included.

    Same bounds, margin rule (1e-9 (1 + |m|) away from v_th, waived at the earliest undetermined step)
    and snapshot semantics as the oracle. Returns (s, m, iterations).
    """
    x = _check_input(x)
    params = _refractory_params(x, tau, v_th, theta_r, beta)
    s, m = np.empty(x.shape), np.empty(x.shape)
    iterations = np.empty(math.prod(x.shape[:-1]), np.int64)                 # per row
    _pmbc_rows(*_rows(x), *_per_row(*params), bool(fire_at_equality), *_rows(s, m), iterations)
    return s, m, int(iterations.max(initial=0))
