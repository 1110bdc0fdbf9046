"""Numba fast paths (refssm.kernels.fractional) against their numpy oracles (refssm.fractional),
on hypothesis-drawn shapes and values. The fast sums are reassociated, so agreement is to rounding:
1e-12 relative to the sum of the magnitudes of the terms; the layer kernel and its VJP (registered as
"fssm_kernel") to 1e-10 relative to the largest entry, for every method the models use."""

import tracemalloc

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st
from scipy import special

from kernel_checks import close, fractional_layer
from refssm import _checks, backend, fractional as F
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


@pytest.mark.parametrize("K", [1, 2, 5, 129, 200, 1000])
@pytest.mark.parametrize("shift", [0, 1])
def test_gl_recursion_memory_windows(K, shift):
    # short-memory windows (K terms) from 1 to beyond L, both schemes, c per mode and a shared r
    rng = np.random.default_rng(K + shift)
    w, L = F.gl_weights(1.3, K), 400
    c = (-rng.uniform(0, 1, 3) + 1j * rng.uniform(-1, 1, 3)) * 0.3
    r = rng.standard_normal(L) + 1j * rng.standard_normal(L)
    x, x_fast = F.gl_recursion(w, c, r, shift), KF.gl_recursion(w, c, r, shift)
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


# ----------------------------------------------------------------------------------------------------
# the layer kernel fssm_conv_kernel_fwd / _vjp


@settings(max_examples=40, deadline=None)
@given(H=st.integers(1, 3), N2=st.integers(1, 5), L=st.one_of(st.just(1), st.integers(1, 150)),
       method=st.sampled_from(["gl", "gl_explicit", "soe_decoupled"]), alpha=st.floats(0.1, 1.9),
       memory=st.sampled_from([None, 3]), M=st.integers(1, 4), shared=st.booleans(), strided=st.booleans(),
       seed=st.integers(0, 2 ** 31))
def test_conv_kernel_matches_oracle(H, N2, L, method, alpha, memory, M, shared, strided, seed):
    rng = np.random.default_rng(seed)
    A, B, C, dt = fractional_layer(rng, H, N2, shared, strided)
    if method == "soe_decoupled":
        alpha, kw = min(alpha, 0.9), dict(omega=rng.uniform(0.01, 2.0, M), eta=rng.uniform(0.1, 3.0, M))
    else:
        kw = dict(memory=memory)
    gK = rng.standard_normal((2 * L, H)).T[:, ::2]                              # non-contiguous cotangent
    K, ctx = F.fssm_conv_kernel_fwd(A, B, C, dt, L, alpha, method, **kw)
    # The GL VJP squares k by FFT, accurate to ~1e-16 max|k|^2 on every coefficient: where the explicit
    # scheme runs beyond its stability limit (dt^α |λ| not small) and k grows exponentially (here up to
    # 1e7-fold), the oracle's own gradients are good to ~1e-9 only, and a reassociated recursion (k equal
    # to 4e-15 relative per entry) cannot agree with it more closely. Stable kernels (growth at most
    # n^(α-1) <= 100 here) are compared.
    assume(np.all(np.abs(ctx["k"]).max(axis=-1) <= 1e3 * np.abs(ctx["k"][..., 0])))
    K_fast, ctx_fast = KF.fssm_conv_kernel_fwd(A, B, C, dt, L, alpha, method, **kw)
    assert K_fast.shape == K.shape == (H, L) and K_fast.dtype == np.float64
    grads, grads_fast = F.fssm_conv_kernel_vjp(ctx, gK), KF.fssm_conv_kernel_vjp(ctx_fast, gK)
    assert len(grads_fast) == len(grads) == 4 + 2 * (method == "soe_decoupled")
    assert [g.shape for g in grads_fast] == [g.shape for g in grads]
    assert [g.dtype for g in grads_fast] == [g.dtype for g in grads]
    for got, want in zip((K_fast, *grads_fast), (K, *grads)):
        close(got, want, 1e-10)


def test_conv_kernel_float32_parameters_compute_in_double():
    # the training loop passes float32/complex64 parameters inside trusted(): K is still float64, computed
    # in complex128, equal to the float64 call on the same (rounded) values
    rng = np.random.default_rng(1)
    A, B, C, dt = fractional_layer(rng, 3, 4, False, False)
    f32 = (A.astype(np.complex64), B.astype(np.complex64), C.astype(np.complex64), dt.astype(np.float32))
    f64 = tuple(x.astype(np.complex128 if np.iscomplexobj(x) else np.float64) for x in f32)
    for method, alpha, kw in (("gl", 0.7, {}), ("gl_explicit", 1.4, {}),
                              ("soe_decoupled", 0.7, dict(omega=[0.1, 1.0], eta=[1.0, 0.5]))):
        with _checks.trusted():
            K32, ctx = KF.fssm_conv_kernel_fwd(*f32, 200, alpha, method, **kw)
            grads = KF.fssm_conv_kernel_vjp(ctx, np.ones((3, 200), np.float32))
        assert K32.dtype == np.float64 and grads[0].dtype == np.complex128 and grads[3].dtype == np.float64
        close(K32, F.fssm_conv_kernel(*f64, 200, alpha, method, **kw), 1e-12)


def test_conv_kernel_other_methods_run_the_oracle():
    rng = np.random.default_rng(2)
    A, B, C, dt = fractional_layer(rng, 2, 3, False, False)
    for method, kw in (("exact", {}), ("soe_coupled", dict(M=6)), ("soe_decoupled", dict(M=6))):
        K, ctx = KF.fssm_conv_kernel_fwd(A, B, C, dt, 20, 0.6, method, **kw)
        np.testing.assert_array_equal(K, F.fssm_conv_kernel(A, B, C, dt, 20, 0.6, method, **kw))
        with pytest.raises(ValueError, match="no VJP"):
            KF.fssm_conv_kernel_vjp(ctx, np.ones((2, 20)))
    for bad in (dict(M=4), dict(memory=-1), dict(omega=[1.0])):                # the oracle's checks
        with pytest.raises(ValueError):
            KF.fssm_conv_kernel_fwd(A, B, C, dt, 20, 1.5, "gl", **bad)


def test_soe_fast_path_never_forms_the_vandermonde_matrix():
    # oracle: (H, N/2, M, L) complex Vandermonde (here 32 MiB) and (H, N/2, L) kernels; fast path: O(H N M + H L)
    H, N2, M, L = 8, 32, 4, 4096
    rng = np.random.default_rng(3)
    A, B, C, dt = fractional_layer(rng, H, N2, False, False)
    kw = dict(omega=rng.uniform(0.01, 2.0, M), eta=rng.uniform(0.1, 3.0, M))
    KF.fssm_conv_kernel_vjp(KF.fssm_conv_kernel_fwd(A, B, C, dt, 8, 0.7, "soe_decoupled", **kw)[1], np.ones((H, 8)))
    tracemalloc.start()
    K, ctx = KF.fssm_conv_kernel_fwd(A, B, C, dt, L, 0.7, "soe_decoupled", **kw)
    KF.fssm_conv_kernel_vjp(ctx, np.ones((H, L)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 3 * K.nbytes < H * N2 * L * 16                               # (H, N/2, L) complex: 16 MiB


def test_registered_against_the_oracle():
    assert backend.op("fssm_kernel", "numba") == (KF.fssm_conv_kernel_fwd, KF.fssm_conv_kernel_vjp)
    assert backend.oracle("fssm_kernel") == (F.fssm_conv_kernel_fwd, F.fssm_conv_kernel_vjp)
