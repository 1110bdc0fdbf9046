"""refssm.kernels.cuda.fractional (the CUDA fractional layer kernel of LongSpike) against the oracle pair of
"fssm_kernel" (refssm.fractional.fssm_conv_kernel_fwd / _vjp), run in Numba's CUDA simulator
(tests/conftest.py), so on tiny shapes: the GL recursion (alpha > 1, both schemes, with and without short
memory), the oracle's own path (alpha <= 1) and the decoupled SOE, with A, B per channel or shared and strided
parameters. Compared at 1e-10 relative to the largest entry (rtol = 1e-10, atol = 1e-10 max|oracle|): the
recursion multiplies by 1/diag where the oracle divides, and the SOE sums run in another order.
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from kernel_checks import close, fractional_layer, require_cuda_kernels

require_cuda_kernels()

from refssm import backend                                   # noqa: E402
from refssm.kernels.cuda import device_module, fractional as fast   # noqa: E402

TOL = 1e-10
FWD, VJP = backend.oracle("fssm_kernel")


@settings(max_examples=15, deadline=None)
@given(H=st.integers(1, 3), N2=st.integers(1, 3), L=st.sampled_from([1, 2, 9, 24]),
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
    K, ctx = FWD(A, B, C, dt, L, alpha, method, **kw)
    # as tests/test_fractional_kernels.py: kernels that grow exponentially (the explicit scheme beyond its
    # stability limit) make the oracle's own FFT-based gradients good to ~1e-9 only; stable ones are compared
    assume(np.all(np.abs(ctx["k"]).max(axis=-1) <= 1e3 * np.abs(ctx["k"][..., 0])) if "k" in ctx else True)
    K_fast, ctx_fast = fast.fssm_conv_kernel_fwd(A, B, C, dt, L, alpha, method, **kw)
    assert type(K_fast) is device_module().ndarray and K_fast.shape == K.shape and K_fast.dtype == np.float64
    grads, grads_fast = VJP(ctx, gK), fast.fssm_conv_kernel_vjp(ctx_fast, device_module().asarray(gK))
    assert len(grads_fast) == len(grads) == 4 + 2 * (method == "soe_decoupled")
    assert [g.shape for g in grads_fast] == [g.shape for g in grads]
    assert [g.dtype for g in grads_fast] == [g.dtype for g in grads]
    for got, want in zip((K_fast, *grads_fast), (K, *grads)):
        close(backend.to_host(got), want, TOL)


def test_gl_recursion_matches_oracle_with_memory_windows():
    rng = np.random.default_rng(4)
    A, B, C, dt = fractional_layer(rng, 2, 3, False, False)
    gK = rng.standard_normal((2, 30))
    for method in ("gl", "gl_explicit"):
        for memory in (None, 1, 7, 29, 40):
            K, ctx = FWD(A, B, C, dt, 30, 1.4, method, memory=memory)
            K_fast, ctx_fast = fast.fssm_conv_kernel_fwd(A, B, C, dt, 30, 1.4, method, memory=memory)
            close(backend.to_host(K_fast), K, TOL)
            np.testing.assert_allclose(ctx_fast["k"], ctx["k"], rtol=TOL, atol=TOL * np.abs(ctx["k"]).max())
            for got, want in zip(fast.fssm_conv_kernel_vjp(ctx_fast, gK), VJP(ctx, gK)):
                close(backend.to_host(got), want, TOL)


def test_other_methods_run_the_oracle():
    rng = np.random.default_rng(2)
    A, B, C, dt = fractional_layer(rng, 2, 3, False, False)
    for method, kw in (("exact", {}), ("soe_coupled", dict(M=6)), ("soe_decoupled", dict(M=6))):
        K, ctx = fast.fssm_conv_kernel_fwd(A, B, C, dt, 20, 0.6, method, **kw)
        np.testing.assert_array_equal(backend.to_host(K), FWD(A, B, C, dt, 20, 0.6, method, **kw)[0])
        with pytest.raises(ValueError, match="no VJP"):
            fast.fssm_conv_kernel_vjp(ctx, np.ones((2, 20)))
    for bad in (dict(M=4), dict(memory=-1), dict(omega=[1.0])):                # the oracle's checks
        with pytest.raises(ValueError):
            fast.fssm_conv_kernel_fwd(A, B, C, dt, 20, 1.5, "gl", **bad)
    _, ctx = fast.fssm_conv_kernel_fwd(A, B, C, dt, 20, 0.6, "soe_decoupled", omega=[0.1, 1.0], eta=[1.0, 0.5])
    with pytest.raises(ValueError, match="gK must have the kernel's shape"):
        fast.fssm_conv_kernel_vjp(ctx, np.ones((2, 19)))


def test_vjp_uses_only_its_ctx():
    # two forwards, then their VJPs in the other order: each VJP gives its own forward's gradients
    rng = np.random.default_rng(6)
    cases = [(*fractional_layer(rng, 2, 2, False, False), 12, 1.5, "gl", {}),
             (*fractional_layer(rng, 2, 2, True, False), 12, 0.7, "soe_decoupled", dict(omega=[0.3, 1.0], eta=[1.0, 2.0]))]
    gK = rng.standard_normal((2, 12))
    ctxs = [fast.fssm_conv_kernel_fwd(*args, **kw)[1] for *args, kw in cases]
    for (*args, kw), ctx in reversed(list(zip(cases, ctxs))):
        for got, want in zip(fast.fssm_conv_kernel_vjp(ctx, gK), VJP(FWD(*args, **kw)[1], gK)):
            close(backend.to_host(got), want, TOL)


def test_device_cotangent(request):
    # with CuPy (the test double of tests/fake_cupy.py, which the simulator runs on) K is a CuPy array for every
    # method and the VJP takes a CuPy gK; the gradients come back to the host, equal to the host run's
    pytest.importorskip("fake_cupy", reason="the CuPy test double tests/fake_cupy.py is not here")
    rng = np.random.default_rng(3)
    A, B, C, dt = fractional_layer(rng, 2, 2, False, False)
    gK = rng.standard_normal((2, 10))
    cases = ((1.5, "gl", {}), (0.7, "gl", {}), (0.7, "soe_decoupled", dict(omega=[0.3, 1.0], eta=[1.0, 2.0])))
    forwards = (fast.fssm_conv_kernel_fwd(A, B, C, dt, 10, alpha, method, **kw) for alpha, method, kw in cases)
    host = [(K, fast.fssm_conv_kernel_vjp(ctx, gK)) for K, ctx in forwards]
    cp = request.getfixturevalue("fake_cupy")
    for (alpha, method, kw), (K0, grads0) in zip(cases, host):
        K, ctx = fast.fssm_conv_kernel_fwd(A, B, C, dt, 10, alpha, method, **kw)
        assert type(K) is cp.ndarray
        np.testing.assert_array_equal(K.get(), K0)
        for g, g0 in zip(fast.fssm_conv_kernel_vjp(ctx, cp.asarray(gK)), grads0):
            np.testing.assert_array_equal(g, g0)
