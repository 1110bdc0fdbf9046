"""Helpers shared by the fast-path tests, Numba (tests/test_kernels_*.py) and CUDA (tests/test_kernels_cuda_*.py):
draws (the dyadic lattice of exact inputs, signals, neuron parameters, fractional SSM layers), the LIF inputs every
implementation must refuse, the tolerances' yardsticks, and the skip of the CUDA tests where no kernel can run."""

import numpy as np
import pytest

from refssm import ssm, surrogate

LATTICE = np.array([-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5])   # dyadic: exact arithmetic, real ties v == v_th


def signal(rng, shape, on_lattice, layout="contiguous"):
    """x of `shape`: contiguous, a transposed view, or every other step of a longer signal."""
    def draw(shape):
        return rng.choice(LATTICE, shape) if on_lattice else rng.normal(0.4, 1.0, shape)
    if layout == "transposed":
        return np.ascontiguousarray(draw(shape[::-1])).T
    if layout == "strided":
        return draw(shape[:-1] + (2 * shape[-1],))[..., ::2]
    return draw(shape)


def param(rng, lead, values, on_lattice, per_channel):
    shape = lead[-1:] if per_channel else ()
    return rng.choice(values, shape) if on_lattice else rng.uniform(min(values), max(values), shape)


def close(fast_value, oracle_value, tol):
    """assert_allclose with rtol = tol and atol = tol * the largest oracle value."""
    scale = max(float(np.max(np.abs(oracle_value), initial=0.0)), 1e-300)
    np.testing.assert_allclose(fast_value, oracle_value, rtol=tol, atol=tol * scale)


def close_threshold(gth, gth0, gx0, tol):
    """dL/dv_th is a sum over time (and rows) that can cancel to far below its terms, whose size is
    about that of dL/dx: rtol = tol, atol = tol * the largest sum of |dL/dx| over an entry's terms."""
    terms = ssm.sum_to_shape(np.abs(gx0).sum(axis=-1), np.shape(gth0))
    scale = max(float(np.max(terms, initial=0.0)), 1e-300)
    np.testing.assert_allclose(gth, gth0, rtol=tol, atol=tol * scale)


_X, _SG = np.ones((2, 3, 5)), surrogate.get("atan")
LIF_BAD_INPUTS = [                         # (args, kwargs) of lif(x, tau, v_th, sg, ...) that raise ValueError
    ((np.array([0.0, np.nan]), 0.5, 1.0, _SG), {}),
    ((np.float64(1.0), 0.5, 1.0, _SG), {}),
    ((np.zeros((2, 0)), 0.5, 1.0, _SG), {}),
    ((_X, 1.0, 1.0, _SG), {}),
    ((_X, 0.5, 0.0, _SG), {}),
    ((_X, 0.5, 1.0, _SG), {"reset": "none"}),
    ((_X, 0.5, 1.0, _SG), {"gradient": "sltt"}),
    ((_X, np.full(4, 0.5), 1.0, _SG), {}),
    ((_X, 0.5, 1.0, _SG), {"v_reset": np.inf}),
]


def fractional_layer(rng, H, N2, shared, strided):
    """A (H or 1, N2) stable modes, B, C (H, N2) complex, dt (H,): contiguous, or views with stride 2."""
    def draw(*shape):
        return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    A = -rng.uniform(0.05, 2, (1 if shared else H, 2 * N2)) + 1j * rng.uniform(-4, 4, (1 if shared else H, 2 * N2))
    B, C = 1 + 0.2 * draw(H, 2 * N2), draw(H, 2 * N2)
    dt = rng.uniform(0.01, 0.3, 2 * H)
    if strided:
        return A[:, ::2], B[:, ::2], C[:, ::2], dt[::2]
    return A[:, :N2].copy(), B[:, :N2].copy(), C[:, :N2].copy(), dt[:H].copy()


def require_cuda_kernels():
    """Skip the calling test module unless Numba's CUDA target can run kernels: in its simulator (the default
    under pytest, tests/conftest.py) or on a GPU."""
    cuda = pytest.importorskip("numba.cuda", reason="numba.cuda does not import: no CUDA kernels to test")
    if not cuda.is_available():
        pytest.skip("numba.cuda sees no GPU and the simulator is off (NUMBA_ENABLE_CUDASIM=0)",
                    allow_module_level=True)
