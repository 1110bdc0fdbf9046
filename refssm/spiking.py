"""Spiking nonlinearities of the five seed models, each forward beside its surrogate VJP.

Same convention as refssm.ops:  out, ctx = f(...);  grads = f_vjp(ctx, g_out).
Inputs are SSM outputs y (B, H, L), time last; per-channel parameters are (H,).

    spike            Heaviside spike, no state (Binary S4D: threshold 0, fast-sigmoid slope 25)
    gsu              Gated Spiking Unit: ternary activations x real weights (Binary S4D GSU variant)
    lif_spike        LIF with learnable threshold by input scaling (SpikingSSM, LongSpike)
    refractory_spike soft-reset refractory neuron solved by PMBC (SPikE-SSM)
    sample_spike     Bernoulli sampler with the straight-through clamp (P-SpikeSSM)

The forward passes call the oracles of refssm.neurons, or their Numba fast paths with
backend="numba" (refssm.kernels.neurons, bit-exact with the oracles).
"""

import numpy as np

from refssm import neurons, ops, surrogate
from refssm._checks import choice

BACKENDS = ("numpy", "numba")
STRAIGHT_THROUGH = surrogate.get("straight_through")


def _neurons(backend):
    choice("backend", backend, BACKENDS)
    if backend == "numba":
        from refssm.kernels import neurons as fast
        return fast
    return neurons


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
    absy = np.abs(y)
    arg_y = np.argmax(absy, axis=1)[:, None]                                   # (B, 1, L)
    delta_y = ratio * np.take_along_axis(absy, arg_y, axis=1)                  # (B, 1, L)
    y_hat, dyhat_dy, dyhat_ddelta = _ternary(y, delta_y, sg)
    arg_W = np.unravel_index(np.argmax(np.abs(W)), W.shape)
    delta_W = ratio * np.abs(W[arg_W])
    W_hat, dWhat_dW, dWhat_ddelta = _ternary(W, delta_W, sg)
    a, ctx_a = ops.linear(y_hat, W, b)
    g, ctx_g = ops.linear(y, W_hat, np.zeros(W.shape[0]))
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
    gy = gy + gyhat * dyhat_dy
    gdelta_y = np.sum(gyhat * dyhat_ddelta, axis=1, keepdims=True)           # (B, 1, L)
    ysel = np.take_along_axis(y, arg_y, axis=1)
    np.put_along_axis(gy, arg_y, np.take_along_axis(gy, arg_y, axis=1) + gdelta_y * ratio * np.sign(ysel),
                      axis=1)
    # ternary weights likewise, delta_W = ratio |W[argmax]|
    gW = gW + gWhat * dWhat_dW
    gW[arg_W] += np.sum(gWhat * dWhat_ddelta) * ratio * np.sign(W[arg_W])
    return gy, gW, gb, ggamma, gbeta


# --------------------------------------------------------------------------------------------------
# LIF with learnable threshold (SpikingSSM A1-A4; LongSpike 3.1-3.2)
# --------------------------------------------------------------------------------------------------

LIF_GRADIENTS = ("output", "bptt", "bptt_detach_reset")


def lif_spike(y, ln_vth, tau, sg, gradient="output", backend="numpy", sdn_params=None):
    """Spikes of a hard-reset LIF (v_th = 1, v_reset = 0) driven by x = y / exp(ln_vth).

    Dividing the input by exp(ln_vth) is a per-channel threshold v_th = exp(ln_vth) (SpikingSSM
    Property 2, f(I; v_th) = f(I/v_th; 1)). gradient:
      "output"            ds_t/dx_t := sg.grad(v_t - 1), membrane and reset detached (SpikingSSM, A2.1)
      "bptt"              full backpropagation through time through leak and reset
      "bptt_detach_reset" through the leak; the spike inside the reset is a constant (SpikingJelly
                          detach_reset=True, SpikingSSM's BPTT baseline)
    sdn_params: if given, the forward uses the SDN's predicted membrane (refssm.sdn) instead of the
    exact LIF scan; v is then mem_hat + x (gradient "output" only).
    y (B, H, L), ln_vth (H,). Returns s (B, H, L) in {0, 1} and ctx.
    """
    choice("gradient", gradient, LIF_GRADIENTS)
    x = y * np.exp(-ln_vth)[:, None]                                            # (B, H, L)
    if sdn_params is not None:
        if gradient != "output":
            raise ValueError(f"gradient must be 'output' with the SDN neuron, got {gradient!r}")
        from refssm import sdn

        s, z = sdn.sdn_spikes(x, sdn_params)
        v = z + 1.0
    else:
        s, v = _neurons(backend).lif(x, tau)
    return s, (x, s, v, ln_vth, tau, sg, gradient, backend)


def lif_spike_vjp(ctx, gs):
    """-> (gy, gln_vth). With x = y exp(-ln_vth): gy = gx exp(-ln_vth), gln_vth = -sum_{b,t} gx x."""
    x, s, v, ln_vth, tau, sg, gradient, backend = ctx
    g = sg.grad(v - 1.0)
    if gradient == "output":
        gx = gs * g
    elif backend == "numba":
        gx, _ = _neurons(backend).lif_vjp(gs, x, s, v, tau, 1.0, "hard", 0.0, g,
                                          detach_reset=gradient == "bptt_detach_reset")
    else:
        gx = _lif_bptt(gs, s, v, g, tau, gradient == "bptt")
    return gx * np.exp(-ln_vth)[:, None], -np.sum(gx * x, axis=(0, 2))


def _lif_bptt(gs, s, v, g, tau, through_reset):
    """dL/dx of the hard-reset LIF, v_t = tau u_{t-1} + x_t, u_t = v_t (1 - s_t), s_t = H(v_t - 1)
    (numpy; the Numba fast path is refssm.kernels.neurons.lif_vjp).

    Reverse time: dL/dv_t = gs_t g_t + dL/du_t du_t/dv_t, du_t/dv_t = (1 - s_t) - v_t g_t [through
    the reset], dL/du_{t-1} = tau dL/dv_t; dL/dx_t = dL/dv_t.
    """
    gx = np.empty_like(v)
    gu = np.zeros(v.shape[:-1])
    for t in range(v.shape[-1] - 1, -1, -1):
        du_dv = (1 - s[..., t]) - (v[..., t] * g[..., t] if through_reset else 0.0)
        gx[..., t] = gs[..., t] * g[..., t] + gu * du_dv
        gu = tau * gx[..., t]
    return gx


# --------------------------------------------------------------------------------------------------
# Refractory neuron by PMBC (SPikE-SSM, reference notes B2-B3)
# --------------------------------------------------------------------------------------------------

def refractory_spike(y, ln_vth, log_theta_r, tau, beta, sg, backend="numpy"):
    """Spikes of the soft-reset refractory neuron (refssm.neurons.refractory), solved exactly by PMBC.

    v_th = exp(ln_vth) (H,) and theta_r = exp(log_theta_r) (H,) are trainable; tau, beta fixed.
    Returns s (B, H, L) and ctx.
    """
    v_th, theta_r = np.exp(ln_vth), np.exp(log_theta_r)
    s, m, _ = _neurons(backend).pmbc(y, tau, v_th, theta_r, beta)
    return s, (s, m, v_th, theta_r, tau, beta, sg)


def refractory_spike_vjp(ctx, gs):
    """-> (gy, gln_vth, glog_theta_r), the reset path detached (reference notes B3, "Training").

    With G_t = gs_t sg.grad(m_t - v_th) and s held constant in m = a(y) - kappa * s:
      dL/dy_j      = sum_{t>=j} tau^(t-j) G_t                          (reverse-time leak)
      dL/dv_th     = sum_t G_t (-1 - sum_{d>=1} tau^d s_{t-d})         (threshold and soft reset)
      dL/dtheta_r  = sum_t G_t (-sum_{d>=1} beta^(d-1) s_{t-d})        (refractory trace)
    """
    s, m, v_th, theta_r, tau, beta, sg = ctx
    G = gs * sg.grad(m - v_th[:, None])
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

def sample_spike(p, rng):
    """s = 1[U < clamp(p, 0, 1)], U ~ Uniform[0, 1) from rng; backward: the straight-through clamp."""
    return neurons.stochastic(p, rng), p


def sample_spike_vjp(p, gs):
    """dL/dp = dL/ds 1[0 <= p <= 1]: the gradient of E[s] = clamp(p, 0, 1)."""
    return gs * STRAIGHT_THROUGH.grad(p)
