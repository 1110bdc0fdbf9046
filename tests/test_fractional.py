"""refssm.fractional against closed forms and independent formulations.

Expected values come from closed forms (Γ-function formulas, Mittag-Leffler identities, Euler
recurrences written here), from pymittagleffler, or from a second formulation (recursion vs power-series
inversion, direct sum vs FFT, matrix exponential vs closed-form sum), never from the function under test.
"""

import numpy as np
import pytest
from hypothesis import assume, example, given, settings, strategies as st
from scipy import special

from refssm import fractional as F

SETTINGS = settings(max_examples=30, deadline=None)


def observed_order(errors, steps):
    """Slope of log(error) against log(step): the observed order of accuracy."""
    return np.polyfit(np.log(steps), np.log(errors), 1)[0]


def grid(h, T=1.0):
    return np.arange(int(round(T / h)) + 1) * h


STEPS = 1.0 / np.array([64, 128, 256, 512, 1024])


# ----------------------------------------------------------------------------------------------------
# Grünwald–Letnikov


@pytest.mark.parametrize("alpha", [0.3, 0.5, 1.0, 1.6])
def test_gl_weights_closed_forms(alpha):
    n = 60
    w = F.gl_weights(alpha, n)
    k = np.arange(n)
    np.testing.assert_allclose(w, (-1.0) ** k * special.binom(alpha, k), rtol=1e-12, atol=1e-15)
    # partial sums Σ_{k<=m} w_k = binom(m − α, m)   (binom(x, 0) = 1, which scipy leaves NaN at x = −1)
    partial = np.where(k == 0, 1.0, special.binom(k - alpha, k))
    np.testing.assert_allclose(np.cumsum(w), partial, rtol=1e-11, atol=1e-14)
    # generating function (1 − z)^α at z = 1/2
    np.testing.assert_allclose((F.gl_weights(alpha, 200) * 0.5 ** np.arange(200)).sum(), 0.5 ** alpha, rtol=1e-13)


@SETTINGS
@given(shape=st.lists(st.integers(1, 3), max_size=2), L=st.integers(1, 300), K=st.integers(1, 320),
       seed=st.integers(0, 2 ** 31))
def test_memory_sum_direct_equals_fft_and_numpy_convolve(shape, L, K, seed):
    rng = np.random.default_rng(seed)
    w, f = rng.standard_normal(K), rng.standard_normal((*shape, L))
    direct = F.memory_sum(w, f)
    np.testing.assert_allclose(F.memory_sum(w, f, "fft"), direct, rtol=1e-10, atol=1e-11 * np.abs(w).sum())
    flat = f.reshape(-1, L)
    conv = np.stack([np.convolve(w, row)[:L] for row in flat]).reshape(f.shape)
    np.testing.assert_allclose(direct, conv, rtol=1e-12, atol=1e-13 * np.abs(w).sum())


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_gl_is_linear_not_circular(method):
    # differint's example (reference notes ecosystem §1.10): D^0.5 sqrt(t) = Γ(1.5) for every t > 0;
    # a circular FFT gives -9.45 / -2.29 / 0.278 at indices 1 / 10 / 100
    t = np.linspace(0.0, 1.0, 512)
    D = F.gl_derivative(np.sqrt(t), 0.5, t[1], method)
    np.testing.assert_allclose(D[[10, 100, 256, 511]], special.gamma(1.5), rtol=3e-3)
    assert abs(D[1] - 1.0) < 1e-12                      # w_0 sqrt(h)/sqrt(h) exactly


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.8, 1.3, 1.7])
@pytest.mark.parametrize("p", [1.0, 2.0, 3.5])
def test_gl_derivative_and_integral_of_power_first_order(alpha, p):
    d_err, i_err = [], []
    D_exact = special.gamma(p + 1) / special.gamma(p + 1 - alpha)             # at t = 1
    I_exact = special.gamma(p + 1) / special.gamma(p + 1 + alpha)
    for h in STEPS:
        f = grid(h) ** p
        d_err.append(abs(F.gl_derivative(f, alpha, h, "fft")[-1] - D_exact))
        i_err.append(abs(F.gl_integral(f, alpha, h, "fft")[-1] - I_exact))
    assert 0.9 < observed_order(d_err, STEPS) < 1.1
    assert 0.9 < observed_order(i_err, STEPS) < 1.1
    assert d_err[-1] < 5e-3 * special.gamma(p + 1) and i_err[-1] < 5e-3


def test_gl_direct_equals_fft():
    f = np.random.default_rng(0).standard_normal((2, 3, 400))
    for alpha in (0.4, 1.5):
        np.testing.assert_allclose(F.gl_derivative(f, alpha, 0.01, "fft"), F.gl_derivative(f, alpha, 0.01),
                                   rtol=1e-9, atol=1e-9)


def test_gl_of_constant_is_binomial_partial_sum():
    # h^-α Σ_{k<=n} w_k = h^-α binom(n − α, n) -> t^-α/Γ(1 − α) = caputo_rl_correction(1, α, t)
    alpha, h = 0.6, 1e-3
    n = np.arange(1001)
    D = F.gl_derivative(np.ones(1001), alpha, h)
    np.testing.assert_allclose(D, h ** -alpha * special.binom(n - alpha, n), rtol=1e-11)
    t = n[1:] * h
    rel = np.abs(D[1:] / F.caputo_rl_correction(1.0, alpha, t) - 1)
    assert rel[-1] < 1e-3 and rel[-1] < rel[10] < rel[0]


# ----------------------------------------------------------------------------------------------------
# Caputo L1


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_l1_exact_for_linear_and_zero_for_constant(alpha):
    h = 0.01
    t = grid(h)
    np.testing.assert_allclose(F.caputo_l1(3.0 * t - 2.0, alpha, h)[1:],
                               3.0 * t[1:] ** (1 - alpha) / special.gamma(2 - alpha), rtol=1e-12)
    assert np.all(F.caputo_l1(np.full(50, 7.0), alpha, h) == 0.0)


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("p", [2.0, 3.0])
def test_l1_order_two_minus_alpha(alpha, p):
    errs = [abs(F.caputo_l1(grid(h) ** p, alpha, h)[-1] - special.gamma(p + 1) / special.gamma(p + 1 - alpha))
            for h in STEPS]
    assert abs(observed_order(errs, STEPS) - (2 - alpha)) < 0.1


@pytest.mark.parametrize("alpha", [0.3, 0.7])
def test_caputo_plus_correction_is_riemann_liouville(alpha):
    # f = 1 + t²: RL D^α f = t^-α/Γ(1−α) + 2 t^(2−α)/Γ(3−α); Caputo drops the first term
    h = 1e-3
    t = grid(h)
    f = 1.0 + t ** 2
    rl = t[1:] ** -alpha / special.gamma(1 - alpha) + 2 * t[1:] ** (2 - alpha) / special.gamma(3 - alpha)
    caputo = F.caputo_l1(f, alpha, h)[1:]
    np.testing.assert_allclose(caputo, rl - t[1:] ** -alpha / special.gamma(1 - alpha), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose((caputo + F.caputo_rl_correction(1.0, alpha, t[1:]))[100:], rl[100:], rtol=1e-4)
    np.testing.assert_allclose(F.gl_derivative(f, alpha, h)[-1], rl[-1], rtol=2e-3)


# ----------------------------------------------------------------------------------------------------
# Mittag-Leffler


def test_ml_identities():
    x = np.linspace(-20, 20, 81)
    np.testing.assert_allclose(F.mittag_leffler(x, 1.0), np.exp(x), rtol=1e-12, atol=1e-15)
    z = x[::4] + 1j * np.linspace(-15, 15, 21)
    np.testing.assert_allclose(F.mittag_leffler(z, 1.0), np.exp(z), rtol=1e-12, atol=1e-15)
    y = np.linspace(0, 40, 161)
    np.testing.assert_allclose(F.mittag_leffler(-y ** 2, 2.0), np.cos(y), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(F.mittag_leffler(y ** 2, 2.0)[:40], np.cosh(y[:40]), rtol=1e-12)
    r = np.concatenate([np.linspace(0, 50, 101), np.geomspace(50, 1e5, 40)])
    np.testing.assert_allclose(F.mittag_leffler(-r, 0.5), special.erfcx(r), rtol=1e-12)
    z = np.concatenate([x[x != 0], 3.0 * np.exp(1j * np.linspace(-3, 3, 13))])
    np.testing.assert_allclose(F.mittag_leffler(z, 1.0, 2.0), np.expm1(z) / z, rtol=1e-12, atol=1e-15)


def test_ml_series_small_argument():
    # an independent formulation: the defining power series, convergent and well conditioned for |z| <= 1/2
    rng = np.random.default_rng(3)
    z = 0.5 * np.sqrt(rng.uniform(0, 1, 40)) * np.exp(2j * np.pi * rng.uniform(0, 1, 40))
    k = np.arange(120)
    for alpha, beta in [(0.1, 0.1), (0.45, 1.0), (0.9, 1.9), (1.5, 0.7), (2.0, 2.5), (0.7, -0.4), (0.125, 3.0),
                        (0.8, 4.0), (0.3, 5.5)]:
        series = (z[:, None] ** k * special.rgamma(alpha * k + beta)).sum(axis=1)
        np.testing.assert_allclose(F.mittag_leffler(z, alpha, beta), series, rtol=1e-12, atol=1e-14)


def test_ml_real_in_real_out():
    E = F.mittag_leffler(np.linspace(-5, 1, 7), 0.6, 0.6)
    assert E.dtype == np.float64
    assert F.mittag_leffler(np.array([-1.0 + 0j]), 0.6).dtype == np.complex128


@settings(max_examples=40, deadline=None)
@given(alpha=st.floats(0.05, 2.0), beta_kind=st.sampled_from(["alpha", "one", "alpha+1", "free"]),
       beta_free=st.floats(0.1, 3.0), log_r=st.floats(-3, 4), arg=st.floats(np.pi / 2, np.pi),
       sign=st.sampled_from([-1, 1]))
def test_ml_against_pymittagleffler_in_left_half_plane(alpha, beta_kind, beta_free, log_r, arg, sign):
    # the SSM sector: z = λ t^α with Re λ <= 0
    pm = pytest.importorskip("pymittagleffler")
    beta = {"alpha": alpha, "one": 1.0, "alpha+1": alpha + 1.0, "free": beta_free}[beta_kind]
    z = 10.0 ** log_r * np.exp(1j * sign * arg)
    ref = complex(pm.mittag_leffler(z, alpha, beta))
    E = F.mittag_leffler(np.array([z]), alpha, beta)[0]
    assert abs(E - ref) <= 1e-11 * abs(ref) + 1e-14


@pytest.mark.parametrize("alpha", [0.3, 0.7, 1.2, 1.8])
def test_ml_against_pymittagleffler_all_arguments(alpha):
    pm = pytest.importorskip("pymittagleffler")
    r, th = np.meshgrid(np.geomspace(1e-2, 30, 12), np.linspace(-np.pi, np.pi, 25))
    z = (r * np.exp(1j * th)).ravel()
    for beta in (1.0, alpha, 2.2):
        ref = np.array([complex(pm.mittag_leffler(v, alpha, beta)) for v in z])
        np.testing.assert_allclose(F.mittag_leffler(z, alpha, beta), ref, rtol=1e-11, atol=1e-13)


def test_responses_at_alpha_one():
    lam = np.array([-0.5 + 2j, -3.0, 0.2j])
    t = np.linspace(0.01, 5, 30)[:, None]
    np.testing.assert_allclose(F.ml_impulse_response(lam, 1.0, t), np.exp(lam * t), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(F.ml_step_response(lam, 1.0, t), np.expm1(lam * t) / lam, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------------------
# GL-discretised fractional SSM


def euler_kernels(lam, dt, L):
    """Backward and forward Euler impulse responses, written as recurrences."""
    lam = np.asarray(lam, complex)
    back, fwd = np.zeros(lam.shape + (L,), complex), np.zeros(lam.shape + (L,), complex)
    xb = xf = np.zeros(lam.shape, complex)
    for n in range(L):
        u = 1.0 if n == 0 else 0.0
        xb = (xb + dt * u) / (1 - dt * lam)          # x_n = (x_{n−1} + dt u_n)/(1 − dt λ)
        xf = (1 + dt * lam) * xf + dt * u            # x_n = (1 + dt λ) x_{n−1} + dt u_n
        back[..., n], fwd[..., n] = xb, xf
    return back, fwd


def test_alpha_one_is_euler():
    lam = np.array([[-0.5 + 3j, -2.0 - 1j], [-0.01 + 0j, -10 + 50j]])
    dt = np.array([[0.1], [0.01]])
    back, fwd = euler_kernels(lam, dt, 200)
    for k in (F.fssm_kernel(lam, 1.0, dt, 200), F.gl_kernel_recursion(lam, 1.0, dt, 200)):
        np.testing.assert_allclose(k, back, rtol=1e-12, atol=1e-15)
    for k in (F.fssm_kernel(lam, 1.0, dt, 200, "gl_explicit"), F.gl_kernel_recursion(lam, 1.0, dt, 200, True)):
        np.testing.assert_allclose(k, fwd, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["gl", "gl_explicit", "exact"])
def test_alpha_to_one_continuity(method):
    lam, dt, L = np.array([-0.5 + 3j, -2.0]), 0.05, 100
    k1 = F.fssm_kernel(lam, 1.0, dt, L, method)
    gaps = [np.abs(F.fssm_kernel(lam, 1.0 + s * eps, dt, L, method) - k1).max() for eps in (1e-2, 1e-4, 1e-6)
            for s in (-1, 1)]
    # Lipschitz in α: each 100× smaller step in α gives a ~100× smaller change, on both sides of 1
    assert gaps[0] < 0.05
    for before, after in zip(gaps[:-2], gaps[2:]):
        assert 30 < before / after < 300


def test_gl_kernel_at_lambda_zero_is_binomial():
    # λ = 0: k = dt^α (1 − z)^−α, coefficients binom(n + α − 1, n)
    alpha, dt, n = 0.35, 0.2, np.arange(300)
    expected = dt ** alpha * special.binom(n + alpha - 1, n)
    np.testing.assert_allclose(F.gl_kernel(0.0, alpha, dt, 300), expected, rtol=1e-12)
    np.testing.assert_allclose(F.gl_kernel_recursion(0.0, alpha, dt, 300), expected, rtol=1e-12)


lam_strategy = st.tuples(st.floats(-50, -1e-3), st.floats(-100, 100)).map(lambda p: complex(*p))


@SETTINGS
@given(alpha=st.floats(0.01, 1.0), lam=st.lists(lam_strategy, min_size=1, max_size=3),
       dt=st.floats(1e-3, 1.0), L=st.integers(1, 4096))
@example(alpha=0.5, lam=[-0.01 + 30j, -20.0 + 0j, -1e-3 + 0j], dt=1e-3, L=4096)
@example(alpha=1.0, lam=[-0.5 + 100j], dt=0.01, L=4096)
def test_gl_kernel_newton_equals_recursion(alpha, lam, dt, L):
    k_fast = F.gl_kernel(lam, alpha, dt, L)
    k_rec = F.gl_kernel_recursion(lam, alpha, dt, L)
    assert np.all(np.abs(k_fast - k_rec).max(-1) <= 1e-10 * np.abs(k_rec).max(-1))


@SETTINGS
@given(alpha=st.floats(0.01, 1.0), lam=st.lists(lam_strategy, min_size=1, max_size=3),
       dt=st.floats(1e-3, 0.1), L=st.integers(1, 600), explicit=st.booleans(),
       memory=st.one_of(st.none(), st.integers(1, 700)))
def test_gl_kernel_variants_newton_equal_recursion(alpha, lam, dt, L, explicit, memory):
    with np.errstate(over="ignore", invalid="ignore"):
        k_rec = F.gl_kernel_recursion(lam, alpha, dt, L, explicit, memory)
    # outside its stability region the explicit scheme grows (even overflows): no test of accuracy there
    assume(np.all(np.abs(k_rec[..., L // 2:]).max(-1) <= 2 * np.abs(k_rec[..., :L // 2 + 1]).max(-1)))
    k_fast = F.gl_kernel(lam, alpha, dt, L, explicit, memory)
    assert np.all(np.abs(k_fast - k_rec).max(-1) <= 1e-10 * np.abs(k_rec).max(-1))


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8, 1.0, 1.4, 1.9])
def test_gl_kernel_converges_to_ml_impulse_response(alpha):
    lam = np.array([-0.7, -0.3 + 2j, -2 - 1j])
    G = F.ml_impulse_response(lam, alpha, 1.0)
    dts = 1.0 / np.array([32, 64, 128, 256, 512])
    errs = [np.abs(F.fssm_kernel(lam, alpha, dt, int(round(1 / dt)) + 1)[:, -1] / dt - G).max() for dt in dts]
    assert 0.9 < observed_order(errs, dts) < 1.1
    assert errs[-1] < 1e-2


def test_short_memory_error_is_measured():
    lam, alpha, dt, L = np.array([-0.5 + 1j, -0.05]), 0.6, 0.05, 2048
    full = F.gl_kernel(lam, alpha, dt, L)
    np.testing.assert_array_equal(F.gl_kernel_recursion(lam, alpha, dt, L, memory=L - 1),
                                  F.gl_kernel_recursion(lam, alpha, dt, L))
    errors = [np.abs(F.gl_kernel(lam, alpha, dt, L, memory=K) - full).max() / np.abs(full).max()
              for K in (8, 32, 128, 512)]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert errors[0] > 1e-3                              # truncating the memory is not free


@pytest.mark.parametrize("alpha", [0.3, 0.6, 0.9, 1.0])
def test_relaxation_matches_mittag_leffler(alpha):
    lam = np.array([0.5, 2.0, 1.0 + 3j])                 # D^α y = −λ y, y(0) = 1  ->  E_α(−λ t^α)
    dts = 1.0 / np.array([32, 64, 128, 256, 512])
    errs = []
    for dt in dts:
        y = F.gl_solve(-lam, alpha, dt, np.zeros(int(round(1 / dt)) + 1), x0=1.0)
        errs.append(np.abs(y[:, -1] - F.mittag_leffler(-lam, alpha)).max())
    assert 0.9 < observed_order(errs, dts) < 1.1 and errs[-1] < 5e-3
    t = np.arange(513) / 512
    y = F.gl_solve(-lam[:1], alpha, 1 / 512, np.zeros(513), x0=1.0)[0]
    np.testing.assert_allclose(y, F.mittag_leffler(-lam[0] * t ** alpha, alpha), atol=2e-2)


def test_gl_solve_with_input_is_convolution_with_kernel():
    rng = np.random.default_rng(4)
    lam, alpha, dt, L = np.array([-0.4 + 1j, -1.5]), 0.7, 0.02, 300
    u = rng.standard_normal((2, L))
    x = F.gl_solve(lam, alpha, dt, u)
    k = F.gl_kernel(lam, alpha, dt, L)
    conv = np.stack([np.convolve(k[i], u[i, 1:])[:L - 1] for i in range(2)])
    np.testing.assert_allclose(x[:, 1:], conv, rtol=1e-10, atol=1e-12)
    assert np.all(x[:, 0] == 0)


# ----------------------------------------------------------------------------------------------------
# exact (ZOH) kernel and the sum-of-exponentials forms


def test_exact_kernel_closed_forms():
    lam, dt, n = np.array([-0.5 + 3j, -2.0]), 0.1, np.arange(80)
    zoh = np.exp(lam[:, None] * n * dt) * np.expm1(lam[:, None] * dt) / lam[:, None]   # S4D ZOH
    np.testing.assert_allclose(F.exact_kernel(lam, 1.0, dt, 80), zoh, rtol=1e-11, atol=1e-14)
    alpha = 0.4                                          # λ = 0: increments of t^α/Γ(α+1)
    np.testing.assert_allclose(F.exact_kernel(0.0, alpha, dt, 80),
                               dt ** alpha * ((n + 1) ** alpha - n ** alpha) / special.gamma(alpha + 1), rtol=1e-12)


def test_gl_and_exact_kernels_agree_to_first_order():
    lam, alpha = np.array([-0.5 + 2j]), 0.6
    errs = []
    dts = 1.0 / np.array([50, 100, 200, 400])
    for dt in dts:
        L = int(round(2 / dt))
        diff = F.gl_kernel(lam, alpha, dt, L) - F.exact_kernel(lam, alpha, dt, L)
        errs.append(np.abs(diff[:, L // 2:]).max() / dt)            # t in [1, 2]; both are ~ dt G(t)
    assert 0.8 < observed_order(errs, dts) < 1.2


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9])
def test_soe_quadrature_mass(alpha):
    # ∫_0^T k_α = T^α/Γ(α+1); the SOE carries d0 + Σ η (1 − e^{−ω T})/ω
    L = 1000
    T = np.geomspace(1, L, 20)[:, None]
    exact = T[:, 0] ** alpha / special.gamma(alpha + 1)
    errs = []
    for M in (16, 32, 64, 128):
        omega, eta, d0 = F.soe_quadrature(alpha, M, L)
        errs.append(np.abs(d0 + (eta * -np.expm1(-omega * T) / omega).sum(1) - exact).max() / exact.max())
    assert all(a > b for a, b in zip(errs, errs[1:])) and errs[-1] < {0.1: 1e-10, 0.5: 1e-8, 0.9: 1e-4}[alpha]


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.8])
def test_coupled_soe_converges_to_caputo_and_decoupled_does_not(alpha):
    lam, dt, L = np.array([-0.5 + 3j, -2.0 + 0.5j]), 0.05, 200
    coupled = [F.fssm_gap(lam, alpha, dt, L, "soe_coupled", M=M).max() for M in (8, 32, 96)]
    decoupled = [F.fssm_gap(lam, alpha, dt, L, "soe_decoupled", M=M).min() for M in (8, 32, 96)]
    assert coupled[0] > coupled[1] > coupled[2] and coupled[2] < {0.1: 1e-6, 0.5: 1e-5, 0.8: 1e-3}[alpha]
    assert decoupled[2] > 0.3 and decoupled[2] >= decoupled[0]


def test_coupled_equals_decoupled_where_they_must():
    rng = np.random.default_rng(5)
    lam, dt, L = np.array([[-0.5 + 3j, -1.0]]), np.array([[0.1]]), 60
    omega, eta = rng.uniform(0.1, 5, 1), rng.uniform(0.1, 2, 1)
    # one branch: the coupling is the branch's own feedback
    np.testing.assert_allclose(F.soe_coupled_kernel(lam, dt, L, omega, eta),
                               F.soe_decoupled_kernel(lam, dt, L, omega, eta), rtol=1e-12, atol=1e-14)
    # λ = 0: both are the ZOH of the SOE integrator Σ η e^{−ω t}, closed form
    omega, eta = rng.uniform(0.1, 5, 4), rng.uniform(0.1, 2, 4)
    n = np.arange(L)
    integrator = (eta * -np.expm1(-omega * 0.1) / omega * np.exp(-omega * 0.1 * n[:, None])).sum(1)
    np.testing.assert_allclose(F.soe_coupled_kernel(0.0, 0.1, L, omega, eta), integrator, rtol=1e-12)
    np.testing.assert_allclose(F.soe_decoupled_kernel(0.0, 0.1, L, omega, eta), integrator, rtol=1e-12)


# ----------------------------------------------------------------------------------------------------
# LongSpike's public code


def longspike_recurrence(A, C, dt, omega, eta, L):
    """The code's kernel as its recurrence (reference notes longspike §2.2), augmented modes (m, n)
    flattened the way the code lays them out, driven by a unit impulse."""
    A_frac = (-omega[:, None] + eta[:, None] * A[:, None, :]).reshape(A.shape[0], -1)     # (H, M·N/2)
    C_frac = (eta[:, None] * C[:, :, None, :]).reshape(C.shape[0], A.shape[0], -1)       # (c, H, M·N/2)
    dtA = dt[:, None] * A_frac
    x = np.zeros(A_frac.shape, complex)
    K = np.zeros((C.shape[0], A.shape[0], L))
    for k in range(L):
        x = np.exp(dtA) * x + np.expm1(dtA) / A_frac * (1.0 if k == 0 else 0.0)
        K[..., k] = 2 * (C_frac * x).sum(-1).real
    return K


def test_longspike_kernel_is_the_code_recurrence():
    rng = np.random.default_rng(6)
    H, N2, L = 3, 4, 50
    A = -0.5 + 1j * np.pi * np.arange(N2) * np.ones((H, 1))                    # S4D-Lin
    C = (rng.standard_normal((2, H, N2)) + 1j * rng.standard_normal((2, H, N2))) / np.sqrt(2)
    dt = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), H))
    omega, eta = F.longspike_omega_eta(*F.longspike_logits([0.0, 0.1], [1.0, 0.1]))
    np.testing.assert_allclose(F.longspike_kernel(A, C, dt, omega, eta, L),
                               longspike_recurrence(A, C, dt, omega, eta, L), rtol=1e-10, atol=1e-12)
    # M = 1, ω = 0, η = 1 is the S4D ZOH kernel 2 Re Σ C (e^{dt A} − 1)/A e^{dt A ℓ}
    s4d = 2 * np.einsum("chn,hnl->chl", C, (np.expm1(dt[:, None] * A) / A)[..., None]
                        * np.exp(dt[:, None, None] * A[..., None] * np.arange(L))).real
    np.testing.assert_allclose(F.longspike_kernel(A, C, dt, [0.0], [1.0], L), s4d, rtol=1e-12, atol=1e-13)


def test_longspike_default_parameters():
    # reference notes longspike §2.3: effective ω ≈ [1.01e-4, 0.1], η = [1, 0.1] on the main branch
    omega, eta = F.longspike_omega_eta(*F.longspike_logits([0.0, 0.1], [1.0, 0.1]))
    np.testing.assert_allclose(omega, [1.01e-4, 0.1], rtol=1e-3)
    np.testing.assert_allclose(eta, [1.0, 0.1], rtol=1e-6)


def test_longspike_small_rate_branch_uses_dt():
    # |A_frac| < 1e-6: the code replaces (e^{dt a} − 1)/a by dt
    lam, dt = np.array([1e-8j]), 0.3
    k = F.soe_decoupled_kernel(lam, dt, 5, [1e-9], [2.0])
    a = 2.0 * lam[0] - 1e-9
    np.testing.assert_array_equal(k[0], 2.0 * dt * np.exp(a * dt * np.arange(5)))


# ----------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("call", [
    lambda: F.gl_derivative(np.ones(5), 0.0, 0.1),
    lambda: F.gl_derivative(np.ones(5), 2.0, 0.1),
    lambda: F.gl_integral(np.ones(5), -0.5, 0.1),
    lambda: F.gl_weights(2.5, 10),
    lambda: F.gl_weights(0.5, 0),
    lambda: F.gl_derivative(np.ones(5), 0.5, 0.0),
    lambda: F.gl_derivative(np.ones(5), 0.5, [0.1, 0.2, 0.1, 0.3, 0.1]),     # a non-uniform grid
    lambda: F.gl_derivative(np.array([1.0, np.nan]), 0.5, 0.1),
    lambda: F.gl_derivative(np.ones(5), 0.5, 0.1, method="circular"),
    lambda: F.caputo_l1(np.ones(5), 1.0, 0.1),
    lambda: F.caputo_l1(np.ones(5), 0.5, -1.0),
    lambda: F.mittag_leffler(1.0, 2.5),
    lambda: F.mittag_leffler(1.0, 0.0),
    lambda: F.mittag_leffler(np.inf, 0.5),
    lambda: F.fssm_kernel(-1.0, 2.0, 0.1, 10),
    lambda: F.fssm_kernel(-1.0, 0.5, 0.0, 10),
    lambda: F.fssm_kernel(-1.0, 0.5, [0.1, -0.1], 10),
    lambda: F.fssm_kernel(-1.0, 0.5, 0.1, 0),
    lambda: F.fssm_kernel(-1.0, 0.5, 0.1, 10, method="caputo"),
    lambda: F.fssm_kernel(-1.0, 0.5, 0.1, 10, memory=0),
    lambda: F.fssm_kernel(-1.0, 0.5, 0.1, 10, "exact", memory=4),
    lambda: F.fssm_kernel(-1.0, 0.5, 0.1, 10, "gl", M=4),
    lambda: F.fssm_kernel(-1.0, 1.0, 0.1, 10, "soe_coupled", M=4),
    lambda: F.fssm_kernel(-1.0, 0.5, 0.1, 10, "soe_decoupled"),
    lambda: F.fssm_kernel(-1.0, 0.5, 0.1, 10, "soe_decoupled", omega=[0.1]),
    lambda: F.fssm_kernel(-1.0, 0.5, 0.1, 10, "soe_decoupled", omega=[-0.1], eta=[1.0]),
    lambda: F.gl_solve(-1.0, 1.5, 0.1, np.zeros(5)),
    lambda: F.soe_quadrature(0.5, 1, 100),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_error_messages_name_argument_and_range():
    with pytest.raises(ValueError, match=r"alpha must lie in \(0, 2\)"):
        F.fssm_kernel(-1.0, 2.5, 0.1, 8)
    with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
        F.caputo_l1(np.ones(4), 1.2, 0.1)
    with pytest.raises(ValueError, match="uniform grid"):
        F.caputo_l1(np.ones(4), 0.5, np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"dt must lie in \(0, inf\)"):
        F.gl_kernel(-1.0, 0.5, -0.1, 8)
