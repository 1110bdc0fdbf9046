"""Spiking neurons as oracles: exact sequential recurrences over the last (time) axis.

Inputs x are (..., L), e.g. (B, H, L); per-channel parameters (tau, v_th, ...) are scalars or arrays
that broadcast against x.shape[:-1], e.g. (H,) for x of shape (B, H, L). The potential starts at 0.

dtype: a float32 x runs in float32 (spikes, potentials, state and parameters all float32, every
operation rounded as numpy rounds float32); anything else runs in float64. The fast paths in
refssm.kernels.neurons follow the same rule and match these oracles bit for bit in both dtypes.

Spike test: s = 1[v >= v_th] by default (fire at equality, SpikingJelly convention);
fire_at_equality=False gives s = 1[v > v_th] (snnTorch, Norse).

Training choices (used by the VJPs in refssm.spiking): "detach reset" means the reset term is
treated as a constant in the backward pass, so dL/dx flows only through the leak, not through the
spike that caused the reset. SpikingSSM (reference notes A1, A4) goes further and detaches the
whole membrane: the surrogate is applied on the input current y only.
"""

import numpy as np

from refssm._checks import as_array, choice, per_sequence, time_series


def compute_dtype(x):
    """The dtype the neurons compute in: float32 for a float32 array, else float64. Spikes, potentials
    and the neuron's state are held in it and the parameters are cast to it, so float32 input runs
    the same equations in float32 arithmetic (and the fast paths can match it bit for bit)."""
    return np.dtype(np.float32) if getattr(x, "dtype", None) == np.float32 else np.dtype(np.float64)


def _signal(x):
    return time_series("x", x, dtype=compute_dtype(x))


def _param(name, value, x, lo=None, hi=None, *, lo_open=False, hi_open=False):
    """per_sequence (range-checked, broadcast to x.shape[:-1]) in x's dtype."""
    v = per_sequence(name, value, x, lo, hi, lo_open=lo_open, hi_open=hi_open)
    return v.astype(x.dtype, copy=False)


def lif_params(x, tau, v_th, reset, v_reset):
    """The checks of `lif` (shared with its fast path): (tau, v_th, v_reset), each broadcast to
    x.shape[:-1] in x's dtype; x already checked (`time_series`)."""
    tau = _param("tau", tau, x, 0, 1, hi_open=True)
    v_th = _param("v_th", v_th, x, 0, None, lo_open=True)
    choice("reset", reset, ("hard", "soft"))
    return tau, v_th, _param("v_reset", v_reset, x)


def refractory_params(x, tau, v_th, theta_r, beta):
    """The checks of `refractory`, `refractory_potential` and `pmbc` (shared with their fast paths):
    (tau, v_th, theta_r, beta), each broadcast to x.shape[:-1] in x's dtype."""
    return (_param("tau", tau, x, 0, 1, hi_open=True),
            _param("v_th", v_th, x, 0, None, lo_open=True),
            _param("theta_r", theta_r, x, 0, None),
            _param("beta", beta, x, 0, 1, hi_open=True))


def _fires(v, v_th, fire_at_equality):
    return v >= v_th if fire_at_equality else v > v_th


# --------------------------------------------------------------------------------------------------
# LIF (SpikingSSM, reference notes A1)
# --------------------------------------------------------------------------------------------------

def lif(x, tau, v_th=1.0, reset="hard", v_reset=0.0, fire_at_equality=True):
    """Leaky integrate-and-fire with hard or soft reset (SpikingSSM eqs. 1-4).

        v_t = tau u_{t-1} + x_t                       charge (pre-reset potential), u_{-1} = 0
        s_t = 1[v_t >= v_th]                          fire
        hard: u_t = v_t (1 - s_t) + s_t v_reset       soft: u_t = v_t - s_t v_th

    x: (..., L); tau in [0, 1), v_th > 0, v_reset: scalars or broadcasting against x.shape[:-1].
    Returns (s, v), both (..., L) in x's dtype (`compute_dtype`): spikes in {0, 1} and the pre-reset
    potential.
    """
    x = _signal(x)
    tau, v_th, v_reset = lif_params(x, tau, v_th, reset, v_reset)
    s, v = np.empty_like(x), np.empty_like(x)
    u = np.zeros(x.shape[:-1], x.dtype)
    for t in range(x.shape[-1]):
        s[..., t], v[..., t], u = lif_step(u, x[..., t], tau, v_th, reset, v_reset, fire_at_equality)
    return s, v


def lif_step(u, x_t, tau, v_th, reset, v_reset, fire_at_equality=True):
    """One step of `lif` from the post-reset potential u_{t-1}: -> (s_t, v_t, u_t), in u's dtype.
    Unchecked: `lif` checks its arguments, and streaming inference (refssm.models.stream) calls it per step."""
    v = tau * u + x_t
    s = _fires(v, v_th, fire_at_equality).astype(v.dtype)
    return s, v, (v * (1 - s) + s * v_reset if reset == "hard" else v - s * v_th)


# --------------------------------------------------------------------------------------------------
# Soft-reset refractory neuron (SPikE-SSM, reference notes B2) and PMBC (B3)
# --------------------------------------------------------------------------------------------------

def _charge(v, r, x_t, tau, theta_r):
    """m_t = tau v_{t-1} + x_t - theta_r r_{t-1}: the potential that is compared with v_th."""
    return tau * v + x_t - theta_r * r


def _update(v, r, x_t, s_t, tau, v_th, beta):
    """Soft reset v_t = tau v_{t-1} + x_t - v_th s_t and refractory trace r_t = beta r_{t-1} + s_t."""
    return tau * v + x_t - v_th * s_t, beta * r + s_t


def refractory(x, tau, v_th, theta_r, beta, fire_at_equality=True):
    """Soft-reset neuron with a refractory trace (SPikE-SSM, reconstruction of reference notes B2).

        m_t = tau v_{t-1} + x_t - theta_r r_{t-1}     potential
        s_t = 1[m_t >= v_th]                          fire
        v_t = tau v_{t-1} + x_t - v_th s_t            soft reset (applied at the spike step, then leaks)
        r_t = beta r_{t-1} + s_t                      refractory trace;  v_{-1} = r_{-1} = 0

    Closed form: m_t = sum_j tau^j x_{t-j} - sum_{d>=1} kappa_d s_{t-d}, kappa_d = v_th tau^d +
    theta_r beta^(d-1) >= 0. x: (..., L); tau, beta in [0, 1), v_th > 0, theta_r >= 0, each a
    scalar or broadcasting against x.shape[:-1]. Returns (s, m), both (..., L).
    """
    x = _signal(x)
    tau, v_th, theta_r, beta = refractory_params(x, tau, v_th, theta_r, beta)
    s, m = np.empty_like(x), np.empty_like(x)
    v = r = np.zeros(x.shape[:-1], x.dtype)
    for t in range(x.shape[-1]):
        s[..., t], m[..., t], v, r = refractory_step(v, r, x[..., t], tau, v_th, theta_r, beta, fire_at_equality)
    return s, m


def refractory_step(v, r, x_t, tau, v_th, theta_r, beta, fire_at_equality=True):
    """One step of `refractory` from (v_{t-1}, r_{t-1}): -> (s_t, m_t, v_t, r_t). Unchecked, as `lif_step`."""
    m = _charge(v, r, x_t, tau, theta_r)
    s = _fires(m, v_th, fire_at_equality).astype(m.dtype)
    return (s, m, *_update(v, r, x_t, s, tau, v_th, beta))


def refractory_potential(x, s, tau, v_th, theta_r, beta):
    """The potential m of `refractory` for a *given* spike train s (linear in s, non-increasing in
    every past spike because kappa_d >= 0). Same arithmetic as `refractory`, step for step.

    x: (..., L); s: broadcasting against x, e.g. (2, ..., L) for two candidate trains.
    """
    x = _signal(x)
    tau, v_th, theta_r, beta = refractory_params(x, tau, v_th, theta_r, beta)
    s = as_array("s", s).astype(x.dtype, copy=False)
    m = np.empty(np.broadcast_shapes(x.shape, s.shape), x.dtype)
    v = r = np.zeros(m.shape[:-1], x.dtype)
    for t in range(x.shape[-1]):
        m[..., t] = _charge(v, r, x[..., t], tau, theta_r)
        v, r = _update(v, r, x[..., t], s[..., t], tau, v_th, beta)
    return m


def pmbc(x, tau, v_th, theta_r, beta, fire_at_equality=True):
    """Parallel Max-Min Boundary Compression: the exact spikes of `refractory`, decided in parallel.

    Each step t is undetermined, 0 or 1; all start undetermined. Repeat (reference notes B3):
      m_max = m(s_lo), s_lo = known spikes with undetermined -> 0   (fewest resets: an upper bound)
      m_min = m(s_hi), s_hi = known spikes with undetermined -> 1   (most resets: a lower bound)
      undetermined t with m_min >= v_th -> 1; with m_max < v_th -> 0.
    The bounds hold because m is non-increasing in each past spike (kappa_d >= 0); the earliest
    undetermined step has m_max = m_min = m, so every iteration decides at least one step per row.

    Exact in floating point: the bounds use `refractory`'s own arithmetic (`refractory_potential`),
    so at the earliest undetermined step both bounds equal the oracle's m bit for bit; at later
    steps, where the float bounds could be off by rounding, a decision also needs a margin of
    1e-9 (1 + |m|) from v_th. The scan over t is the oracle's; the fast paths parallelise it.

    Returns (s, m, iterations): spikes and potential (..., L), equal to `refractory`, and the number
    of bound iterations (at most L; small when tau is small, ~10-100s as tau -> 1).
    """
    x = _signal(x)
    tau, v_th, theta_r, beta = refractory_params(x, tau, v_th, theta_r, beta)
    th = v_th[..., None]
    state = np.full(x.shape, -1, dtype=np.int8)                                # -1 undetermined
    iterations = 0
    while np.any(state < 0):
        iterations += 1
        undetermined = state < 0
        first = np.zeros_like(undetermined)                                    # earliest undetermined
        rows = undetermined.any(axis=-1)
        np.put_along_axis(first, np.argmax(undetermined, axis=-1)[..., None],
                          rows[..., None], axis=-1)
        known_one = (state == 1).astype(x.dtype)
        m_max, m_min = refractory_potential(x, np.stack([known_one, known_one + undetermined]),
                                            tau, v_th, theta_r, beta)
        margin = 1e-9 * (1 + np.abs(m_min))
        ones = undetermined & _fires(m_min, th, fire_at_equality) & (first | (m_min - th > margin))
        margin = 1e-9 * (1 + np.abs(m_max))
        zeros = undetermined & ~_fires(m_max, th, fire_at_equality) & (first | (th - m_max > margin))
        state[ones] = 1
        state[zeros] = 0
    s = state.astype(x.dtype)
    return s, refractory_potential(x, s, tau, v_th, theta_r, beta), iterations


# --------------------------------------------------------------------------------------------------
# Stochastic spiking (P-SpikeSSM, reference notes 3.2-3.4)
# --------------------------------------------------------------------------------------------------

def stochastic(p, rng):
    """Bernoulli spikes s = 1[U < clamp(p, 0, 1)], U ~ Uniform[0, 1) drawn from `rng` (p's shape).

    Equals the public code's 1[p > U] on the unclamped p (U < 1 always, U >= 0). The gradient used in
    training is the straight-through clamp, 1[0 <= p <= 1] (refssm.surrogate "straight_through").
    """
    p = as_array("p", p, dtype=compute_dtype(p))
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return (rng.random(p.shape) < np.clip(p, 0.0, 1.0)).astype(compute_dtype(p))
