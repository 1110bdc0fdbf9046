"""Hand-written VJPs of refssm.fractional against autograd and central differences (float64, tiny sizes),
in refssm's convention: `y, ctx = f_fwd(...)`, `grads = f_vjp(ctx, g)`.

The autograd losses are written independently of the forward under test: the GL kernel by its step-by-step
recursion (the forward uses Newton's power-series inversion), the decoupled SOE kernel as its closed-form sum.
"""

import autograd.numpy as anp
import numpy as np
import pytest

from gradcheck import check_vjp
from refssm import fractional as F

RNG = np.random.default_rng(11)
L = 12


def loss_and_grad(k, W):
    """A real loss of a complex kernel and its gradient dL/dRe k + i dL/dIm k."""
    return (anp.real(anp.conj(W) * k) + 0.3 * anp.real(k) ** 2).sum(), W + 0.6 * np.real(k)


def gl_kernel_autograd(lam, alpha, dt, L, explicit, memory):
    """Σ_{j<=min(n, K)} w_j x_{n−j} = dt^α (λ x_{n−s} + δ_n), written as the recursion."""
    K = L - 1 if memory is None else memory
    w = F.gl_weights(alpha, L)
    c = dt ** alpha * lam
    xs = []
    for n in range(L):
        acc = dt ** alpha * (1.0 if n == 0 else 0.0) + 0 * lam
        for j in range(1, min(n, K) + 1):
            acc = acc - w[j] * xs[n - j]
        if explicit and n > 0:
            acc = acc + c * xs[n - 1]
        xs.append(acc / (1.0 - c) if not explicit else acc)
    return anp.stack(xs, axis=-1)


@pytest.mark.parametrize("alpha", [0.4, 1.0, 1.5])
@pytest.mark.parametrize("explicit,memory", [(False, None), (True, None), (False, 4)])
def test_gl_kernel_vjp(alpha, explicit, memory):
    lam = -RNG.uniform(0.1, 2, (2, 3)) + 1j * RNG.uniform(-3, 3, (2, 3))
    dt = RNG.uniform(0.05, 0.3, (2, 1))
    W = RNG.standard_normal((2, 3, L)) + 1j * RNG.standard_normal((2, 3, L))
    k, ctx = F.gl_kernel_fwd(lam, alpha, dt, L, explicit, memory)
    g_lam, g_dt = F.gl_kernel_vjp(ctx, loss_and_grad(k, W)[1])
    assert g_lam.shape == lam.shape and g_dt.shape == dt.shape
    args = (L, explicit, memory)
    check_vjp(lambda lam, dt: loss_and_grad(F.gl_kernel(lam, alpha, dt, *args), W)[0], [g_lam, g_dt], [lam, dt],
              autograd_loss=lambda lam, dt: loss_and_grad(gl_kernel_autograd(lam, alpha, dt, *args), W)[0])


def decoupled_autograd(lam, dt, omega, eta):
    a = eta * lam[..., None] - omega                                   # (..., M), all |a| >= 1e-6 here
    b = (anp.exp(a * dt[..., None]) - 1) / a
    V = anp.exp((a * dt[..., None])[..., None] * np.arange(L))
    return (eta[..., None] * b[..., None] * V).sum(axis=-2)


def test_soe_decoupled_kernel_vjp():
    lam = -RNG.uniform(0.1, 2, (2, 3)) + 1j * RNG.uniform(-3, 3, (2, 3))
    dt = RNG.uniform(0.05, 0.3, (2, 1))
    omega, eta = RNG.uniform(0.05, 1.0, 2), RNG.uniform(0.1, 2.0, 2)
    W = RNG.standard_normal((2, 3, L)) + 1j * RNG.standard_normal((2, 3, L))
    k, ctx = F.soe_decoupled_kernel_fwd(lam, dt, L, omega, eta)
    grads = F.soe_decoupled_kernel_vjp(ctx, loss_and_grad(k, W)[1])
    assert [g.shape for g in grads] == [lam.shape, dt.shape, omega.shape, eta.shape]
    check_vjp(lambda *p: loss_and_grad(F.soe_decoupled_kernel(p[0], p[1], L, p[2], p[3]), W)[0], grads,
              [lam, dt, omega, eta], autograd_loss=lambda *p: loss_and_grad(decoupled_autograd(*p), W)[0])


def test_soe_decoupled_kernel_vjp_small_rate_branch():
    # |η λ − ω| < 1e-6: b = dt does not depend on a (as in the code); the steps stay inside the branch
    lam, dt = np.array([2e-8 + 1e-8j]), np.array([0.3])
    omega, eta = np.array([5e-8]), np.array([1.5])
    W = RNG.standard_normal((1, L)) + 1j * RNG.standard_normal((1, L))
    k, ctx = F.soe_decoupled_kernel_fwd(lam, dt, L, omega, eta)
    grads = F.soe_decoupled_kernel_vjp(ctx, loss_and_grad(k, W)[1])

    def branch_autograd(lam, dt, omega, eta):
        a = eta * lam[..., None] - omega
        V = anp.exp((a * dt[..., None])[..., None] * np.arange(L))
        return (eta[..., None] * dt[..., None, None] * V).sum(-2)

    check_vjp(lambda *p: loss_and_grad(F.soe_decoupled_kernel(p[0], p[1], L, p[2], p[3]), W)[0], grads,
              [lam, dt, omega, eta], autograd_loss=lambda *p: loss_and_grad(branch_autograd(*p), W)[0],
              eps=1e-9, rtol=1e-5, atol=1e-6)


def test_longspike_omega_eta_vjp():
    logits = [RNG.standard_normal(3), RNG.standard_normal(3)]
    g_out = [RNG.standard_normal(3), RNG.standard_normal(3)]
    (omega, eta), ctx = F.longspike_omega_eta_fwd(*logits)
    np.testing.assert_array_equal(F.longspike_omega_eta(*logits), (omega, eta))
    grads = F.longspike_omega_eta_vjp(ctx, g_out)

    def loss(ol, el):
        omega, eta = F.longspike_omega_eta(ol, el)
        return (g_out[0] * omega + g_out[1] * eta).sum()

    def loss_autograd(ol, el):
        sig = lambda x: 1 / (1 + anp.exp(-x))
        return (g_out[0] * (1e-6 + (100 - 1e-6) * sig(ol)) + g_out[1] * (1e-6 + (10 - 1e-6) * sig(el))).sum()

    check_vjp(loss, list(grads), logits, autograd_loss=loss_autograd)


@pytest.mark.parametrize("method", ["gl", "gl_explicit", "soe_decoupled"])
def test_fssm_conv_kernel_vjp(method):
    # the layer kernel K = 2 Re Σ_n C_n B_n k_n, with A shared by the channels (1, N/2) and dt (H,)
    H, N2, alpha = 3, 2, 0.7
    A = -RNG.uniform(0.1, 2, (1, N2)) + 1j * RNG.uniform(-3, 3, (1, N2))
    B = 1 + 0.2 * (RNG.standard_normal((H, N2)) + 1j * RNG.standard_normal((H, N2)))
    C = RNG.standard_normal((H, N2)) + 1j * RNG.standard_normal((H, N2))
    dt = RNG.uniform(0.05, 0.3, H)
    gK = RNG.standard_normal((H, L))
    soe = dict(omega=RNG.uniform(0.05, 1.0, 2), eta=RNG.uniform(0.1, 2.0, 2)) if method == "soe_decoupled" else {}
    grads = F.fssm_conv_kernel_vjp(F.fssm_conv_kernel_fwd(A, B, C, dt, L, alpha, method, **soe)[1], gK)
    assert [g.shape for g in grads] == [A.shape, B.shape, C.shape, dt.shape] + [(2,), (2,)] * bool(soe)

    def K_autograd(A, B, C, dt, omega=None, eta=None):
        if method == "soe_decoupled":
            k = decoupled_autograd(A, dt[:, None], omega, eta)
        else:
            k = gl_kernel_autograd(A, alpha, dt[:, None], L, method == "gl_explicit", None)
        return 2 * anp.real(anp.sum((C * B)[..., None] * k, axis=1))

    def loss(A, B, C, dt, *omega_eta):
        kw = dict(zip(("omega", "eta"), omega_eta))
        return np.sum(gK * F.fssm_conv_kernel(A, B, C, dt, L, alpha, method, **kw))

    check_vjp(loss, list(grads), [A, B, C, dt, *soe.values()],
              autograd_loss=lambda *p: anp.sum(gK * K_autograd(*p)))


def test_fssm_kernel_vjp_dispatch():
    lam, dt, gk = np.array([-0.5 + 1j]), 0.1, np.ones((1, L))
    k, ctx = F.fssm_kernel_fwd(lam, 0.6, dt, L, "gl_explicit", memory=3)
    k_gl, ctx_gl = F.gl_kernel_fwd(lam, 0.6, dt, L, explicit=True, memory=3)
    np.testing.assert_array_equal(k, k_gl)
    np.testing.assert_array_equal(k, F.fssm_kernel(lam, 0.6, dt, L, "gl_explicit", memory=3))
    for got, want in zip(F.fssm_kernel_vjp(ctx, gk), F.gl_kernel_vjp(ctx_gl, gk)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="no VJP"):
        F.fssm_kernel_vjp(F.fssm_kernel_fwd(lam, 0.6, dt, L, "soe_decoupled", M=4)[1], gk)   # needs omega, eta
    with pytest.raises(ValueError, match="no VJP"):
        F.fssm_kernel_vjp(F.fssm_kernel_fwd(lam, 0.6, dt, L, "exact")[1], gk)              # no backward
    with pytest.raises(ValueError, match="gK"):
        F.fssm_conv_kernel_vjp(F.fssm_conv_kernel_fwd(lam[None], lam[None], lam[None], [dt], L, 0.6)[1],
                               np.ones((1, L + 1)))


def test_vjps_reuse_the_forward(monkeypatch):
    # the backward takes the kernels (and the SOE's Vandermonde matrix) from the ctx: no forward runs again
    H, N2, alpha = 2, 2, 0.7
    A = -RNG.uniform(0.1, 2, (H, N2)) + 1j * RNG.uniform(-3, 3, (H, N2))
    B = C = np.ones((H, N2), complex)
    dt, gK = RNG.uniform(0.05, 0.3, H), RNG.standard_normal((H, L))
    ctxs = [F.fssm_conv_kernel_fwd(A, B, C, dt, L, a, m, **kw)[1] for m, a, kw in
            (("gl", alpha, {}), ("gl", 1.5, {}), ("soe_decoupled", alpha, dict(omega=[0.1, 1.0], eta=[1.0, 0.5])))]
    for name in ("gl_kernel", "gl_kernel_recursion", "gl_recursion", "soe_decoupled_kernel", "fssm_kernel",
                 "fssm_kernel_fwd", "_series_reciprocal"):
        monkeypatch.setattr(F, name, lambda *a, **k: pytest.fail("the VJP recomputed its forward"))
    for ctx in ctxs:
        F.fssm_conv_kernel_vjp(ctx, gK)
