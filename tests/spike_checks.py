"""Helpers shared by the neuron fast-path tests (tests/test_kernels_spiking.py: Numba; tests/test_kernels_cuda_spiking.py:
CUDA): the dyadic lattice of exact inputs, signal and parameter draws, and the tolerances' yardsticks."""

import numpy as np

from refssm import ssm

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
