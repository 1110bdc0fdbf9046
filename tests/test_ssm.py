"""refssm.ssm: kernel == scan, convolutions == explicit sums, discretisation orders, VJPs (the ctx
convention: `y, ctx = f_fwd(...)`, `grads = f_vjp(ctx, g)`), float32 convolutions, and a backward that
reuses the forward's spectra."""

import numpy as np
import pytest
import scipy.fft
import scipy.linalg
from hypothesis import given, settings, strategies as st

from gradcheck import check_vjp
from refssm import _checks, ssm

shapes = st.tuples(st.integers(1, 4), st.sampled_from([2, 4, 8, 16]), st.integers(1, 70))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, init=st.sampled_from(ssm.INITS), method=st.sampled_from(ssm.METHODS),
       seed=st.integers(0, 2**31))
def test_kernel_conv_equals_scan(shape, init, method, seed):
    H, N, L = shape
    rng = np.random.default_rng(seed)
    p = ssm.init_diag(H, N, init, rng=rng)
    dt = np.exp(p["log_dt"])
    u = rng.standard_normal((2, H, L))
    y_conv = ssm.causal_conv(u, ssm.kernel(p["A"], p["B"], p["C"], dt, L, method))
    y_scan = ssm.scan(u, *ssm.discretize(p["A"], p["B"], dt, method), p["C"])
    np.testing.assert_allclose(y_conv, y_scan, rtol=1e-10, atol=1e-10 * np.abs(y_scan).max())


@settings(max_examples=30, deadline=None)
@given(L=st.integers(1, 40), lead=st.sampled_from([(), (3,), (2, 3)]), seed=st.integers(0, 2**31))
def test_convolutions_equal_explicit_double_sums(L, lead, seed):
    rng = np.random.default_rng(seed)
    u, Kf, Kb = (rng.standard_normal(lead + (L,)) for _ in range(3))
    causal = np.zeros_like(u)
    anti = np.zeros_like(u)
    for t in range(L):
        for j in range(t + 1):
            causal[..., t] += Kf[..., j] * u[..., t - j]
        for d in range(1, L - t):
            anti[..., t] += Kb[..., d - 1] * u[..., t + d]
    np.testing.assert_allclose(ssm.causal_conv(u, Kf), causal, atol=1e-12)
    np.testing.assert_allclose(ssm.bidirectional_conv(u, Kf, Kb), causal + anti, atol=1e-12)


def test_conv_is_linear_not_circular():
    # a unit impulse at the last step must not wrap around to the start
    u = np.zeros(8)
    u[-1] = 1.0
    y = ssm.causal_conv(u, np.ones(8))
    np.testing.assert_allclose(y, [0, 0, 0, 0, 0, 0, 0, 1], atol=1e-14)


def _continuous_impulse(A, B, C, t):
    return 2 * np.einsum("hn,hnl->hl", C * B, np.exp(A[..., None] * t)).real


def _observed_order(errors, factor=2.0):
    return np.log(errors[:-1] / errors[1:]) / np.log(factor)


def test_zoh_converges_to_continuous_impulse_at_first_order():
    rng = np.random.default_rng(0)
    p = ssm.init_diag(2, 8, "lin", rng=rng)
    T = 2.0
    errs = []
    for dt in [1e-2, 5e-3, 2.5e-3, 1.25e-3]:
        L = int(round(T / dt)) + 1
        K = ssm.kernel(p["A"], p["B"], p["C"], np.full(2, dt), L, "zoh")
        h = _continuous_impulse(p["A"], p["B"], p["C"], dt * np.arange(L))
        errs.append(np.abs(K / dt - h).max() / np.abs(h).max())
    order = _observed_order(np.array(errs))
    assert np.all(np.abs(order - 1) < 0.1), order


def test_bilinear_and_zoh_agree_at_second_order():
    rng = np.random.default_rng(1)
    p = ssm.init_diag(2, 8, "inv", rng=rng)
    T = 1.0
    errs = []
    for dt in [4e-3, 2e-3, 1e-3, 5e-4]:
        L = int(round(T / dt)) + 1
        Kz = ssm.kernel(p["A"], p["B"], p["C"], np.full(2, dt), L, "zoh")
        Kb = ssm.kernel(p["A"], p["B"], p["C"], np.full(2, dt), L, "bilinear")
        errs.append(np.abs(Kz - Kb).max() / np.abs(Kz).max())
    order = _observed_order(np.array(errs))
    assert np.all(np.abs(order - 2) < 0.15), order


def test_euler_b_differs_from_zoh_only_in_B():
    # Euler-B keeps the exact Abar of ZOH; its Bbar is dt*B, the first-order term of ZOH's Bbar.
    rng = np.random.default_rng(2)
    p = ssm.init_diag(3, 8, "real", rng=rng)
    dt = np.exp(p["log_dt"])[:, None]
    Az, Bz = ssm.discretize(p["A"], p["B"], dt, "zoh")
    Ae, Be = ssm.discretize(p["A"], p["B"], dt, "euler")
    np.testing.assert_array_equal(Az, Ae)
    np.testing.assert_allclose(Be, dt * p["B"], rtol=1e-15)
    np.testing.assert_allclose(Bz, Be, rtol=(dt * np.abs(p["A"])).max())


def test_init_formulas():
    rng = np.random.default_rng(3)
    n = np.arange(4)
    np.testing.assert_allclose(ssm.init_diag(2, 8, "lin", rng=rng)["A"][1], -0.5 + 1j * np.pi * n)
    np.testing.assert_allclose(ssm.init_diag(2, 8, "inv", rng=rng)["A"][0],
                               -0.5 + 1j * (8 / np.pi) * (8 / (2 * n + 1) - 1))
    np.testing.assert_allclose(ssm.init_diag(2, 8, "real", rng=rng)["A"][0], -(n + 1.0))
    p = ssm.init_diag(500, 8, "lin", dt_min=1e-3, dt_max=1e-1, rng=rng)
    assert np.all((p["log_dt"] >= np.log(1e-3)) & (p["log_dt"] <= np.log(1e-1)))
    assert abs(np.mean(np.abs(p["C"]) ** 2) - 1) < 0.1


def test_legs_is_the_spectrum_of_the_normal_part():
    N = 16
    lam, Bt = ssm.hippo_legs_normal(N)
    # independent construction: LegS written entrywise, plus the rank-one correction P P^T
    A = np.array([[-np.sqrt((2 * i + 1) * (2 * k + 1)) if i > k else (-(i + 1.0) if i == k else 0.0)
                   for k in range(N)] for i in range(N)])
    S = A + np.outer(np.sqrt(np.arange(N) + 0.5), np.sqrt(np.arange(N) + 0.5))
    by_imag = lambda z: z[np.argsort(z.imag)]
    np.testing.assert_allclose(by_imag(np.concatenate([lam, lam.conj()])), by_imag(np.linalg.eigvals(S)),
                               atol=1e-9)
    # Parseval: the conjugate pairs carry all of |B_LegS|^2 = sum (2n+1) = N^2
    np.testing.assert_allclose(2 * np.sum(np.abs(Bt) ** 2), N**2, rtol=1e-12)


def test_legs_kernel_equals_matrix_exponential_system():
    # The diagonal LegS-normal SSM equals the dense one: x' = S x + q u, y = c^T x, ZOH by expm.
    N, dt, L = 8, 0.05, 30
    n = np.arange(N)
    q = np.sqrt(2 * n + 1.0)
    A = -np.tril(np.outer(q, q), -1) - np.diag(n + 1.0)
    S = A + np.outer(np.sqrt(n + 0.5), np.sqrt(n + 0.5))
    c = np.random.default_rng(4).standard_normal(N)
    Abar = scipy.linalg.expm(dt * S)
    Bbar = np.linalg.solve(S, (Abar - np.eye(N)) @ q)
    K_dense, x = np.empty(L), Bbar
    for l in range(L):
        K_dense[l], x = c @ x, Abar @ x
    w, V = np.linalg.eig(S)
    keep = w.imag > 0
    lam, Ck, Bk = w[keep], c @ V[:, keep], np.linalg.solve(V, q)[keep]
    K = ssm.kernel(lam[None], Bk[None], Ck[None], dt, L, "zoh")[0]
    np.testing.assert_allclose(K, K_dense, rtol=1e-9, atol=1e-12)
    # refssm's LegS modes: same eigenvalues, and |B| per mode is independent of eigenvector phases
    lam2, Bt = ssm.hippo_legs_normal(N)
    order, order2 = np.argsort(lam.imag), np.argsort(lam2.imag)
    np.testing.assert_allclose(lam2[order2], lam[order], atol=1e-9)
    np.testing.assert_allclose(np.abs(Bt[order2]), np.abs(Bk[order]), rtol=1e-9)


@pytest.mark.parametrize("method", ssm.METHODS)
def test_kernel_vjp(method):
    import autograd.numpy as anp

    rng = np.random.default_rng(5)
    H, N, L = 2, 4, 7
    p = ssm.init_diag(H, N, "inv", rng=rng)
    A = p["A"] + 0.1 * rng.standard_normal(p["A"].shape)
    B = p["B"] + 0.3j * rng.standard_normal(p["B"].shape)
    dt = np.exp(p["log_dt"]) * 10
    gK = rng.standard_normal((H, L))

    def loss(A, B, C, dt):
        return np.sum(gK * ssm.kernel(A, B, C, dt, L, method))

    def ag_loss(A, B, C, dt):
        dtA = dt[:, None] * A
        if method == "bilinear":
            Abar, Bbar = (1 + dtA / 2) / (1 - dtA / 2), dt[:, None] * B / (1 - dtA / 2)
        else:
            Abar = anp.exp(dtA)
            Bbar = (Abar - 1) / A * B if method == "zoh" else dt[:, None] * B
        V = Abar[..., None] ** anp.arange(L)
        K = 2 * anp.real(anp.sum((C * Bbar)[..., None] * V, axis=1))
        return anp.sum(gK * K)

    grads = ssm.kernel_vjp(ssm.kernel_fwd(A, B, p["C"], dt, L, method)[1], gK)
    check_vjp(loss, grads, [A, B, p["C"], dt], autograd_loss=ag_loss, rtol=1e-6, atol=1e-8)


def test_conv_vjps():
    import autograd.numpy as anp

    rng = np.random.default_rng(6)
    L = 6
    u, Kf, Kb = rng.standard_normal((2, 3, L)), rng.standard_normal((3, L)), rng.standard_normal((3, L))
    g = rng.standard_normal((2, 3, L))

    def ag_conv(u, K):   # autograd: FFT length positional, zero padding by hand
        pad = lambda a: anp.concatenate([a, anp.zeros(a.shape[:-1] + (L,))], axis=-1)
        return anp.real(anp.fft.ifft(anp.fft.fft(pad(u)) * anp.fft.fft(pad(K))))[..., :L]

    check_vjp(lambda u, K: np.sum(g * ssm.causal_conv(u, K)), ssm.causal_conv_vjp(ssm.causal_conv_fwd(u, Kf)[1], g),
              [u, Kf],
              autograd_loss=lambda u, K: anp.sum(g * ag_conv(u, K)))

    def ag_bi(u, Kf, Kb):
        shifted = anp.concatenate([anp.zeros((3, 1)), Kb[:, :-1]], axis=-1)
        return ag_conv(u, Kf) + ag_conv(u[..., ::-1], shifted)[..., ::-1]

    check_vjp(lambda u, Kf, Kb: np.sum(g * ssm.bidirectional_conv(u, Kf, Kb)),
              ssm.bidirectional_conv_vjp(ssm.bidirectional_conv_fwd(u, Kf, Kb)[1], g), [u, Kf, Kb],
              autograd_loss=lambda u, Kf, Kb: anp.sum(g * ag_bi(u, Kf, Kb)))


@pytest.mark.parametrize("call, match", [
    (lambda: ssm.init_diag(0, 8), "H"),
    (lambda: ssm.init_diag(2, 7), "N"),
    (lambda: ssm.init_diag(2, 8, "foo"), "init"),
    (lambda: ssm.init_diag(2, 8, dt_min=-1.0), "dt_min"),
    (lambda: ssm.init_diag(2, 8, dt_min=0.1, dt_max=0.01), "dt_max"),
    (lambda: ssm.discretize([[-1 + 0j]], [[1 + 0j]], 0.0), "dt"),
    (lambda: ssm.discretize([[0.5 + 0j]], [[1 + 0j]], 0.1), "A"),
    (lambda: ssm.discretize([[-1 + 0j]], [[1 + 0j]], 0.1, "rk4"), "method"),
    (lambda: ssm.kernel([[-1 + 0j]], [[1 + 0j]], [[1 + 0j]], 0.1, 0), "L"),
    (lambda: ssm.causal_conv(np.ones((2, 5)), np.ones((2, 4))), "K"),
    (lambda: ssm.causal_conv(np.full(3, np.nan), np.ones(3)), "u"),
    (lambda: ssm.causal_conv(np.ones((2, 0)), np.ones((2, 0))), "u"),
    (lambda: ssm.scan(np.ones((1, 0)), [[0.5]], [[1.0]], [[1.0]]), "u"),
    (lambda: ssm.bidirectional_conv(np.ones((2, 5)), np.ones(5), np.ones((3, 5))), "K_bwd"),
    (lambda: ssm.kernel_vjp(ssm.kernel_fwd([[-1 + 0j]], [[1 + 0j]], [[1 + 0j]], 0.1, 4)[1], np.ones((1, 5))), "gK"),
    (lambda: ssm.causal_conv_vjp(ssm.causal_conv_fwd(np.ones((2, 5)), np.ones(5))[1], np.ones(5)), "gy"),
])
def test_bad_input_raises_value_error_naming_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_kernel_vjp_for_parameters_shared_across_channels():
    # P-SpikeSSM shares (A, B) across the H channels of a layer: A, B (1, N/2), C (H, N/2)
    rng = np.random.default_rng(7)
    H, L = 3, 5
    A, B = ssm.hippo_legs_normal(4)
    A, B = A[None], B[None]
    C = rng.standard_normal((H, 2)) + 1j * rng.standard_normal((H, 2))
    dt = np.array([0.1, 0.2, 0.3])
    gK = rng.standard_normal((H, L))
    grads = ssm.kernel_vjp(ssm.kernel_fwd(A, B, C, dt, L, "bilinear")[1], gK)
    assert [g.shape for g in grads] == [A.shape, B.shape, C.shape, dt.shape]
    check_vjp(lambda A, B, C, dt: np.sum(gK * ssm.kernel(A, B, C, dt, L, "bilinear")), grads, [A, B, C, dt])


# --------------------------------------------------------------------------------------------------
# Convolutions: broadcasting, non-contiguous inputs, float32, and the spectra the backward reuses
# --------------------------------------------------------------------------------------------------

def _direct_convs(u, Kf, Kb):
    """The causal and anti-causal sums written out (float64), broadcasting u, Kf, Kb."""
    L = u.shape[-1]
    shape = np.broadcast_shapes(u.shape, Kf.shape, Kb.shape)
    causal, anti = np.zeros(shape), np.zeros(shape)
    for t in range(L):
        for j in range(t + 1):
            causal[..., t] += Kf[..., j] * u[..., t - j]
        for d in range(1, L - t):
            anti[..., t] += Kb[..., d - 1] * u[..., t + d]
    return causal, anti


@settings(max_examples=30, deadline=None)
@given(L=st.one_of(st.just(1), st.integers(1, 45)), B=st.integers(1, 3), H=st.integers(1, 4),
       transposed=st.booleans(), seed=st.integers(0, 2**31))
def test_convolutions_broadcast_and_non_contiguous(L, B, H, transposed, seed):
    # u (B, H, L) against kernels (H, L), possibly views with odd strides; gradients against the adjoint
    # identity <g, conv(u, K)> = <gu, u> = <gK, K> (the convolution is bilinear)
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((L, H, B)).T if transposed else rng.standard_normal((B, H, 2 * L))[..., ::2]
    Kf, Kb = rng.standard_normal((H, 2 * L))[:, ::2], rng.standard_normal((L, H)).T
    causal, anti = _direct_convs(u, Kf, Kb)
    g = rng.standard_normal(causal.shape)
    y, ctx = ssm.causal_conv_fwd(u, Kf)
    np.testing.assert_allclose(y, causal, atol=1e-12 * max(1, np.abs(causal).max()))
    gu, gK = ssm.causal_conv_vjp(ctx, g)
    assert gu.shape == u.shape and gK.shape == Kf.shape
    np.testing.assert_allclose([np.sum(gu * u), np.sum(gK * Kf)], np.sum(g * causal), rtol=1e-10, atol=1e-10)
    y, ctx = ssm.bidirectional_conv_fwd(u, Kf, Kb)
    np.testing.assert_allclose(y, causal + anti, atol=1e-12 * max(1, np.abs(causal + anti).max()))
    gu, gKf, gKb = ssm.bidirectional_conv_vjp(ctx, g)
    assert gu.shape == u.shape and gKf.shape == Kf.shape and gKb.shape == Kb.shape
    assert np.all(gKb[..., -1] == 0)                                            # K_bwd[L-1] is never used
    np.testing.assert_allclose([np.sum(gu * u), np.sum(gKf * Kf) + np.sum(gKb * Kb)], np.sum(g * (causal + anti)),
                               rtol=1e-10, atol=1e-10)


def test_conv_fft_length_is_fast_and_linear():
    for L in (1, 2, 3, 7, 64, 1000, 1024, 4097):
        n = ssm.conv_length(L)
        assert n >= 2 * L - 1 and n == scipy.fft.next_fast_len(2 * L - 1, real=True)
    # an impulse at the last step sees neither wrap-around nor the anti-causal part of the two-sided kernel
    L = 8
    u = np.zeros(L)
    u[-1] = 1.0
    np.testing.assert_allclose(ssm.bidirectional_conv(u, np.ones(L), np.full(L, 2.0)), [2] * 7 + [1], atol=1e-14)


# float32: the convolutions run in single precision (complex64 spectra). Tolerance: 2e-6 of the largest
# entry of the float64 result, for outputs and gradients (measured on N(0, 1) inputs: <= 3e-7 for
# 1 <= L <= 16384; a float32 FFT's rounding grows like log n, not like L).
F32_TOL = 2e-6


@pytest.mark.parametrize("L", [1, 5, 64, 1000])
def test_float32_convolutions_stay_float32(L):
    rng = np.random.default_rng(L)
    u, Kf, Kb = rng.standard_normal((2, 3, L)), rng.standard_normal((3, L)), rng.standard_normal((3, L))
    g = rng.standard_normal((2, 3, L))
    f32 = [x.astype(np.float32) for x in (u, Kf, Kb, g)]
    for fwd, vjp, n_in in ((ssm.causal_conv_fwd, ssm.causal_conv_vjp, 2),
                           (ssm.bidirectional_conv_fwd, ssm.bidirectional_conv_vjp, 3)):
        y64, ctx64 = fwd(*(u, Kf, Kb)[:n_in])
        y32, ctx32 = fwd(*f32[:n_in])
        assert y32.dtype == np.float32 and ctx32[0].dtype == ctx32[1].dtype == np.complex64
        np.testing.assert_allclose(y32, y64, rtol=0, atol=F32_TOL * np.abs(y64).max())
        for a, b in zip(vjp(ctx32, f32[3]), vjp(ctx64, g)):
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=0, atol=F32_TOL * np.abs(b).max())
    # trusted callers (the training loop) get float32 through without copies; mixed dtypes compute in float64
    with _checks.trusted():
        assert ssm.causal_conv(f32[0], f32[1]).dtype == np.float32
        assert ssm.causal_conv(f32[0], Kf).dtype == np.float64
    assert ssm.causal_conv(f32[0], Kf).dtype == np.float64


def test_conv_backward_reuses_the_forward_spectra(monkeypatch):
    # count the FFTs: a forward is rfft(u), rfft(K), one irfft; its VJP one rfft (of gy) and two irffts, so
    # neither rfft(u) nor rfft(K) is recomputed. The bidirectional conv is one FFT product too.
    calls = []
    for name in ("rfft", "irfft", "fft", "ifft"):
        f = getattr(scipy.fft, name)
        monkeypatch.setattr(scipy.fft, name, lambda *a, _f=f, _n=name, **k: calls.append(_n) or _f(*a, **k))
    rng = np.random.default_rng(0)
    u, K, g = rng.standard_normal((2, 3, 16)), rng.standard_normal((3, 16)), rng.standard_normal((2, 3, 16))
    for fwd, vjp, kernels in ((ssm.causal_conv_fwd, ssm.causal_conv_vjp, (K,)),
                              (ssm.bidirectional_conv_fwd, ssm.bidirectional_conv_vjp, (K, K))):
        calls.clear()
        _, ctx = fwd(u, *kernels)
        assert sorted(calls) == ["irfft", "rfft", "rfft"]
        calls.clear()
        vjp(ctx, g)
        assert sorted(calls) == ["irfft", "irfft", "rfft"]


def test_kernel_vjp_reuses_the_forward(monkeypatch):
    # the kernel's VJP takes the discretisation and the Vandermonde matrix from its ctx
    rng = np.random.default_rng(8)
    p = ssm.init_diag(2, 4, rng=rng)
    _, ctx = ssm.kernel_fwd(p["A"], p["B"], p["C"], np.exp(p["log_dt"]), 6)
    for name in ("vandermonde", "_discretize", "discretize"):
        monkeypatch.setattr(ssm, name, lambda *a, **k: pytest.fail("the VJP recomputed its forward"))
    ssm.kernel_vjp(ctx, rng.standard_normal((2, 6)))


def test_kernel_computes_in_double_whatever_the_parameter_dtype():
    rng = np.random.default_rng(9)
    p = ssm.init_diag(2, 8, rng=rng)
    dt = np.exp(p["log_dt"])
    args64 = (p["A"], p["B"], p["C"], dt, 3000)
    args32 = tuple(x.astype(np.complex64) for x in args64[:3]) + (dt.astype(np.float32), 3000)
    with _checks.trusted():
        K32, ctx = ssm.kernel_fwd(*args32)
        grads = ssm.kernel_vjp(ctx, np.ones((2, 3000), np.float32))
    assert K32.dtype == np.float64 and [g.dtype for g in grads] == [np.complex128] * 3 + [np.float64]
    K = ssm.kernel(*(x.astype(np.complex64).astype(np.complex128) for x in args64[:3]),
                   dt.astype(np.float32).astype(np.float64), 3000)
    np.testing.assert_allclose(K32, K, rtol=1e-12, atol=1e-12 * np.abs(K).max())
