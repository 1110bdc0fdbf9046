"""Numba fast paths (refssm.kernels.fractional) against their numpy oracles (refssm.fractional),
on hypothesis-drawn shapes and values. The fast sums are reassociated, so agreement is to rounding:
1e-12 relative to the sum of the magnitudes of the terms."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import special

from refssm import fractional as F
from refssm.kernels import fractional as KF

SETTINGS = settings(max_examples=40, deadline=None)
batch = st.lists(st.integers(1, 3), max_size=2)


@SETTINGS
@given(shape=batch, L=st.integers(1, 300), K=st.integers(1, 320), seed=st.integers(0, 2 ** 31))
def test_memory_sum_matches_oracle(shape, L, K, seed):
    rng = np.random.default_rng(seed)
    w, f = rng.standard_normal(K), rng.standard_normal((*shape, L))
    scale = F.memory_sum(np.abs(w), np.abs(f))                 # Σ |w_j f_{n−j}|
    assert np.all(np.abs(KF.memory_sum(w, f) - F.memory_sum(w, f)) <= 1e-12 * scale)


@SETTINGS
@given(c_shape=batch, r_batch=st.booleans(), L=st.integers(1, 300), K=st.integers(1, 320),
       alpha=st.floats(0.01, 1.99), shift=st.sampled_from([0, 1]), seed=st.integers(0, 2 ** 31))
def test_gl_recursion_matches_oracle(c_shape, r_batch, L, K, alpha, shift, seed):
    rng = np.random.default_rng(seed)
    w = F.gl_weights(alpha, K)
    c = (-rng.uniform(0, 1, c_shape) + 1j * rng.uniform(-1, 1, c_shape)) * 0.5
    r_shape = (*c_shape, L) if r_batch else (L,)
    r = rng.standard_normal(r_shape) + 1j * rng.standard_normal(r_shape)
    x = F.gl_recursion(w, c, r, shift)
    x_fast = KF.gl_recursion(w, c, r, shift)
    assert x_fast.shape == x.shape
    scale = np.abs(x).max(axis=-1, keepdims=True) + np.abs(r).max()
    assert np.all(np.abs(x_fast - x) <= 1e-12 * scale)


def test_fast_paths_serve_the_public_schemes():
    # the GL derivative, the L1 scheme and the GL kernel, each through the fast path and the oracle
    rng = np.random.default_rng(0)
    f, h = rng.standard_normal((2, 500)), 0.01
    np.testing.assert_allclose(KF.memory_sum(F.gl_weights(0.7, 500), f) * h ** -0.7, F.gl_derivative(f, 0.7, h),
                               rtol=1e-12, atol=1e-10)
    df = np.diff(f, axis=-1, prepend=f[:, :1])
    l1 = KF.memory_sum(F.l1_weights(0.3, 500), df) * h ** -0.3 / special.gamma(1.7)
    np.testing.assert_allclose(l1, F.caputo_l1(f, 0.3, h), rtol=1e-12, atol=1e-10)
    lam, alpha, dt, L = np.array([-0.5 + 2j, -0.1]), 0.6, 0.05, 400
    delta = np.zeros(L)
    delta[0] = dt ** alpha
    np.testing.assert_allclose(KF.gl_recursion(F.gl_weights(alpha, L), dt ** alpha * lam, delta),
                               F.gl_kernel_recursion(lam, alpha, dt, L), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("call", [
    lambda: KF.memory_sum(np.ones((2, 2)), np.ones(4)),
    lambda: KF.memory_sum(np.ones(2), np.array([1.0, np.nan])),
    lambda: KF.gl_recursion(np.ones(3), 0.1, np.ones(4), shift=2),
    lambda: KF.gl_recursion(np.ones(3), np.inf, np.ones(4)),
])
def test_fast_path_bad_input(call):
    with pytest.raises(ValueError):
        call()
