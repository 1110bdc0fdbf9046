"""Spiking nonlinearities of the five seed models, each forward beside its surrogate VJP.

Same convention as refssm.ops:  out, ctx = f(...);  grads = f_vjp(ctx, g_out).
Inputs are SSM outputs y (B, H, L), time last; per-channel parameters are (H,).

    spike       Heaviside spike, no state (Binary S4D: threshold 0, fast-sigmoid slope 25)
    gsu         Gated Spiking Unit: ternary activations x real weights (Binary S4D GSU variant)
    lif         LIF, hard or soft reset, surrogate BPTT or output-only (SpikingSSM, LongSpike, presets)
    sdn_lif     SpikingSSM's SDN-parallel LIF
    refractory  soft-reset refractory neuron solved by PMBC, trainable threshold and magnitude (SPikE-SSM)
    sample      Bernoulli sampler with the straight-through clamp (P-SpikeSSM)

These are the oracles; their Numba fast paths (refssm.kernels.spiking) are registered against them in
refssm.backend. The forward passes call the oracles of refssm.neurons. Arrays keep their dtype.

spike, gsu, sample and sdn_lif are generic: one formula for numpy and CuPy arrays (the array module of their
input, `backend.array_module`). lif and refractory are loops in time: their oracles run on numpy arrays, and
other devices have their own kernels (refssm.backend.OPS).
"""

import numpy as np

from refssm import backend, neurons, ops, ssm, surrogate
from refssm._checks import choice

STRAIGHT_THROUGH = surrogate.get("straight_through")


# --------------------------------------------------------------------------------------------------
# Heaviside spike (Binary S4D, reference notes 2.3)
# --------------------------------------------------------------------------------------------------

def spike(y, sg):
    """s = H(y) (sg.fire_at_equality decides H(0)); backward ds/dy := sg.grad(y)."""
    return sg.forward(y), (y, sg)


def spike_vjp(ctx, gs):
    y, sg = ctx
    return gs * sg.grad(y)


# --------------------------------------------------------------------------------------------------
# Gated Spiking Unit (Binary S4D GSU, reference notes 2.4)
# --------------------------------------------------------------------------------------------------

def _ternary(x, delta, sg):
    """x_hat = H(x - delta) - H(-x - delta) in {-1, 0, 1}; d/dx and d/ddelta by the surrogate."""
    hi, lo = x - delta, -x - delta
    return sg.forward(hi) - sg.forward(lo), sg.grad(hi) + sg.grad(lo), sg.grad(lo) - sg.grad(hi)


def gsu(y, W, b, gamma, beta, sg, ratio=0.15):
    """Gated Spiking Unit: o = GELU(LayerNorm(a * g)) with

        delta_y = ratio max_h |y[h]| (per b, t),   y_hat = H(y - delta_y) - H(-y - delta_y)   ternary acts
        delta_W = ratio max |W|,                   W_hat = H(W - delta_W) - H(-W - delta_W)   ternary weights
        a = W y_hat + b       (ternary activations x real weights: accumulate only)
        g = W_hat y           (real activations x ternary weights: accumulate only, no bias)

    One matrix W (H, H) serves both branches; gradients flow through the surrogate at every H and,
    as in the public code's autograd, through the deltas (via the argmax of |.|).
    y (B, H, L) -> o (B, H, L). LayerNorm over channels with gamma, beta (H,).
    ctx starts with (y_hat, W_hat), the ternary operands (for operation counts).
    """
    xp = backend.array_module(y)
    absy = xp.abs(y)
    arg_y = xp.argmax(absy, axis=1)[:, None]                                   # (B, 1, L)
    delta_y = ratio * xp.take_along_axis(absy, arg_y, axis=1)                  # (B, 1, L)
    y_hat, dyhat_dy, dyhat_ddelta = _ternary(y, delta_y, sg)
    arg_W = xp.unravel_index(xp.argmax(xp.abs(W)), W.shape)
    delta_W = ratio * xp.abs(W[arg_W])
    W_hat, dWhat_dW, dWhat_ddelta = _ternary(W, delta_W, sg)
    a, ctx_a = ops.linear(y_hat, W, b)
    g, ctx_g = ops.linear(y, W_hat, xp.zeros(W.shape[0]))
    n, ctx_n = ops.layer_norm(a * g, gamma, beta)
    o, ctx_o = ops.gelu(n)
    ctx = (y_hat, W_hat, y, W, a, g, arg_y, arg_W, ratio, dyhat_dy, dyhat_ddelta, dWhat_dW, dWhat_ddelta,
           ctx_a, ctx_g, ctx_n, ctx_o)
    return o, ctx


def gsu_vjp(ctx, go):
    """-> (gy, gW, gb, ggamma, gbeta)."""
    (_, _, y, W, a, g, arg_y, arg_W, ratio, dyhat_dy, dyhat_ddelta, dWhat_dW, dWhat_ddelta,
     ctx_a, ctx_g, ctx_n, ctx_o) = ctx
    gn = ops.gelu_vjp(ctx_o, go)
    gag, ggamma, gbeta = ops.layer_norm_vjp(ctx_n, gn)
    gyhat, gW, gb = ops.linear_vjp(ctx_a, gag * g)
    gy, gWhat, _ = ops.linear_vjp(ctx_g, gag * a)
    # ternary activations: direct surrogate term plus the term through delta_y = ratio |y[argmax]|
    xp = backend.array_module(y)
    gy = gy + gyhat * dyhat_dy
    gdelta_y = xp.sum(gyhat * dyhat_ddelta, axis=1, keepdims=True)           # (B, 1, L)
    ysel = xp.take_along_axis(y, arg_y, axis=1)
    B, _, L = y.shape                            # gy[b, arg_y[b, 0, l], l] += ... (CuPy 13 has no put_along_axis)
    gy[xp.arange(B)[:, None, None], arg_y, xp.arange(L)] += gdelta_y * ratio * xp.sign(ysel)
    # ternary weights likewise, delta_W = ratio |W[argmax]|
    gW = gW + gWhat * dWhat_dW
    gW[arg_W] += xp.sum(gWhat * dWhat_ddelta) * ratio * xp.sign(W[arg_W])
    return gy, gW, gb, ggamma, gbeta


# --------------------------------------------------------------------------------------------------
# LIF (SpikingSSM A1-A4; LongSpike 3.1-3.2; the library presets of refssm.conventions)
# --------------------------------------------------------------------------------------------------

LIF_GRADIENTS = ("output", "bptt", "bptt_detach_reset")


def lif(x, tau, v_th, sg, gradient="bptt", reset="hard", v_reset=0.0):
    """Spikes of the LIF neuron refssm.neurons.lif, with a surrogate backward:

        v_t = tau u_{t-1} + x_t,  s_t = H(v_t - v_th) (sg.fire_at_equality decides H(0)),
        hard: u_t = v_t (1 - s_t) + s_t v_reset,   soft: u_t = v_t - s_t v_th,   u_{-1} = 0.

    gradient (how ds_t/dv_t := sg.grad(v_t - v_th) is propagated, see `lif_vjp`):
      "output"            ds_t/dx_t only: membrane and reset detached (SpikingSSM A2.1)
      "bptt"              backpropagation through time through leak and reset
      "bptt_detach_reset" through the leak; the spike inside the reset is a constant (SpikingJelly
                          detach_reset=True)
    x (..., L); tau in [0, 1), v_th > 0, v_reset: scalars or broadcasting against x.shape[:-1].
    Returns s (..., L) in {0, 1} (x's dtype) and ctx.
    """
    choice("gradient", gradient, LIF_GRADIENTS)
    s, v = neurons.lif(x, tau, v_th, reset, v_reset, sg.fire_at_equality)
    return s, (s, v, tau, v_th, v_reset, reset, sg, gradient)


def lif_vjp(ctx, gs):
    """-> (gx (..., L), gv_th of v_th's shape). With g_t = sg.grad(v_t - v_th), in reverse time from
    dL/du_{L-1} = 0:

        dL/ds_t = gs_t + dL/du_t du_t/ds_t       du_t/ds_t = v_reset - v_t (hard) or -v_th (soft);
                                                 the second term only for gradient "bptt"
        dL/dv_t = dL/ds_t g_t + dL/du_t du_t/dv_t,   du_t/dv_t = 1 - s_t (hard) or 1 (soft)
        dL/dx_t = dL/dv_t,   dL/du_{t-1} = tau dL/dv_t   ("output": dL/dx_t = gs_t g_t, no recursion)
        dL/dv_th = sum_t -dL/ds_t g_t  [- dL/du_t s_t, the soft reset's explicit v_th]
    """
    s, v, tau, v_th, v_reset, reset, sg, gradient = ctx
    th = np.broadcast_to(np.asarray(v_th, s.dtype), s.shape[:-1])[..., None]
    g = sg.grad(v - th).astype(s.dtype, copy=False)                            # (..., L)
    if gradient == "output":
        gx = gs * g
        return gx, ssm.sum_to_shape(-gx.sum(axis=-1), np.shape(v_th))
    tau, v_th_r, v_reset = (np.broadcast_to(np.asarray(a, s.dtype), s.shape[:-1]) for a in (tau, v_th, v_reset))
    hard, through_reset = reset == "hard", gradient == "bptt"
    gx = np.empty_like(s)
    gu = np.zeros(s.shape[:-1], s.dtype)                                       # dL/du_t
    gth = np.zeros(s.shape[:-1], s.dtype)
    for t in range(s.shape[-1] - 1, -1, -1):
        s_t, v_t = s[..., t], v[..., t]
        du_dv, du_ds = (1.0 - s_t, v_reset - v_t) if hard else (1.0, -v_th_r)
        g_s = gs[..., t] + gu * du_ds if through_reset else gs[..., t]
        gx[..., t] = g_s * g[..., t] + gu * du_dv
        gth -= g_s * g[..., t] if hard else g_s * g[..., t] + gu * s_t
        gu = tau * gx[..., t]
    return gx, ssm.sum_to_shape(gth, np.shape(v_th))


def sdn_lif(x, sdn_params, sg):
    """SpikingSSM's parallel LIF (v_th = 1, hard reset) through its surrogate dynamic network (SDN,
    refssm.sdn): s = H(x + m_hat - 1), m_hat = SDN(x) the predicted leak tau u_{t-1}, held constant in
    the backward (reference notes A2): ds_t/dx_t := sg.grad(x_t + m_hat_t - 1). x (..., L)."""
    from refssm import sdn

    s, z = sdn.sdn_spikes(x, sdn_params, sg.fire_at_equality)
    return s.astype(x.dtype, copy=False), (z, sg)


def sdn_lif_vjp(ctx, gs):
    z, sg = ctx
    return gs * sg.grad(z).astype(gs.dtype, copy=False)


# --------------------------------------------------------------------------------------------------
# Refractory neuron by PMBC (SPikE-SSM, reference notes B2-B3)
# --------------------------------------------------------------------------------------------------

def refractory(y, ln_vth, log_theta_r, tau, beta, sg):
    """Spikes of the soft-reset refractory neuron (refssm.neurons.refractory), solved exactly by PMBC.

    v_th = exp(ln_vth) (H,) and theta_r = exp(log_theta_r) (H,) are trainable; tau, beta fixed.
    y (B, H, L). Returns s (B, H, L) and ctx.
    """
    v_th, theta_r = np.exp(ln_vth), np.exp(log_theta_r)
    s, m, _ = neurons.pmbc(y, tau, v_th, theta_r, beta, sg.fire_at_equality)
    return s, (s, m, v_th, theta_r, tau, beta, sg)


def refractory_vjp(ctx, gs):
    """-> (gy, gln_vth, glog_theta_r), the reset path detached (reference notes B3, "Training").

    With G_t = gs_t sg.grad(m_t - v_th) and s held constant in m = a(y) - kappa * s:
      dL/dy_j      = sum_{t>=j} tau^(t-j) G_t                          (reverse-time leak)
      dL/dv_th     = sum_t G_t (-1 - sum_{d>=1} tau^d s_{t-d})         (threshold and soft reset)
      dL/dtheta_r  = sum_t G_t (-sum_{d>=1} beta^(d-1) s_{t-d})        (refractory trace)
    """
    s, m, v_th, theta_r, tau, beta, sg = ctx
    G = gs * sg.grad(m - v_th[:, None]).astype(gs.dtype, copy=False)
    L = s.shape[-1]
    gy = np.empty_like(G)
    reset = np.zeros_like(G)                                                   # sum_d tau^d s_{t-d}
    trace = np.zeros_like(G)                                                   # sum_d beta^(d-1) s_{t-d}
    acc = np.zeros(G.shape[:-1])
    for t in range(L - 1, -1, -1):
        acc = G[..., t] + tau * acc
        gy[..., t] = acc
    for t in range(1, L):
        reset[..., t] = tau * (reset[..., t - 1] + s[..., t - 1])
        trace[..., t] = beta * trace[..., t - 1] + s[..., t - 1]
    g_vth = np.sum(G * (-1 - reset), axis=(0, 2))
    g_theta = np.sum(G * -trace, axis=(0, 2))
    return gy, g_vth * v_th, g_theta * theta_r


# --------------------------------------------------------------------------------------------------
# Stochastic sampler (P-SpikeSSM, reference notes 3.3-3.4)
# --------------------------------------------------------------------------------------------------

def sample(p, u):
    """s = 1[u < clamp(p, 0, 1)] for uniforms u ~ U[0, 1) of p's shape (refssm.neurons.stochastic(p, rng)
    is this with u = rng.random(p.shape)); backward: the straight-through clamp."""
    return (u < backend.array_module(p).clip(p, 0.0, 1.0)).astype(p.dtype), p


def sample_vjp(p, gs):
    """dL/dp = dL/ds 1[0 <= p <= 1]: the gradient of E[s] = clamp(p, 0, 1)."""
    return gs * STRAIGHT_THROUGH.grad(p).astype(gs.dtype, copy=False)
