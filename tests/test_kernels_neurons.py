"""refssm.kernels.neurons: every Numba fast path against its oracle in refssm.neurons.

Spikes and potentials must be equal bit for bit (assert_array_equal), and PMBC's iteration count
exactly, on hypothesis-drawn shapes (L = 1, odd L, extra leading dims, per-channel parameters,
non-contiguous x) and values, in float64 and in float32: the oracle computes in x's dtype
(refssm.neurons.compute_dtype) and so does the fast path, operation for operation, so float32 is
bit-exact too. Half the draws are on a dyadic lattice with dyadic parameters, where the arithmetic
is exact and v == v_th happens often, so both spike conventions meet real ties. Bad input must raise
the oracle's ValueError with the oracle's message.

The surrogate (training) pairs of refssm.spiking and their fast paths are tested in
tests/test_spiking.py and tests/test_kernels_spiking.py.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from refssm import neurons
from refssm.kernels import neurons as fast

LATTICE = np.array([-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
leads = st.sampled_from([(), (1,), (3,), (2, 3)])
lengths = st.one_of(st.just(1), st.integers(1, 40))
seeds = st.integers(0, 2**31)


dtypes = st.sampled_from([np.float64, np.float32])


def _signal(rng, shape, on_lattice, dtype=np.float64, strided=False):
    """x of `shape` in `dtype`; strided: a non-contiguous view (every other step of a longer signal)."""
    full = shape[:-1] + (2 * shape[-1],) if strided else shape
    x = (rng.choice(LATTICE, full) if on_lattice else rng.normal(0.4, 1.0, full)).astype(dtype)
    return x[..., ::2] if strided else x


def _param(rng, lead, values, on_lattice, per_channel):
    """A parameter: from `values` on the lattice, else uniform in their range; (H,) if per_channel."""
    shape = lead[-1:] if per_channel else ()
    return rng.choice(values, shape) if on_lattice else rng.uniform(min(values), max(values), shape)


# --------------------------------------------------------------------------------------------------
# Forward passes: bit for bit
# --------------------------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(lead=leads, L=lengths, reset=st.sampled_from(["hard", "soft"]), eq=st.booleans(),
       on_lattice=st.booleans(), per_channel=st.booleans(), dtype=dtypes, strided=st.booleans(), seed=seeds)
def test_lif_bit_exact(lead, L, reset, eq, on_lattice, per_channel, dtype, strided, seed):
    rng = np.random.default_rng(seed)
    x = _signal(rng, lead + (L,), on_lattice, dtype, strided)
    tau = _param(rng, lead, [0.0, 0.25, 0.5, 0.875], on_lattice, per_channel)
    v_th = _param(rng, lead, [0.5, 1.0], on_lattice, per_channel)
    v_reset = _param(rng, lead, [-0.5, 0.0, 0.25], on_lattice, per_channel)
    args = (x, tau, v_th, reset, v_reset, eq)
    s, v = fast.lif(*args)
    s0, v0 = neurons.lif(*args)
    assert s.dtype == v.dtype == s0.dtype == dtype
    np.testing.assert_array_equal(s, s0)
    np.testing.assert_array_equal(v, v0)


@settings(max_examples=30, deadline=None)
@given(lead=leads, L=lengths, eq=st.booleans(), on_lattice=st.booleans(), per_channel=st.booleans(),
       dtype=dtypes, strided=st.booleans(), seed=seeds)
def test_refractory_and_pmbc_bit_exact(lead, L, eq, on_lattice, per_channel, dtype, strided, seed):
    rng = np.random.default_rng(seed)
    x = _signal(rng, lead + (L,), on_lattice, dtype, strided)
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
    assert s.dtype == m.dtype == s0.dtype == dtype
    np.testing.assert_array_equal(s, s0)
    np.testing.assert_array_equal(m, m0)
    assert iterations == iterations0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("tau", [0.125, 0.9, 0.99])
def test_pmbc_iterations_long_rows(tau, dtype):
    # many iterations (slow membrane) and rows that finish at different iterations
    x = np.random.default_rng(1).normal(0.3, 0.6, (4, 200)).astype(dtype)
    out, out0 = fast.pmbc(x, tau, 1.0, 0.5, 0.5), neurons.pmbc(x, tau, 1.0, 0.5, 0.5)
    for a, b in zip(out, out0):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x, eq", [([1.0, 1.0], True), ([0.5, 0.75], False)])
def test_pmbc_margin_rule(x, eq, dtype):
    # at step 1 a bound equals v_th exactly: within the margin, so the step waits until it is the
    # earliest undetermined one, which costs a second iteration
    x = np.array(x, dtype)
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
