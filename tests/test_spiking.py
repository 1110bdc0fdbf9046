"""refssm.spiking (the oracles): each surrogate VJP against autograd with the same surrogate
registered as a primitive (forward Heaviside, backward surrogate), and against central differences
where the function is smooth.

What is differentiable. A spiking neuron's output is piecewise constant in its input: its true
derivative is 0 almost everywhere, so a finite difference of the real neuron checks nothing. The
surrogate gradient is the exact gradient of a relaxed neuron, H(z) replaced by the surrogate's smooth
primitive sigma(z) (sigma' = sg.grad), with the relaxed neuron's own spikes s = sigma(v - v_th) and
potentials in the formulas. So the BPTT formulas are checked by central differences of the relaxed
LIF, fed to lif_vjp through a ctx built from the relaxed trajectory (the reset spikes held fixed for
"bptt_detach_reset"); the "output" mode is checked on the real trajectory with the membrane held fixed
(z_t = x_t + (v_t - x_t) - v_th, smooth in x and v_th); and on the real (Heaviside) trajectory the VJP
must equal autograd's with H an autograd primitive whose VJP is the surrogate, the recurrence unrolled
and the reset detached where the mode says. (The same holds for v_th: the real loss is piecewise
constant in v_th as well, so its gradient is checked on the relaxed neuron and in "output" mode.)
"""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from autograd.extend import defvjp, primitive
from hypothesis import given, settings, strategies as st

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


def constant():
    """The identity as an autograd primitive with a zero VJP (a detached value)."""
    @primitive
    def detach(z):
        return z

    defvjp(detach, lambda ans, z: lambda g: 0.0 * g)
    return detach


SMOOTH = ["sigmoid", "atan", "fast_sigmoid"]           # primitives with continuous derivatives
seeds = st.integers(0, 2**31)


def _lif_autograd(x, v_th, tau, v_reset, reset, gradient, sg, v_ref, gs):
    """sum(gs * s) of the LIF unrolled in autograd, with s = H(v - v_th) an autograd primitive whose
    VJP is the surrogate; "bptt_detach_reset" detaches the spike inside the reset, "output" the whole
    membrane (v - x taken from the oracle's v_ref as a constant)."""
    H, detach = autograd_spike(sg), constant()
    th = v_th if anp.ndim(v_th) == 0 else v_th[..., None]
    if gradient == "output":
        return anp.sum(gs * H(x + detach(v_ref - x) - th))
    th = v_th                                                  # broadcasts against x[..., t]
    u, out = 0.0, []
    for t in range(x.shape[-1]):
        v = tau * u + x[..., t]
        s = H(v - th)
        r = detach(s) if gradient == "bptt_detach_reset" else s
        u = v * (1 - r) + r * v_reset if reset == "hard" else v - r * th
        out.append(s)
    return anp.sum(gs * anp.stack(out, axis=-1))


@settings(max_examples=40, deadline=None)
@given(gradient=st.sampled_from(spiking.LIF_GRADIENTS), reset=st.sampled_from(["hard", "soft"]),
       eq=st.booleans(), name=st.sampled_from(list(surrogate.SURROGATES)), per_channel=st.booleans(),
       L=st.integers(1, 12), seed=seeds)
def test_lif_vjp_against_autograd(gradient, reset, eq, name, per_channel, L, seed):
    rng = np.random.default_rng(seed)
    B, H = 2, 3
    sg = surrogate.get(name, fire_at_equality=eq)
    x = 1.3 * rng.standard_normal((B, H, L))
    tau, v_reset = 0.5, 0.2
    v_th = rng.uniform(0.5, 1.5, H) if per_channel else 0.9
    gs = rng.standard_normal(x.shape)
    s, ctx = spiking.lif(x, tau, v_th, sg, gradient, reset, v_reset)
    s_ref, v_ref = neurons.lif(x, tau, v_th, reset, v_reset, eq)
    np.testing.assert_array_equal(s, s_ref)
    gx, gth = spiking.lif_vjp(ctx, gs)
    args = (tau, v_reset, reset, gradient, sg, v_ref, gs)
    np.testing.assert_allclose(gx, autograd.grad(_lif_autograd, 0)(x, v_th, *args), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gth, autograd.grad(_lif_autograd, 1)(x, np.asarray(v_th, float), *args),
                               rtol=1e-10, atol=1e-12)
    assert np.shape(gth) == np.shape(v_th)


def _relaxed_lif(x, tau, v_th, reset, v_reset, sg, reset_spikes=None):
    """The LIF with s_t = sg.primitive(v_t - v_th) in place of H (smooth; its gradient is the
    surrogate gradient). reset_spikes, when given, replace s_t inside the reset (held fixed)."""
    th = np.broadcast_to(v_th, x.shape[:-1])
    u = np.zeros(x.shape[:-1])
    s, v = np.empty_like(x), np.empty_like(x)
    for t in range(x.shape[-1]):
        v[..., t] = tau * u + x[..., t]
        s[..., t] = sg.primitive(v[..., t] - th)
        r = s[..., t] if reset_spikes is None else reset_spikes[..., t]
        u = v[..., t] * (1 - r) + r * v_reset if reset == "hard" else v[..., t] - th * r
    return s, v


@settings(max_examples=40, deadline=None)
@given(gradient=st.sampled_from(["bptt", "bptt_detach_reset"]), reset=st.sampled_from(["hard", "soft"]),
       name=st.sampled_from(SMOOTH), lead=st.sampled_from([(), (3,), (2, 2)]), L=st.integers(1, 8),
       tau=st.floats(0, 0.95), seed=seeds)
def test_lif_vjp_is_the_gradient_of_the_relaxed_neuron(gradient, reset, name, lead, L, tau, seed):
    rng = np.random.default_rng(seed)
    sg = surrogate.get(name)
    x = rng.normal(0.5, 1.0, lead + (L,))
    v_th = rng.uniform(0.5, 1.5, lead)                                         # one per row
    v_reset = rng.uniform(-0.3, 0.3, lead)
    gs = rng.standard_normal(x.shape)
    s, v = _relaxed_lif(x, tau, v_th, reset, v_reset, sg)
    frozen = s if gradient == "bptt_detach_reset" else None

    def loss(x_, v_th_):
        return np.sum(gs * _relaxed_lif(x_, tau, v_th_, reset, v_reset, sg, frozen)[0])

    ctx = (s, v, tau, v_th, v_reset, reset, sg, gradient)      # the oracle's ctx, relaxed trajectory
    gx, gth = spiking.lif_vjp(ctx, gs)
    np.testing.assert_allclose(gx, central_diff_grad(lambda x_: loss(x_, v_th), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gth, central_diff_grad(lambda t_: loss(x, t_), v_th), rtol=1e-6, atol=1e-8)


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(SMOOTH), reset=st.sampled_from(["hard", "soft"]), per_channel=st.booleans(),
       L=st.integers(1, 10), seed=seeds)
def test_lif_output_mode_is_the_gradient_with_the_membrane_held(name, reset, per_channel, L, seed):
    # "output": z_t = x_t + (v_t - x_t) - v_th with v_t - x_t held; sum gs sigma(z) is smooth in x, v_th
    rng = np.random.default_rng(seed)
    sg = surrogate.get(name)
    x = rng.normal(0.5, 1.0, (2, 3, L))
    v_th = rng.uniform(0.5, 1.5, 3) if per_channel else np.float64(0.9)
    gs = rng.standard_normal(x.shape)
    s, ctx = spiking.lif(x, 0.5, v_th, sg, "output", reset)
    _, v = neurons.lif(x, 0.5, v_th, reset)
    held = v - x

    def loss(x_, v_th_):
        return np.sum(gs * sg.primitive(x_ + held - np.asarray(v_th_)[..., None]))

    gx, gth = spiking.lif_vjp(ctx, gs)
    np.testing.assert_allclose(gx, central_diff_grad(lambda x_: loss(x_, v_th), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gth, central_diff_grad(lambda t_: loss(x, t_), v_th), rtol=1e-6, atol=1e-8)


def test_refractory_vjp():
    rng = np.random.default_rng(4)
    B, H, L, tau, beta = 2, 3, 15, 0.4, 0.6
    sg = surrogate.get("triangle")
    y = rng.normal(0.4, 1.0, (B, H, L))
    ln_vth, log_theta = 0.1 * rng.standard_normal(H), np.log(0.3) + 0.1 * rng.standard_normal(H)
    gs = rng.standard_normal((B, H, L))
    s, ctx = spiking.refractory(y, ln_vth, log_theta, tau, beta, sg)
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
    grads = spiking.refractory_vjp(ctx, gs)
    check_vjp(lambda *a: np.sum(gs * sg.primitive(potential(*a, np))), grads, [y, ln_vth, log_theta],
              autograd_loss=lambda *a: anp.sum(gs * Hs(potential(*a, anp))), rtol=1e-6, atol=1e-8)


def test_sample_rate_and_vjp():
    rng = np.random.default_rng(5)
    p = rng.uniform(-0.5, 1.5, (2, 3, 7))
    n = 20_000
    u = rng.random((n,) + p.shape)
    s, ctx = spiking.sample(np.broadcast_to(p, u.shape), u)
    q = np.clip(p, 0, 1)                                      # E[s] = clamp(p, 0, 1): 5 standard errors
    assert np.all(np.abs(s.mean(axis=0) - q) <= 5 * np.sqrt(q * (1 - q) / n) + 1e-12)
    s, ctx = spiking.sample(p, u[0])
    gs = rng.standard_normal(p.shape)
    clamp = autograd_spike(surrogate.get("straight_through"))   # backward 1[0 <= p <= 1]
    np.testing.assert_allclose(spiking.sample_vjp(ctx, gs), autograd.grad(lambda p: anp.sum(gs * clamp(p)))(p))
    # the gradient of E[s] = clip(p, 0, 1) by central differences (away from the kinks)
    np.testing.assert_allclose(spiking.sample_vjp(ctx, gs),
                               central_diff_grad(lambda p: np.sum(gs * np.clip(p, 0, 1)), p), atol=1e-8)


def test_bad_gradient():
    sg = surrogate.get("triangle")
    with pytest.raises(ValueError, match="gradient"):
        spiking.lif(np.ones((1, 2, 3)), 0.1, 1.0, sg, gradient="sltt")
    with pytest.raises(ValueError, match="reset"):
        spiking.lif(np.ones((1, 2, 3)), 0.1, 1.0, sg, reset="none")
