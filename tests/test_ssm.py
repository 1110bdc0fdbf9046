"""refssm.ssm: kernel == scan, convolutions == explicit sums, discretisation orders, VJPs."""

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings, strategies as st

from gradcheck import check_vjp
from refssm import ssm

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

    grads = ssm.kernel_vjp(gK, A, B, p["C"], dt, L, method)
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

    check_vjp(lambda u, K: np.sum(g * ssm.causal_conv(u, K)), ssm.causal_conv_vjp(g, u, Kf), [u, Kf],
              autograd_loss=lambda u, K: anp.sum(g * ag_conv(u, K)))

    def ag_bi(u, Kf, Kb):
        shifted = anp.concatenate([anp.zeros((3, 1)), Kb[:, :-1]], axis=-1)
        return ag_conv(u, Kf) + ag_conv(u[..., ::-1], shifted)[..., ::-1]

    check_vjp(lambda u, Kf, Kb: np.sum(g * ssm.bidirectional_conv(u, Kf, Kb)),
              ssm.bidirectional_conv_vjp(g, u, Kf, Kb), [u, Kf, Kb],
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
    grads = ssm.kernel_vjp(gK, A, B, C, dt, L, "bilinear")
    assert [g.shape for g in grads] == [A.shape, B.shape, C.shape, dt.shape]
    check_vjp(lambda A, B, C, dt: np.sum(gK * ssm.kernel(A, B, C, dt, L, "bilinear")), grads, [A, B, C, dt])
