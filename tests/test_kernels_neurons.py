"""refssm.kernels.neurons: every Numba fast path against its oracle in refssm.neurons.

Spikes and potentials must be equal bit for bit (assert_array_equal), and PMBC's iteration count
exactly, on hypothesis-drawn shapes (L = 1, odd L, extra leading dims, per-channel parameters) and
values: half the draws are on a dyadic lattice with dyadic parameters, where the arithmetic is exact
and v == v_th happens often, so both spike conventions meet real ties. Bad input must raise the
oracle's ValueError with the oracle's message.

lif_vjp has no oracle in refssm; its oracle is the numpy reverse-time loop below, checked in turn
against central differences of a smooth relaxation of the LIF (H replaced by the surrogate's primitive,
so the surrogate derivative is the exact derivative).
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gradcheck import central_diff_grad
from refssm import neurons, surrogate
from refssm.kernels import neurons as fast

LATTICE = np.array([-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
leads = st.sampled_from([(), (1,), (3,), (2, 3)])
lengths = st.one_of(st.just(1), st.integers(1, 40))
seeds = st.integers(0, 2**31)


def _signal(rng, shape, on_lattice):
    return rng.choice(LATTICE, shape) if on_lattice else rng.normal(0.4, 1.0, shape)


def _param(rng, lead, values, on_lattice, per_channel):
    """A parameter: from `values` on the lattice, else uniform in their range; (H,) if per_channel."""
    shape = lead[-1:] if per_channel else ()
    return rng.choice(values, shape) if on_lattice else rng.uniform(min(values), max(values), shape)


# --------------------------------------------------------------------------------------------------
# Forward passes: bit for bit
# --------------------------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(lead=leads, L=lengths, reset=st.sampled_from(["hard", "soft"]), eq=st.booleans(),
       on_lattice=st.booleans(), per_channel=st.booleans(), seed=seeds)
def test_lif_bit_exact(lead, L, reset, eq, on_lattice, per_channel, seed):
    rng = np.random.default_rng(seed)
    x = _signal(rng, lead + (L,), on_lattice)
    tau = _param(rng, lead, [0.0, 0.25, 0.5, 0.875], on_lattice, per_channel)
    v_th = _param(rng, lead, [0.5, 1.0], on_lattice, per_channel)
    v_reset = _param(rng, lead, [-0.5, 0.0, 0.25], on_lattice, per_channel)
    args = (x, tau, v_th, reset, v_reset, eq)
    s, v = fast.lif(*args)
    s0, v0 = neurons.lif(*args)
    np.testing.assert_array_equal(s, s0)
    np.testing.assert_array_equal(v, v0)


@settings(max_examples=30, deadline=None)
@given(lead=leads, L=lengths, eq=st.booleans(), on_lattice=st.booleans(), per_channel=st.booleans(),
       seed=seeds)
def test_refractory_and_pmbc_bit_exact(lead, L, eq, on_lattice, per_channel, seed):
    rng = np.random.default_rng(seed)
    x = _signal(rng, lead + (L,), on_lattice)
    params = (_param(rng, lead, [0.0, 0.125, 0.5, 0.875], on_lattice, per_channel),   # tau
              _param(rng, lead, [0.5, 1.0], on_lattice, per_channel),                 # v_th
              _param(rng, lead, [0.0, 0.25, 1.0], on_lattice, per_channel),           # theta_r
              _param(rng, lead, [0.0, 0.5, 0.75], on_lattice, per_channel))           # beta
    s, m = fast.refractory(x, *params, fire_at_equality=eq)
    s0, m0 = neurons.refractory(x, *params, fire_at_equality=eq)
    np.testing.assert_array_equal(s, s0)
    np.testing.assert_array_equal(m, m0)
    s, m, iterations = fast.pmbc(x, *params, fire_at_equality=eq)
    s0, m0, iterations0 = neurons.pmbc(x, *params, fire_at_equality=eq)
    np.testing.assert_array_equal(s, s0)
    np.testing.assert_array_equal(m, m0)
    assert iterations == iterations0


@pytest.mark.parametrize("tau", [0.125, 0.9, 0.99])
def test_pmbc_iterations_long_rows(tau):
    # many iterations (slow membrane) and rows that finish at different iterations
    x = np.random.default_rng(1).normal(0.3, 0.6, (4, 200))
    out, out0 = fast.pmbc(x, tau, 1.0, 0.5, 0.5), neurons.pmbc(x, tau, 1.0, 0.5, 0.5)
    for a, b in zip(out, out0):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("x, eq", [([1.0, 1.0], True), ([0.5, 0.75], False)])
def test_pmbc_margin_rule(x, eq):
    # at step 1 a bound equals v_th exactly: within the margin, so the step waits until it is the
    # earliest undetermined one, which costs a second iteration
    out, out0 = fast.pmbc(x, 0.5, 1.0, 0.0, 0.0, eq), neurons.pmbc(x, 0.5, 1.0, 0.0, 0.0, eq)
    assert out[2] == out0[2] == 2
    for a, b in zip(out[:2], out0[:2]):
        np.testing.assert_array_equal(a, b)


def test_empty_batch():
    x = np.zeros((0, 5))
    np.testing.assert_array_equal(fast.lif(x, 0.5)[1], neurons.lif(x, 0.5)[1])
    np.testing.assert_array_equal(fast.refractory(x, 0.5, 1.0, 0.1, 0.5)[1], np.zeros((0, 5)))
    assert fast.pmbc(x, 0.5, 1.0, 0.1, 0.5)[2] == neurons.pmbc(x, 0.5, 1.0, 0.1, 0.5)[2] == 0


X = np.ones((2, 3, 5))
BAD = [
    ("lif", (np.array([0.0, np.nan]), 0.5), {}),
    ("lif", (np.float64(1.0), 0.5), {}),
    ("lif", (np.zeros((2, 0)), 0.5), {}),
    ("lif", (X, 1.0), {}),
    ("lif", (X, 0.5, 0.0), {}),
    ("lif", (X, 0.5), {"reset": "none"}),
    ("lif", (X, np.full(4, 0.5)), {}),
    ("lif", (X, 0.5), {"v_reset": np.inf}),
    ("refractory", (X, -0.1, 1.0, 0.1, 0.5), {}),
    ("refractory", (X, 0.5, 1.0, -0.1, 0.5), {}),
    ("refractory", (X, 0.5, 1.0, 0.1, 1.0), {}),
    ("pmbc", (X, 0.5, -1.0, 0.1, 0.5), {}),
    ("pmbc", (X, 0.5, 1.0, np.ones(2), 0.5), {}),
    ("pmbc", ([[1.0, "a"]], 0.5, 1.0, 0.1, 0.5), {}),
]


@pytest.mark.parametrize("name, args, kwargs", BAD)
def test_bad_input_raises_the_oracles_error(name, args, kwargs):
    with pytest.raises(ValueError) as expected:
        getattr(neurons, name)(*args, **kwargs)
    with pytest.raises(ValueError) as got:
        getattr(fast, name)(*args, **kwargs)
    assert str(got.value) == str(expected.value)


# --------------------------------------------------------------------------------------------------
# LIF backpropagation through time
# --------------------------------------------------------------------------------------------------

def _lif_vjp_reference(gs, s, v, sg_grad, tau, v_th, reset, v_reset, detach_reset):
    """The oracle of fast.lif_vjp: reverse-time BPTT through the LIF, vectorised over rows.

    u_t = v_t (1 - s_t) + s_t v_reset (hard) or v_t - v_th s_t (soft); v_{t+1} = tau u_t + x_{t+1}.
    """
    tau, v_th, v_reset = (np.broadcast_to(p, v.shape[:-1]) for p in (tau, v_th, v_reset))
    gx = np.empty_like(v)
    gu = np.zeros(v.shape[:-1])                                                # dL/du_t
    gv_th = np.zeros(v.shape[:-1])
    for t in reversed(range(v.shape[-1])):
        s_t, v_t = s[..., t], v[..., t]
        if reset == "hard":
            du_dv, du_ds, du_dvth = 1 - s_t, v_reset - v_t, 0.0
        else:
            du_dv, du_ds, du_dvth = 1.0, -v_th, -s_t
        g_s = gs[..., t] + (0.0 if detach_reset else gu * du_ds)               # dL/ds_t
        gx[..., t] = g_s * sg_grad[..., t] + gu * du_dv                        # dL/dv_t = dL/dx_t
        gv_th += -g_s * sg_grad[..., t] + gu * du_dvth                         # ds_t/dv_th = -sg_grad_t
        gu = tau * gx[..., t]
    return gx, gv_th


def _relaxed_lif(x, tau, v_th, reset, v_reset, sg, reset_spikes=None):
    """LIF with s_t = sg.primitive(v_t - v_th) in place of H. `reset_spikes`, if given, replace
    s_t inside the reset: held fixed, they make finite differences see a detached reset."""
    u = np.zeros(x.shape[:-1])
    s, v = np.empty_like(x), np.empty_like(x)
    for t in range(x.shape[-1]):
        v[..., t] = tau * u + x[..., t]
        s[..., t] = sg.primitive(v[..., t] - v_th)
        r = s[..., t] if reset_spikes is None else reset_spikes[..., t]
        u = v[..., t] * (1 - r) + r * v_reset if reset == "hard" else v[..., t] - v_th * r
    return s, v


@settings(max_examples=30, deadline=None)
@given(lead=st.sampled_from([(), (3,), (2, 2)]), L=st.integers(1, 8), tau=st.floats(0, 0.95),
       reset=st.sampled_from(["hard", "soft"]), detach_reset=st.booleans(),
       sg_name=st.sampled_from(["sigmoid", "atan"]), seed=seeds)
def test_lif_vjp_against_reference_and_finite_differences(lead, L, tau, reset, detach_reset, sg_name,
                                                          seed):
    rng = np.random.default_rng(seed)
    sg = surrogate.get(sg_name)
    x = rng.normal(0.5, 1.0, lead + (L,))
    v_th = rng.uniform(0.5, 1.5, lead)                                         # one per row
    v_reset = rng.uniform(-0.3, 0.3, lead)
    gs = rng.standard_normal(x.shape)
    s, v = _relaxed_lif(x, tau, v_th, reset, v_reset, sg)
    sg_grad = sg.grad(v - v_th[..., None])
    frozen = s if detach_reset else None

    def loss(x_, v_th_):
        return np.sum(gs * _relaxed_lif(x_, tau, v_th_, reset, v_reset, sg, frozen)[0])

    gx0, gv_th0 = _lif_vjp_reference(gs, s, v, sg_grad, tau, v_th, reset, v_reset, detach_reset)
    np.testing.assert_allclose(gx0, central_diff_grad(lambda x_: loss(x_, v_th), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gv_th0, central_diff_grad(lambda t_: loss(x, t_), v_th), rtol=1e-6, atol=1e-8)
    gx, gv_th = fast.lif_vjp(gs, x, s, v, tau, v_th, reset, v_reset, sg_grad, detach_reset)
    np.testing.assert_allclose(gx, gx0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gv_th, gv_th0, rtol=1e-12, atol=1e-14)


@settings(max_examples=30, deadline=None)
@given(lead=leads, L=st.integers(1, 60), reset=st.sampled_from(["hard", "soft"]), detach_reset=st.booleans(),
       per_channel=st.booleans(), seed=seeds)
def test_lif_vjp_on_true_spikes_matches_reference(lead, L, reset, detach_reset, per_channel, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 1.0, lead + (L,))
    tau = _param(rng, lead, [0.0, 0.9], False, per_channel)
    v_th = _param(rng, lead, [0.5, 1.5], False, per_channel)
    s, v = fast.lif(x, tau, v_th, reset, 0.0)
    sg_grad = surrogate.get("triangle").grad(v - np.asarray(v_th)[..., None])
    gs = rng.standard_normal(x.shape)
    gx, gv_th = fast.lif_vjp(gs, x, s, v, tau, v_th, reset, 0.0, sg_grad, detach_reset)
    gx0, gv_th0 = _lif_vjp_reference(gs, s, v, sg_grad, tau, v_th, reset, 0.0, detach_reset)
    np.testing.assert_allclose(gx, gx0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gv_th, gv_th0, rtol=1e-12, atol=1e-14)
    assert gv_th.shape == lead


def test_lif_vjp_bad_input():
    x = np.ones((2, 5))
    good = dict(gs=x, x=x, s=x, v=x, tau=0.5, v_th=1.0, reset="hard", v_reset=0.0, sg_grad=x)
    for name, value, message in [("s", np.ones((2, 4)), "s must have shape"),
                                 ("sg_grad", np.full((2, 5), np.nan), "sg_grad must be finite"),
                                 ("tau", 1.0, "tau must lie in"), ("reset", "x", "reset must be one of")]:
        with pytest.raises(ValueError, match=message):
            fast.lif_vjp(**{**good, name: value})
