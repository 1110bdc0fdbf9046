"""refssm.kernels.ops (the fused Numba LayerNorm and GLU) against their oracles in refssm.ops.

Draws: (B, H, L) with a batch of 1, H = 1 and odd sizes, L = 1 and odd, non-contiguous x (transposed
or strided views), and inputs with a large common offset (where a one-pass variance would cancel).
Other shapes and axes run the oracle: checked to give the oracle's values through the fast path's
ctx.

float64: values and gradients to 1e-10 relative to the largest oracle value.

float32: against the float64 oracle on the same (float32-valued) inputs, i.e. the error of float32
itself, relative to the largest oracle value (for LayerNorm's gx, which cancels to ~0 when H = 2, to
the largest term gamma gy / std). LayerNorm computes in float64 and rounds once: 1e-6 (worst seen over
800 draws, means of 0 and 100: 3e-8). The GLU computes in float32 and its VJP forms 1 - s from the
float32 s of the ctx, which near s = 1 loses eps32 absolutely: 2e-5 (worst seen, |b| up to ~100:
3.5e-6).
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from refssm import backend, ops
from refssm.kernels import ops as fast

seeds = st.integers(0, 2**31)
TOL = {np.float64: 1e-10, np.float32: {"layer_norm": 1e-6, "glu": 2e-5}}


def _close(fast_value, oracle_value, tol, scale=None):
    """assert_allclose with rtol = tol, atol = tol * scale (default: the largest oracle value)."""
    if scale is None:
        scale = float(np.max(np.abs(oracle_value), initial=0.0))
    scale = max(scale, 1e-300)
    np.testing.assert_allclose(fast_value, oracle_value, rtol=tol, atol=tol * scale)


def _array(rng, shape, layout, offset=0.0):
    if layout == "transposed":
        return np.ascontiguousarray(rng.standard_normal(shape[::-1]) + offset).T
    if layout == "strided":
        return (rng.standard_normal(shape[:-1] + (2 * shape[-1],)) + offset)[..., ::2]
    return rng.standard_normal(shape) + offset


shapes = st.tuples(st.sampled_from([1, 2, 3]), st.sampled_from([1, 2, 5, 16]), st.sampled_from([1, 2, 7, 33, 300]))
layouts = st.sampled_from(["contiguous", "transposed", "strided"])
dtypes = st.sampled_from([np.float64, np.float32])


@settings(max_examples=60, deadline=None)
@given(shape=shapes, layout=layouts, dtype=dtypes, offset=st.sampled_from([0.0, 100.0]), seed=seeds)
def test_layer_norm_matches_oracle(shape, layout, dtype, offset, seed):
    rng = np.random.default_rng(seed)
    x = _array(rng, shape, layout, offset).astype(dtype)
    gamma, beta = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    y, ctx = fast.layer_norm(x, gamma, beta)
    y0, ctx0 = ops.layer_norm(x.astype(np.float64), gamma, beta)
    tol = TOL[dtype] if dtype == np.float64 else TOL[dtype]["layer_norm"]
    assert y.dtype == dtype
    _close(y, y0, tol)
    grads, grads0 = fast.layer_norm_vjp(ctx, gy), ops.layer_norm_vjp(ctx0, gy.astype(np.float64))
    # gx = (gxhat - means) / std cancels (to ~0 for H = 2): its error scales with the terms, not the sum
    terms = float(np.max(np.abs(gamma[:, None] * gy) * ctx0[1]))
    for g, g0, sc in zip(grads, grads0, (terms, None, None)):
        assert g.dtype == dtype and g.shape == g0.shape
        _close(g, g0, tol, sc)


@settings(max_examples=60, deadline=None)
@given(shape=shapes, layout=layouts, dtype=dtypes, scale=st.sampled_from([1.0, 30.0]), seed=seeds)
def test_glu_matches_oracle(shape, layout, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    B, H, L = shape
    x = (scale * _array(rng, (B, 2 * H, L), layout)).astype(dtype)          # large |b|: saturation
    gy = rng.standard_normal((B, H, L)).astype(dtype)
    y, ctx = fast.glu(x)
    y0, ctx0 = ops.glu(x.astype(np.float64))
    tol = TOL[dtype] if dtype == np.float64 else TOL[dtype]["glu"]
    assert y.dtype == dtype
    _close(y, y0, tol)
    gx = fast.glu_vjp(ctx, gy)
    assert gx.dtype == dtype
    _close(gx, ops.glu_vjp(ctx0, gy.astype(np.float64)), tol)


def test_exp_is_within_an_ulp_or_two():
    for dtype in (np.float64, np.float32):
        z = -np.concatenate([np.linspace(0.0, 80.0, 40001), [1e-30, 1e-5, 0.5 * np.log(2.0)]]).astype(dtype)
        s, _ = fast.glu(np.stack([np.ones_like(z), z])[None, :, :])            # a = 1: y = sigmoid(z)
        ref = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
        assert np.max(np.abs(s[0, 0] - ref) / ref) <= 3 * np.finfo(dtype).eps


@pytest.mark.parametrize("case", ["layer_norm_2d", "glu_axis_2", "glu_axis_0_4d"])
def test_other_shapes_run_the_oracle(case):
    rng = np.random.default_rng(0)
    if case == "layer_norm_2d":
        x, gamma, beta = rng.standard_normal((4, 6)), rng.standard_normal(6), rng.standard_normal(6)
        gy = rng.standard_normal(x.shape)
        y, ctx = fast.layer_norm(x, gamma, beta)
        y0, ctx0 = ops.layer_norm(x, gamma, beta)
        pairs = [(y, y0)] + list(zip(fast.layer_norm_vjp(ctx, gy), ops.layer_norm_vjp(ctx0, gy)))
    else:
        x, axis = (rng.standard_normal((2, 3, 6)), 2) if case == "glu_axis_2" else \
            (rng.standard_normal((4, 2, 3, 5)), 0)
        y, ctx = fast.glu(x, axis)
        y0, ctx0 = ops.glu(x, axis)
        gy = rng.standard_normal(y.shape)
        pairs = [(y, y0), (fast.glu_vjp(ctx, gy), ops.glu_vjp(ctx0, gy))]
    for a, b in pairs:
        np.testing.assert_array_equal(a, b)


BAD = [
    ("layer_norm", (np.ones((2, 3, 4)), np.ones(2), np.zeros(3)), {}),
    ("layer_norm", (np.ones((2, 3, 4)), np.ones((3, 1)), np.zeros(3)), {}),
    ("layer_norm", (np.full((2, 3, 4), np.nan), np.ones(3), np.zeros(3)), {}),
    ("layer_norm", (np.ones((2, 3, 4)), np.ones(3), np.zeros(3)), {"eps": 0.0}),
    ("glu", (np.ones((2, 3, 4)),), {}),
    ("glu", (np.full((2, 4, 4), np.inf),), {}),
    ("glu", (np.ones((2, 4, 4)),), {"axis": 3}),
]


@pytest.mark.parametrize("name, args, kwargs", BAD)
def test_bad_input_raises_the_oracles_error(name, args, kwargs):
    with pytest.raises(ValueError) as expected:
        getattr(ops, name)(*args, **kwargs)
    with pytest.raises(ValueError) as got:
        getattr(fast, name)(*args, **kwargs)
    assert str(got.value) == str(expected.value)


def test_registered_in_the_backend():
    assert backend.op("layer_norm", "numba") == (fast.layer_norm, fast.layer_norm_vjp)
    assert backend.op("glu", "numba") == (fast.glu, fast.glu_vjp)
