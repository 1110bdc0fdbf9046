"""refssm.neurons: LIF closed forms and invariances, refractory closed form, PMBC == sequential."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from refssm import neurons

seeds = st.integers(0, 2**31)


def _lif_hard_closed_form(y, tau, s):
    """SpikingSSM eq. 10: v_t = sum_{i<=t} (prod_{j=i}^{t-1} (1 - s_j)) tau^(t-i) y_i."""
    L = y.shape[-1]
    v = np.zeros_like(y)
    for t in range(L):
        for i in range(t + 1):
            v[..., t] += np.prod(1 - s[..., i:t], axis=-1) * tau ** (t - i) * y[..., i]
    return v


@settings(max_examples=30, deadline=None)
@given(L=st.integers(1, 30), tau=st.floats(0, 0.99), scale=st.floats(0.5, 3), seed=seeds)
def test_lif_hard_reset_matches_closed_form_eq10(L, tau, scale, seed):
    y = scale * np.random.default_rng(seed).standard_normal((3, L))
    s, v = neurons.lif(y, tau)
    np.testing.assert_allclose(v, _lif_hard_closed_form(y, tau, s), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(s, (v >= 1.0).astype(float))


@settings(max_examples=30, deadline=None)
@given(L=st.integers(1, 30), tau=st.floats(0, 0.99), seed=seeds)
def test_lif_soft_reset_matches_closed_form(L, tau, seed):
    # soft reset: v_t = sum_{i<=t} tau^(t-i) x_i - v_th sum_{i<t} tau^(t-i) s_i
    x = 1.5 * np.random.default_rng(seed).standard_normal(L)
    s, v = neurons.lif(x, tau, v_th=0.7, reset="soft")
    powers = np.tril(tau ** np.subtract.outer(np.arange(L), np.arange(L)).clip(0))
    strictly = np.tril(powers, -1)
    np.testing.assert_allclose(v, powers @ x - 0.7 * strictly @ s, rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(L=st.integers(1, 40), tau=st.floats(0, 0.99), k=st.sampled_from([0.25, 0.5, 2.0, 4.0]),
       reset=st.sampled_from(["hard", "soft"]), seed=seeds)
def test_lif_threshold_scaling_property(L, tau, k, reset, seed):
    # SpikingSSM Property 1: f(k I; k v_th) = f(I; v_th) when u_0 = u_r = 0 (k a power of 2: exact)
    x = np.random.default_rng(seed).standard_normal((2, L))
    s1, v1 = neurons.lif(x, tau, v_th=0.8, reset=reset)
    s2, v2 = neurons.lif(k * x, tau, v_th=k * 0.8, reset=reset)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_allclose(v2, k * v1, rtol=1e-12, atol=1e-12)


def test_fire_at_equality_flag():
    x = np.array([1.0, 0.0, 1.0])
    assert neurons.lif(x, 0.0)[0].tolist() == [1, 0, 1]
    assert neurons.lif(x, 0.0, fire_at_equality=False)[0].tolist() == [0, 0, 0]
    assert neurons.refractory(x, 0.0, 1.0, 0.0, 0.0)[0].tolist() == [1, 0, 1]
    assert neurons.pmbc(x, 0.0, 1.0, 0.0, 0.0, fire_at_equality=False)[0].tolist() == [0, 0, 0]


def test_lif_per_channel_parameters():
    x = np.random.default_rng(0).standard_normal((4, 3, 20))
    tau, v_th = np.array([0.1, 0.5, 0.9]), np.array([0.5, 1.0, 2.0])
    s, v = neurons.lif(x, tau, v_th)
    for h in range(3):
        s_h, v_h = neurons.lif(x[:, h], tau[h], v_th[h])
        np.testing.assert_array_equal(s[:, h], s_h)
        np.testing.assert_array_equal(v[:, h], v_h)


@settings(max_examples=30, deadline=None)
@given(L=st.integers(1, 30), tau=st.floats(0, 0.99), theta_r=st.floats(0, 2), beta=st.floats(0, 0.99),
       seed=seeds)
def test_refractory_matches_closed_form(L, tau, theta_r, beta, seed):
    # m_t = sum_j tau^j x_{t-j} - sum_{d>=1} (v_th tau^d + theta_r beta^(d-1)) s_{t-d}
    x = np.random.default_rng(seed).normal(0.3, 1.0, L)
    v_th = 0.9
    s, m = neurons.refractory(x, tau, v_th, theta_r, beta)
    d = np.subtract.outer(np.arange(L), np.arange(L))
    a = np.tril(tau ** d.clip(0)) @ x
    kappa = np.where(d >= 1, v_th * tau ** d.clip(0) + theta_r * beta ** (d - 1).clip(0), 0.0)
    np.testing.assert_allclose(m, a - kappa @ s, rtol=1e-10, atol=1e-10)


def test_refractory_without_refractoriness_is_soft_lif():
    x = np.random.default_rng(1).standard_normal((3, 50))
    s, m = neurons.refractory(x, 0.4, 1.2, 0.0, 0.7)
    s_lif, v_lif = neurons.lif(x, 0.4, 1.2, reset="soft")
    np.testing.assert_array_equal(s, s_lif)
    np.testing.assert_allclose(m, v_lif, rtol=1e-14, atol=1e-14)


# inputs drawn from a lattice make exact ties with the threshold common
lattice = st.sampled_from([-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), B=st.integers(1, 3), L=st.integers(1, 60), tau=st.floats(0, 0.99),
       theta_r=st.floats(0, 1.5), beta=st.floats(0, 0.99), v_th=st.floats(0.1, 2.0),
       eq=st.booleans(), on_lattice=st.booleans(), seed=seeds)
def test_pmbc_equals_sequential_bit_for_bit(data, B, L, tau, theta_r, beta, v_th, eq, on_lattice, seed):
    if on_lattice:
        x = np.array(data.draw(st.lists(lattice, min_size=B * L, max_size=B * L))).reshape(B, L)
        v_th = 1.0
    else:
        x = np.random.default_rng(seed).normal(0.2, 1.0, (B, L))
    s, m = neurons.refractory(x, tau, v_th, theta_r, beta, fire_at_equality=eq)
    s_p, m_p, iterations = neurons.pmbc(x, tau, v_th, theta_r, beta, fire_at_equality=eq)
    np.testing.assert_array_equal(s_p, s)
    np.testing.assert_array_equal(m_p, m)
    assert 1 <= iterations <= L


def test_pmbc_iterations_are_few_for_small_tau():
    # reference notes B3 table: tau = 0.125, theta_r = 0, x ~ N(0, 1), B = 16, L = 1024 -> 3 iterations
    x = np.random.default_rng(0).standard_normal((16, 1024))
    s, m, iterations = neurons.pmbc(x, 0.125, 1.0, 0.0, 0.0)
    np.testing.assert_array_equal(s, neurons.refractory(x, 0.125, 1.0, 0.0, 0.0)[0])
    assert iterations <= 5


def test_stochastic_rate_matches_clamped_probability():
    rng = np.random.default_rng(0)
    p = np.array([-0.3, 0.0, 0.05, 0.2, 0.5, 0.7, 0.99, 1.0, 1.4])
    n = 200_000
    s = neurons.stochastic(np.broadcast_to(p[:, None], (p.size, n)), rng)
    rate, q = s.mean(axis=1), np.clip(p, 0, 1)
    # 5 standard errors of a Bernoulli mean: a false failure has probability < 1e-6 per entry
    assert np.all(np.abs(rate - q) <= 5 * np.sqrt(q * (1 - q) / n)), (rate, q)
    assert set(np.unique(s)) <= {0.0, 1.0}


def test_stochastic_is_reproducible_from_rng():
    p = np.full((4, 10), 0.5)
    a = neurons.stochastic(p, np.random.default_rng(7))
    b = neurons.stochastic(p, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


X = np.ones((2, 5))


@pytest.mark.parametrize("call, match", [
    (lambda: neurons.lif(np.ones(()), 0.5), "x"),
    (lambda: neurons.lif(np.ones((2, 0)), 0.5), "x"),
    (lambda: neurons.lif([1.0, np.nan], 0.5), "x"),
    (lambda: neurons.lif(X, 1.0), "tau"),
    (lambda: neurons.lif(X, -0.1), "tau"),
    (lambda: neurons.lif(X, 0.5, v_th=0.0), "v_th"),
    (lambda: neurons.lif(X, 0.5, reset="zero"), "reset"),
    (lambda: neurons.lif(X, [0.1, 0.2, 0.3], 1.0), "tau"),
    (lambda: neurons.refractory(X, 0.5, 1.0, -0.1, 0.5), "theta_r"),
    (lambda: neurons.refractory(X, 0.5, -1.0, 0.1, 0.5), "v_th"),
    (lambda: neurons.refractory(X, 0.5, 1.0, 0.1, 1.0), "beta"),
    (lambda: neurons.pmbc(X, 0.5, 1.0, -0.1, 0.5), "theta_r"),
    (lambda: neurons.pmbc(X, 1.5, 1.0, 0.1, 0.5), "tau"),
    (lambda: neurons.stochastic([0.5, np.inf], np.random.default_rng()), "p"),
    (lambda: neurons.stochastic([0.5], 3), "rng"),
])
def test_bad_input_raises_value_error_naming_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("name", ["lif", "refractory", "pmbc"])
def test_float32_input_runs_in_float32(name):
    # a float32 x keeps its dtype and runs the same equations in float32: against float64 on the
    # same values, spikes agree on rows whose float64 potential stays clear of v_th (no near tie),
    # and the potentials agree to float32 rounding
    x = np.random.default_rng(3).normal(0.3, 1.0, (40, 50)).astype(np.float32)
    args = {"lif": (0.5, 1.0, "soft"), "refractory": (0.5, 1.0, 0.25, 0.5), "pmbc": (0.5, 1.0, 0.25, 0.5)}[name]
    out32, out64 = getattr(neurons, name)(x, *args), getattr(neurons, name)(x.astype(np.float64), *args)
    (s32, v32), (s64, v64) = out32[:2], out64[:2]
    assert s32.dtype == v32.dtype == np.float32
    keep = ~(np.abs(v64 - 1.0) <= 1e-5).any(axis=-1)
    assert keep.mean() > 0.9
    np.testing.assert_array_equal(s32[keep], s64[keep])
    np.testing.assert_allclose(v32[keep], v64[keep], rtol=1e-5, atol=1e-5)
