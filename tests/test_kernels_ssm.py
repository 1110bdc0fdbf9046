"""refssm.kernels.ssm: the Numba scan, kernel and kernel VJP against their oracles in refssm.ssm.

All sum complex terms in another order than the oracle's einsum, so they are compared at 1e-12
relative to the largest entry (assert_allclose rtol=1e-12, atol=1e-12 max|oracle|), on
hypothesis-drawn shapes (L = 1, odd L, L across several 64-step anchor blocks, mode counts that are
not multiples of 4, extra leading dims, non-contiguous parameters) for every init and discretisation.
Bad input must raise the oracle's ValueError. The kernel and its VJP must not form the (H, N/2, L)
Vandermonde matrix (tracemalloc). The registry (refssm.backend) must serve this fast path for "ssm_kernel".
"""

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from refssm import _checks, backend, ssm
from refssm.kernels import ssm as fast

seeds = st.integers(0, 2**31)


def _assert_close(got, expected):
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max(initial=0))


@settings(max_examples=30, deadline=None)
@given(lead=st.sampled_from([(), (1,), (3,), (2, 2)]), H=st.integers(1, 3),
       N=st.sampled_from([2, 4, 6, 10, 16]), L=st.one_of(st.just(1), st.integers(1, 70)),
       init=st.sampled_from(ssm.INITS), method=st.sampled_from(ssm.METHODS), seed=seeds)
def test_scan_matches_oracle(lead, H, N, L, init, method, seed):
    rng = np.random.default_rng(seed)
    p = ssm.init_diag(H, N, init, rng=rng)
    Abar, Bbar = ssm.discretize(p["A"], p["B"], np.exp(p["log_dt"]), method)
    u = rng.standard_normal(lead + (H, L))
    _assert_close(fast.scan(u, Abar, Bbar, p["C"]), ssm.scan(u, Abar, Bbar, p["C"]))


def test_scan_single_channel_and_broadcast_parameters():
    rng = np.random.default_rng(0)
    p = ssm.init_diag(1, 6, rng=rng)
    Abar, Bbar = ssm.discretize(p["A"][0], p["B"][0], 0.05)                   # (N/2,): no channel axis
    u = rng.standard_normal(9)
    _assert_close(fast.scan(u, Abar, Bbar, p["C"][0]), ssm.scan(u, Abar, Bbar, p["C"][0]))
    u = rng.standard_normal((2, 4, 9))                                         # one SSM for all channels
    _assert_close(fast.scan(u, Abar, Bbar, p["C"][0]), ssm.scan(u, Abar, Bbar, p["C"][0]))


@settings(max_examples=30, deadline=None)
@given(H=st.integers(1, 4), N=st.sampled_from([2, 4, 6, 16, 64]),
       L=st.one_of(st.just(1), st.integers(1, 300)), init=st.sampled_from(ssm.INITS),
       method=st.sampled_from(ssm.METHODS), dt_shape=st.sampled_from(["scalar", "(H,)", "(H, 1)"]),
       seed=seeds)
def test_kernel_matches_oracle(H, N, L, init, method, dt_shape, seed):
    rng = np.random.default_rng(seed)
    p = ssm.init_diag(H, N, init, rng=rng)
    dt = {"scalar": 0.03, "(H,)": np.exp(p["log_dt"]), "(H, 1)": np.exp(p["log_dt"])[:, None]}[dt_shape]
    args = (p["A"], p["B"], p["C"], dt, L, method)
    _assert_close(fast.kernel(*args), ssm.kernel(*args))


@settings(max_examples=30, deadline=None)
@given(H=st.integers(1, 4), N=st.sampled_from([2, 4, 16, 64]), L=st.one_of(st.just(1), st.integers(1, 300)),
       init=st.sampled_from(ssm.INITS), method=st.sampled_from(ssm.METHODS), shared=st.booleans(), seed=seeds)
def test_kernel_vjp_matches_oracle(H, N, L, init, method, shared, seed):
    rng = np.random.default_rng(seed)
    p = ssm.init_diag(H, N, init, rng=rng)
    A, B = (p["A"][:1], p["B"][:1]) if shared else (p["A"], p["B"])          # (A, B) shared by channels
    gK = rng.standard_normal((H, L))
    args = (A, B, p["C"], np.exp(p["log_dt"]), L, method)
    (K_fast, ctx_fast), (K, ctx) = fast.kernel_fwd(*args), ssm.kernel_fwd(*args)
    _assert_close(K_fast, K)
    assert "V" not in ctx_fast                                                  # no Vandermonde kept
    for g_fast, g in zip(fast.kernel_vjp(ctx_fast, gK), ssm.kernel_vjp(ctx, gK)):
        assert g_fast.shape == g.shape
        _assert_close(g_fast, g)


@settings(max_examples=20, deadline=None)
@given(H=st.integers(1, 4), N=st.sampled_from([2, 6, 16]), L=st.one_of(st.just(1), st.integers(1, 200)),
       method=st.sampled_from(ssm.METHODS), seed=seeds)
def test_kernel_non_contiguous_and_float32_parameters(H, N, L, method, seed):
    # parameters as strided views, and (inside trusted(), as the training loop calls it) as
    # complex64/float32: both paths compute in complex128 and agree to 1e-12
    rng = np.random.default_rng(seed)
    p = ssm.init_diag(H, 2 * N, "inv", rng=rng)
    A, B, C = (p[k][:, ::2] for k in "ABC")
    dt = np.repeat(np.exp(p["log_dt"]), 2)[::2]
    gK = rng.standard_normal((2 * L, H)).T[:, ::2]
    for args in ((A, B, C, dt, L, method),
                 (A.astype(np.complex64), B.astype(np.complex64), C.astype(np.complex64), dt.astype(np.float32),
                  L, method)):
        with _checks.trusted():
            (K_fast, ctx_fast), (K, ctx) = fast.kernel_fwd(*args), ssm.kernel_fwd(*args)
            assert K_fast.dtype == K.dtype == np.float64
            _assert_close(K_fast, K)
            for g_fast, g in zip(fast.kernel_vjp(ctx_fast, gK), ssm.kernel_vjp(ctx, gK)):
                assert g_fast.dtype == g.dtype
                # gdt is one sum of N/2 L terms per channel that cancel down to ~1e-2 of their size: the
                # two summation orders (Vandermonde einsum, running powers) agree to a few 1e-12 of it
                np.testing.assert_allclose(g_fast, g, rtol=1e-11, atol=1e-12 * np.abs(g).max(initial=0))


def test_power_sums_match_oracle():
    rng = np.random.default_rng(4)
    p = ssm.init_diag(3, 10, "lin", rng=rng)
    Abar, _ = ssm.discretize(p["A"], p["B"], np.exp(p["log_dt"]))
    gK = rng.standard_normal((3, 150))
    for got, want in zip(fast.power_sums(gK, Abar), ssm.power_sums(gK, Abar)):
        _assert_close(got, want)


def test_registered_against_the_oracle():
    assert backend.op("ssm_kernel", "numba") == (fast.kernel_fwd, fast.kernel_vjp)
    assert backend.oracle("ssm_kernel") == (ssm.kernel_fwd, ssm.kernel_vjp)


def test_kernel_long_and_leading_dims():
    rng = np.random.default_rng(3)
    p = ssm.init_diag(2, 8, "inv", rng=rng)
    A, B, C = (np.stack([p[k], p[k] * (1 + 0.1j)]) for k in "ABC")            # (2, H, N/2)
    args = (A, B, C, np.array([[0.01, 0.1], [0.002, 0.05]]), 3000, "bilinear")
    K = fast.kernel(*args)
    assert K.shape == (2, 2, 3000)
    _assert_close(K, ssm.kernel(*args))


def test_kernel_never_forms_the_vandermonde_matrix():
    H, N, L = 8, 64, 4096
    p = ssm.init_diag(H, N, rng=np.random.default_rng(0))
    fast.kernel(p["A"], p["B"], p["C"], np.exp(p["log_dt"]), 8)                 # compiled before tracing
    fast.kernel_vjp(fast.kernel_fwd(p["A"], p["B"], p["C"], np.exp(p["log_dt"]), 8)[1], np.ones((H, 8)))
    tracemalloc.start()
    K, ctx = fast.kernel_fwd(p["A"], p["B"], p["C"], np.exp(p["log_dt"]), L)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    gK = np.ones_like(K)
    before = tracemalloc.get_traced_memory()[0]
    fast.kernel_vjp(ctx, gK)
    peak_vjp = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    assert peak < 2 * K.nbytes < H * (N // 2) * L * 16 / 8                     # Vandermonde: 16 MiB
    assert peak_vjp < 2 * K.nbytes


X = np.ones((2, 3, 5))
A = -0.5 + 1j * np.arange(2.0) * np.ones((3, 1))
BAD_SCAN = [
    (np.full((3, 5), np.nan), A, A, A),
    (np.float64(1.0), A, A, A),
    (np.ones((3, 0)), A, A, A),
    (X, A, [[1, "a"]], A),
    (X, np.full_like(A, np.inf), A, A),
]
BAD_KERNEL = [
    (A, A, A, 0.1, 0, "zoh"),
    (A, A, A, 0.1, 2.0, "zoh"),
    (A, A, A, 0.1, 4, "rk4"),
    (A, A, A, 0.0, 4, "zoh"),
    (A + 1, A, A, 0.1, 4, "zoh"),
    (A, A, np.full_like(A, np.nan), 0.1, 4, "zoh"),
]


@pytest.mark.parametrize("name, args", [("scan", a) for a in BAD_SCAN] + [("kernel", a) for a in BAD_KERNEL])
def test_bad_input_raises_the_oracles_error(name, args):
    with pytest.raises(ValueError) as expected:
        getattr(ssm, name)(*args)
    with pytest.raises(ValueError) as got:
        getattr(fast, name)(*args)
    assert str(got.value) == str(expected.value)


def test_scan_parameters_that_do_not_broadcast():
    with pytest.raises(ValueError, match="must broadcast against u.shape"):
        fast.scan(X, np.full((4, 2), 0.5), A, A)
