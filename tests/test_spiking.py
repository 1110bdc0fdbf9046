"""refssm.spiking: each surrogate VJP against autograd with the same surrogate registered as a
primitive (forward Heaviside, backward surrogate), and against central differences where the
gradient is that of a smooth function."""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from autograd.extend import defvjp, primitive

from gradcheck import central_diff_grad, check_vjp
from refssm import neurons, spiking, surrogate


def autograd_spike(sg):
    """H as an autograd primitive whose VJP is the surrogate derivative."""
    @primitive
    def H(z):
        return sg.forward(z)

    defvjp(H, lambda ans, z: lambda g: g * sg.grad(z))
    return H


def test_spike_vjp():
    rng = np.random.default_rng(0)
    sg = surrogate.get("fast_sigmoid", fire_at_equality=False)
    y, w = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 5))
    s, ctx = spiking.spike(y, sg)
    assert np.array_equal(s, (y > 0).astype(float))
    H = autograd_spike(sg)
    np.testing.assert_allclose(spiking.spike_vjp(ctx, w), autograd.grad(lambda y: anp.sum(w * H(y)))(y))
    # and the numerical derivative of the smooth primitive
    np.testing.assert_allclose(spiking.spike_vjp(ctx, w),
                               central_diff_grad(lambda y: np.sum(w * sg.primitive(y)), y), rtol=1e-6, atol=1e-8)


def _ag_layer_norm(x, gamma, beta, eps=1e-5):
    mu = anp.mean(x, axis=1, keepdims=True)
    var = anp.mean((x - mu) ** 2, axis=1, keepdims=True)
    return (x - mu) / anp.sqrt(var + eps) * gamma[:, None] + beta[:, None]


def _ag_gelu(x):
    from autograd.scipy.special import erf
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def test_gsu_vjp_against_autograd():
    rng = np.random.default_rng(1)
    B, H, L = 2, 4, 3
    sg = surrogate.get("fast_sigmoid")
    y = rng.standard_normal((B, H, L))
    W = rng.uniform(-0.5, 0.5, (H, H))
    b, gamma, beta = rng.standard_normal(H), 1 + 0.1 * rng.standard_normal(H), 0.1 * rng.standard_normal(H)
    go = rng.standard_normal((B, H, L))
    o, ctx = spiking.gsu(y, W, b, gamma, beta, sg)
    Hs = autograd_spike(sg)

    def ag(y, W, b, gamma, beta):
        dy = 0.15 * anp.max(anp.abs(y), axis=1, keepdims=True)
        yh = Hs(y - dy) - Hs(-y - dy)
        dW = 0.15 * anp.max(anp.abs(W))
        Wh = Hs(W - dW) - Hs(-W - dW)
        a = anp.einsum("oi,bil->bol", W, yh) + b[:, None]
        g = anp.einsum("oi,bil->bol", Wh, y)
        return anp.sum(go * _ag_gelu(_ag_layer_norm(a * g, gamma, beta)))

    args = (y, W, b, gamma, beta)
    for k, g in enumerate(spiking.gsu_vjp(ctx, go)):
        np.testing.assert_allclose(g, autograd.grad(ag, k)(*args), rtol=1e-9, atol=1e-10, err_msg=f"arg {k}")


def test_gsu_forward_is_ternary_and_matches_formula():
    rng = np.random.default_rng(2)
    y, W = rng.standard_normal((1, 3, 2)), rng.uniform(-1, 1, (3, 3))
    sg = surrogate.get("fast_sigmoid")
    o, ctx = spiking.gsu(y, W, np.zeros(3), np.ones(3), np.zeros(3), sg)
    dy = 0.15 * np.abs(y).max(axis=1, keepdims=True)
    yh = (y >= dy).astype(float) - (-y >= dy).astype(float)
    dW = 0.15 * np.abs(W).max()
    Wh = (W >= dW).astype(float) - (-W >= dW).astype(float)
    a, g = np.einsum("oi,bil->bol", W, yh), np.einsum("oi,bil->bol", Wh, y)
    n = (a * g - (a * g).mean(1, keepdims=True)) / np.sqrt((a * g).var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(o, _ag_gelu(n), rtol=1e-12)
    assert set(np.unique(yh)) <= {-1.0, 0.0, 1.0}


@pytest.mark.parametrize("gradient", spiking.LIF_GRADIENTS)
def test_lif_spike_vjp_against_autograd(gradient):
    rng = np.random.default_rng(3)
    B, H, L, tau = 2, 3, 12, 0.5
    sg = surrogate.get("triangle")
    y, ln_vth = 1.3 * rng.standard_normal((B, H, L)), 0.2 * rng.standard_normal(H)
    gs = rng.standard_normal((B, H, L))
    s, ctx = spiking.lif_spike(y, ln_vth, tau, sg, gradient)
    s_ref, v_ref = neurons.lif(y * np.exp(-ln_vth)[:, None], tau)
    np.testing.assert_array_equal(s, s_ref)
    Hs = autograd_spike(sg)

    def ag(y, ln_vth):
        x = y * anp.exp(-ln_vth)[:, None]
        if gradient == "output":       # membrane detached: z_t = x_t + (v_t - x_t as a constant) - 1
            return anp.sum(gs * Hs(x + (v_ref - x._value if hasattr(x, "_value") else v_ref - x) - 1))
        u, out = anp.zeros((B, H)), []
        for t in range(L):
            v = tau * u + x[..., t]
            st = Hs(v - 1.0)
            keep = 1 - (st._value if (gradient == "bptt_detach_reset" and hasattr(st, "_value")) else st)
            u = v * keep
            out.append(st)
        return anp.sum(gs * anp.stack(out, axis=-1))

    gy, gln = spiking.lif_spike_vjp(ctx, gs)
    np.testing.assert_allclose(gy, autograd.grad(ag, 0)(y, ln_vth), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gln, autograd.grad(ag, 1)(y, ln_vth), rtol=1e-10, atol=1e-12)


def test_refractory_spike_vjp():
    rng = np.random.default_rng(4)
    B, H, L, tau, beta = 2, 3, 15, 0.4, 0.6
    sg = surrogate.get("triangle")
    y = rng.normal(0.4, 1.0, (B, H, L))
    ln_vth, log_theta = 0.1 * rng.standard_normal(H), np.log(0.3) + 0.1 * rng.standard_normal(H)
    gs = rng.standard_normal((B, H, L))
    s, ctx = spiking.refractory_spike(y, ln_vth, log_theta, tau, beta, sg)
    s_ref, _ = neurons.refractory(y, tau, np.exp(ln_vth), np.exp(log_theta), beta)
    np.testing.assert_array_equal(s, s_ref)
    d = np.subtract.outer(np.arange(L), np.arange(L))
    leak = np.tril(tau ** d.clip(0))                                           # a = leak @ y
    tau_d = np.where(d >= 1, tau ** d.clip(0), 0.0)
    beta_d = np.where(d >= 1, beta ** (d - 1).clip(0), 0.0)

    def potential(y, ln_vth, log_theta, xp):   # closed form, spikes s held constant (reset detached)
        v_th, th = xp.exp(ln_vth)[:, None, None], xp.exp(log_theta)[:, None, None]
        reset = xp.einsum("tj,bhj->bht", tau_d, s)
        trace = xp.einsum("tj,bhj->bht", beta_d, s)
        m = xp.einsum("tj,bhj->bht", leak, y) - xp.transpose(v_th * xp.transpose(reset, (1, 0, 2)), (1, 0, 2)) \
            - xp.transpose(th * xp.transpose(trace, (1, 0, 2)), (1, 0, 2))
        return m - xp.exp(ln_vth)[:, None]

    Hs = autograd_spike(sg)
    grads = spiking.refractory_spike_vjp(ctx, gs)
    check_vjp(lambda *a: np.sum(gs * sg.primitive(potential(*a, np))), grads, [y, ln_vth, log_theta],
              autograd_loss=lambda *a: anp.sum(gs * Hs(potential(*a, anp))), rtol=1e-6, atol=1e-8)


def test_sample_spike_vjp():
    rng = np.random.default_rng(5)
    p = rng.uniform(-0.5, 1.5, (2, 3, 7))
    s, ctx = spiking.sample_spike(p, np.random.default_rng(9))
    np.testing.assert_array_equal(s, neurons.stochastic(p, np.random.default_rng(9)))
    gs = rng.standard_normal(p.shape)
    clamp = autograd_spike(surrogate.get("straight_through"))   # backward 1[0 <= p <= 1]
    np.testing.assert_allclose(spiking.sample_spike_vjp(ctx, gs), autograd.grad(lambda p: anp.sum(gs * clamp(p)))(p))
    # the gradient of E[s] = clip(p, 0, 1) by central differences (away from the kinks)
    np.testing.assert_allclose(spiking.sample_spike_vjp(ctx, gs),
                               central_diff_grad(lambda p: np.sum(gs * np.clip(p, 0, 1)), p), atol=1e-8)


def test_bad_backend_and_gradient():
    sg = surrogate.get("triangle")
    with pytest.raises(ValueError, match="gradient"):
        spiking.lif_spike(np.ones((1, 2, 3)), np.zeros(2), 0.1, sg, gradient="sltt")
    with pytest.raises(ValueError, match="backend"):
        spiking.lif_spike(np.ones((1, 2, 3)), np.zeros(2), 0.1, sg, backend="cuda")


@pytest.mark.parametrize("gradient", ["bptt", "bptt_detach_reset"])
def test_lif_spike_numba_backend_matches_numpy(gradient):
    rng = np.random.default_rng(6)
    y, ln_vth, gs = 1.3 * rng.standard_normal((2, 3, 20)), 0.1 * rng.standard_normal(3), rng.standard_normal((2, 3, 20))
    sg = surrogate.get("triangle")
    s, ctx = spiking.lif_spike(y, ln_vth, 0.5, sg, gradient)
    s_fast, ctx_fast = spiking.lif_spike(y, ln_vth, 0.5, sg, gradient, backend="numba")
    np.testing.assert_array_equal(s, s_fast)
    for a, b in zip(spiking.lif_spike_vjp(ctx, gs), spiking.lif_spike_vjp(ctx_fast, gs)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
