"""refssm.kernels.cuda.ssm (the CUDA SSM kernel and its VJP) against the oracle pair of "ssm_kernel"
(refssm.ssm.kernel_fwd / kernel_vjp), run in Numba's CUDA simulator (tests/conftest.py), so on tiny shapes.

The kernel and the power sums add their complex terms in another order than the oracle's einsum (and
take cos/sin of l Im log Abar, as numpy's complex exp does): they are compared at 1e-10 relative to the
largest entry (rtol = 1e-10, atol = 1e-10 max|oracle|), for every init and discretisation, A and B per
channel or shared (1, N/2), dt scalar, (H,) or (H, 1), L = 1 and L not a power of two (the reduction's
block is the next power of two), leading dims, strided and complex64 parameters.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kernel_checks import close, require_cuda_kernels

require_cuda_kernels()

from refssm import _checks, backend, ssm                    # noqa: E402
from refssm.kernels.cuda import device_module, ssm as fast  # noqa: E402

TOL = 1e-10
KERNEL, KERNEL_VJP = backend.oracle("ssm_kernel")
seeds = st.integers(0, 2**31)


def _check(args, gK):
    """Forward and VJP against the oracle's; K on the device module, the gradients on the host."""
    (K, ctx), (K0, ctx0) = fast.kernel_fwd(*args), KERNEL(*args)
    assert type(K) is device_module().ndarray and K.dtype == np.float64 and K.shape == K0.shape
    assert "V" not in ctx                                                      # no Vandermonde kept
    close(backend.to_host(K), K0, TOL)
    for g, g0 in zip(fast.kernel_vjp(ctx, device_module().asarray(gK)), KERNEL_VJP(ctx0, gK)):
        assert g.shape == g0.shape and g.dtype == g0.dtype
        close(backend.to_host(g), g0, TOL)


@settings(max_examples=15, deadline=None)
@given(H=st.integers(1, 3), N=st.sampled_from([2, 4, 6]), L=st.sampled_from([1, 2, 5, 16, 23, 40]),
       init=st.sampled_from(ssm.INITS), method=st.sampled_from(ssm.METHODS), shared=st.booleans(),
       dt_shape=st.sampled_from(["scalar", "(H,)", "(H, 1)"]), seed=seeds)
def test_kernel_and_vjp_match_oracle(H, N, L, init, method, shared, dt_shape, seed):
    rng = np.random.default_rng(seed)
    p = ssm.init_diag(H, N, init, rng=rng)
    A, B = (p["A"][:1], p["B"][:1]) if shared else (p["A"], p["B"])          # (A, B) shared by channels
    dt = {"scalar": 0.03, "(H,)": np.exp(p["log_dt"]), "(H, 1)": np.exp(p["log_dt"])[:, None]}[dt_shape]
    _check((A, B, p["C"], dt, L, method), rng.standard_normal((H, L)))


@pytest.mark.parametrize("method", ssm.METHODS)
def test_leading_dims_strided_and_complex64_parameters(method):
    rng = np.random.default_rng(3)
    p = ssm.init_diag(2, 8, "inv", rng=rng)
    A, B, C = (np.stack([p[k], p[k] * (1 + 0.1j)])[..., ::2] for k in "ABC")  # (2, H, N/4), strided
    dt = np.array([[0.01, 0.1], [0.002, 0.05]])
    gK = rng.standard_normal((2, 2, 2 * 19))[..., ::2]
    _check((A, B, C, dt, 19, method), gK)
    with _checks.trusted():                                                    # as the training loop calls it
        _check((A.astype(np.complex64), B.astype(np.complex64), C.astype(np.complex64), dt.astype(np.float32),
                19, method), gK)


def test_vjp_uses_only_its_ctx():
    # two forwards, then their VJPs in the other order: each VJP gives its own forward's gradients
    # (refssm.ssm.kernel_prepare keeps complex128 inputs without a copy, in the oracle's ctx as in this one,
    # so the parameters themselves must not change in place between a forward and its VJP)
    rng = np.random.default_rng(1)
    cases = [(p["A"], p["B"], p["C"], np.exp(p["log_dt"]), 9, method)
             for p, method in ((ssm.init_diag(2, 4, rng=rng), "zoh"), (ssm.init_diag(2, 4, "inv", rng=rng), "euler"))]
    gK = rng.standard_normal((2, 9))
    ctxs = [fast.kernel_fwd(*args)[1] for args in cases]
    for args, ctx in reversed(list(zip(cases, ctxs))):
        for g, g0 in zip(fast.kernel_vjp(ctx, gK), KERNEL_VJP(KERNEL(*args)[1], gK)):
            close(backend.to_host(g), g0, TOL)


def test_bad_input_raises_the_oracles_error():
    p = ssm.init_diag(2, 4, rng=np.random.default_rng(0))
    for args in ((p["A"], p["B"], p["C"], -0.1, 5), (p["A"], p["B"], p["C"], 0.1, 0),
                 (p["A"], p["B"], p["C"], 0.1, 5, "rk4")):
        with pytest.raises(ValueError) as expected:
            KERNEL(*args)
        with pytest.raises(ValueError) as got:
            fast.kernel_fwd(*args)
        assert str(got.value) == str(expected.value)
    _, ctx = fast.kernel_fwd(p["A"], p["B"], p["C"], 0.1, 5)
    with pytest.raises(ValueError, match="gK must have the kernel's shape"):
        fast.kernel_vjp(ctx, np.ones((2, 4)))


def test_device_cotangent(request):
    # with CuPy (the test double of tests/fake_cupy.py, which the simulator runs on) K is a CuPy array and the
    # VJP takes a CuPy gK; the gradients come back to the host, equal to the host run's
    pytest.importorskip("fake_cupy", reason="the CuPy test double tests/fake_cupy.py is not here")
    rng = np.random.default_rng(2)
    p = ssm.init_diag(2, 4, rng=rng)
    args = (p["A"], p["B"], p["C"], np.exp(p["log_dt"]), 11, "bilinear")
    gK = rng.standard_normal((2, 11))
    K, ctx = fast.kernel_fwd(*args)
    host = fast.kernel_vjp(ctx, gK)
    cp = request.getfixturevalue("fake_cupy")
    K_device, ctx = fast.kernel_fwd(*args)
    assert type(K_device) is cp.ndarray
    np.testing.assert_array_equal(K_device.get(), K)
    for g, g0 in zip(fast.kernel_vjp(ctx, cp.asarray(gK)), host):
        np.testing.assert_array_equal(g, g0)
