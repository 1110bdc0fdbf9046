"""refssm.ops: every forward against an independent formulation written with autograd.numpy, and
every VJP against autograd and central differences (float64) through check_vjp."""

import math

import autograd.numpy as anp
import numpy as np
import pytest
from autograd.scipy.special import erf as aerf
from autograd.scipy.special import logsumexp as alogsumexp
from gradcheck import check_vjp
from hypothesis import given, settings
from hypothesis import strategies as st

from refssm import ops

FAST = settings(max_examples=8, deadline=None)
small = st.integers(1, 3)


def _rng(seed=0):
    return np.random.default_rng(seed)


# --- linear and channel affine -----------------------------------------------------------------


def _ag_linear(x, W, b):
    if x.ndim == 2:
        return anp.dot(x, W.T) + b
    return anp.einsum("oi,bil->bol", W, x) + b[None, :, None]


@FAST
@given(B=small, H_in=small, H_out=small, L=small, pooled=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_forward_and_vjp(B, H_in, H_out, L, pooled, seed):
    rng = _rng(seed)
    x = rng.normal(size=(B, H_in) if pooled else (B, H_in, L))
    W, b = rng.normal(size=(H_out, H_in)), rng.normal(size=H_out)
    y, ctx = ops.linear(x, W, b)
    np.testing.assert_allclose(y, _ag_linear(x, W, b), rtol=1e-12, atol=1e-12)
    w = rng.normal(size=y.shape)
    check_vjp(lambda x, W, b: np.sum(w * ops.linear(x, W, b)[0]), ops.linear_vjp(ctx, w), [x, W, b],
              autograd_loss=lambda x, W, b: anp.sum(w * _ag_linear(x, W, b)))


def test_linear_matches_explicit_sum():
    rng = _rng(1)
    x, W, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(5, 3)), rng.normal(size=5)
    y, _ = ops.linear(x, W, b)
    for bi, o, l in np.ndindex(2, 5, 4):
        assert math.isclose(y[bi, o, l], sum(W[o, i] * x[bi, i, l] for i in range(3)) + b[o], rel_tol=1e-12)


def test_channel_affine_vjp():
    rng = _rng(2)
    x, a, c = rng.normal(size=(2, 3, 4)), rng.normal(size=3), rng.normal(size=3)
    y, ctx = ops.channel_affine(x, a, c)
    np.testing.assert_allclose(y, a[None, :, None] * x + c[None, :, None], rtol=1e-14)
    w = rng.normal(size=y.shape)
    check_vjp(lambda x, a, c: np.sum(w * ops.channel_affine(x, a, c)[0]), ops.channel_affine_vjp(ctx, w), [x, a, c],
              autograd_loss=lambda x, a, c: anp.sum(w * (a[None, :, None] * x + c[None, :, None])))


# --- pointwise ---------------------------------------------------------------------------------


def _ag_glu(x, axis):
    a, b = anp.split(x, 2, axis=axis)
    return a / (1.0 + anp.exp(-b))


@FAST
@given(B=small, H=small, L=small, axis=st.sampled_from([1, 2, -1]), seed=st.integers(0, 2**16))
def test_glu_forward_and_vjp(B, H, L, axis, seed):
    rng = _rng(seed)
    shape = [B, H, L]
    shape[axis] *= 2
    x = 3.0 * rng.normal(size=shape)
    y, ctx = ops.glu(x, axis=axis)
    np.testing.assert_allclose(y, _ag_glu(x, axis), rtol=1e-12, atol=1e-15)
    w = rng.normal(size=y.shape)
    check_vjp(lambda x: np.sum(w * ops.glu(x, axis)[0]), [ops.glu_vjp(ctx, w)], [x],
              autograd_loss=lambda x: anp.sum(w * _ag_glu(x, axis)))


def test_glu_is_stable_for_large_gates():
    y, ctx = ops.glu(np.array([[[2.0], [3.0], [800.0], [-800.0]]]))
    np.testing.assert_allclose(y[0, :, 0], [2.0, 0.0])
    assert np.all(np.isfinite(ops.glu_vjp(ctx, np.ones_like(y))))


def test_gelu_values_and_vjp():
    # x Phi(x) at known points: Phi(1) = 0.8413447460685429, Phi(-1) = 1 - Phi(1)
    y, _ = ops.gelu(np.array([0.0, 1.0, -1.0, 10.0, -10.0]))
    np.testing.assert_allclose(y, [0.0, 0.8413447460685429, -0.15865525393145707, 10.0, 0.0], rtol=1e-14, atol=1e-20)
    rng = _rng(3)
    x = 2.0 * rng.normal(size=(2, 3, 5))
    y, ctx = ops.gelu(x)
    w = rng.normal(size=y.shape)
    check_vjp(lambda x: np.sum(w * ops.gelu(x)[0]), [ops.gelu_vjp(ctx, w)], [x],
              autograd_loss=lambda x: anp.sum(w * 0.5 * x * (1.0 + aerf(x / anp.sqrt(2.0)))))


# --- norms -------------------------------------------------------------------------------------


def _ag_norm(x, gamma, beta, axes, eps):
    shape = [1] * x.ndim
    shape[1] = -1
    mu = anp.mean(x, axis=axes, keepdims=True)
    var = anp.mean((x - mu) ** 2, axis=axes, keepdims=True)
    return anp.reshape(gamma, shape) * (x - mu) / anp.sqrt(var + eps) + anp.reshape(beta, shape)


@FAST
@given(B=small, H=st.integers(1, 4), L=small, eps=st.sampled_from([1e-5, 0.5]), seed=st.integers(0, 2**16))
def test_layer_norm_forward_and_vjp(B, H, L, eps, seed):
    rng = _rng(seed)
    x, gamma, beta = rng.normal(size=(B, H, L)), rng.normal(size=H), rng.normal(size=H)
    y, ctx = ops.layer_norm(x, gamma, beta, eps=eps)
    np.testing.assert_allclose(y, _ag_norm(x, gamma, beta, 1, eps), rtol=1e-10, atol=1e-12)
    w = rng.normal(size=y.shape)
    check_vjp(lambda x, g, b: np.sum(w * ops.layer_norm(x, g, b, eps=eps)[0]), ops.layer_norm_vjp(ctx, w),
              [x, gamma, beta], autograd_loss=lambda x, g, b: anp.sum(w * _ag_norm(x, g, b, 1, eps)), atol=1e-7)


def test_layer_norm_normalizes_each_time_step():
    x = _rng(4).normal(loc=3.0, scale=5.0, size=(2, 6, 3))
    y, _ = ops.layer_norm(x, np.ones(6), np.zeros(6), eps=1e-12)
    np.testing.assert_allclose(y.mean(axis=1), 0.0, atol=1e-13)
    np.testing.assert_allclose(y.var(axis=1), 1.0, rtol=1e-10)


@pytest.mark.parametrize("shape", [(3, 2, 4), (5, 3)])
def test_batch_norm_train(shape):
    rng = _rng(5)
    H = shape[1]
    x, gamma, beta = rng.normal(loc=2.0, size=shape), rng.normal(size=H), rng.normal(size=H)
    rm, rv = rng.normal(size=H), rng.uniform(0.5, 2.0, size=H)
    rm0, rv0, x0 = rm.copy(), rv.copy(), x.copy()
    y, ctx, rm_new, rv_new = ops.batch_norm(x, gamma, beta, rm, rv, train=True, momentum=0.3, eps=1e-5)
    # each channel normalised by its own statistics over batch and time
    per_channel = np.moveaxis(x, 1, 0).reshape(H, -1)                      # (H, B*L)
    expect = (per_channel - per_channel.mean(1, keepdims=True)) / np.sqrt(per_channel.var(1, keepdims=True) + 1e-5)
    expect = gamma[:, None] * expect + beta[:, None]
    np.testing.assert_allclose(np.moveaxis(y, 1, 0).reshape(H, -1), expect, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rm_new, 0.7 * rm0 + 0.3 * per_channel.mean(1), rtol=1e-14)
    np.testing.assert_allclose(rv_new, 0.7 * rv0 + 0.3 * per_channel.var(1, ddof=1), rtol=1e-14)
    np.testing.assert_array_equal(rm, rm0)                                 # pure: nothing mutated
    np.testing.assert_array_equal(rv, rv0)
    np.testing.assert_array_equal(x, x0)
    axes = (0,) + tuple(range(2, len(shape)))
    w = rng.normal(size=y.shape)
    check_vjp(lambda x, g, b: np.sum(w * ops.batch_norm(x, g, b, rm, rv, True)[0]), ops.batch_norm_vjp(ctx, w),
              [x, gamma, beta], autograd_loss=lambda x, g, b: anp.sum(w * _ag_norm(x, g, b, axes, 1e-5)), atol=1e-7)


def test_batch_norm_eval():
    rng = _rng(6)
    x, gamma, beta = rng.normal(size=(2, 3, 4)), rng.normal(size=3), rng.normal(size=3)
    rm, rv = rng.normal(size=3), rng.uniform(0.5, 2.0, size=3)
    y, ctx, rm_out, rv_out = ops.batch_norm(x, gamma, beta, rm, rv, train=False, eps=1e-3)
    np.testing.assert_array_equal(rm_out, rm)
    np.testing.assert_array_equal(rv_out, rv)

    def ag(x, g, b):
        return g[None, :, None] * (x - rm[None, :, None]) / anp.sqrt(rv[None, :, None] + 1e-3) + b[None, :, None]

    np.testing.assert_allclose(y, ag(x, gamma, beta), rtol=1e-13)
    w = rng.normal(size=y.shape)
    check_vjp(lambda x, g, b: np.sum(w * ops.batch_norm(x, g, b, rm, rv, False, eps=1e-3)[0]),
              ops.batch_norm_vjp(ctx, w), [x, gamma, beta], autograd_loss=lambda x, g, b: anp.sum(w * ag(x, g, b)))


# --- dropout -----------------------------------------------------------------------------------


def test_dropout_mask_tied_over_time_and_scaled():
    p = 0.25
    x = np.ones((400, 50, 7))
    y, _ = ops.dropout(x, p, _rng(7).random(x.shape[:2]), train=True)
    assert set(np.unique(y)) == {0.0, 1.0 / (1.0 - p)}
    np.testing.assert_array_equal(y, y[:, :, :1] * np.ones((1, 1, 7)))     # one draw per (b, h)
    kept = np.mean(y[:, :, 0] > 0)
    assert abs(kept - (1.0 - p)) < 4.0 * math.sqrt(p * (1 - p) / (400 * 50))


def test_dropout_vjp_with_fixed_mask():
    rng = _rng(8)
    p = 0.4
    x, w = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    y, ctx = ops.dropout(x, p, np.random.default_rng(123).random(x.shape[:2]), train=True)
    mask = y / x                                                           # the mask the forward used
    assert 0 < np.count_nonzero(mask) < mask.size
    np.testing.assert_allclose(ops.dropout_vjp(ctx, w), w * mask, rtol=1e-12)
    # the same seed gives the same mask, so the loss is a fixed function of x
    check_vjp(lambda x: np.sum(w * ops.dropout(x, p, np.random.default_rng(123).random(x.shape[:2]), True)[0]),
              [ops.dropout_vjp(ctx, w)], [x], autograd_loss=lambda x: anp.sum(w * mask * x))


@pytest.mark.parametrize("p, train", [(0.5, False), (0.0, True)])
def test_dropout_identity(p, train):
    x = _rng(9).normal(size=(2, 3, 4))
    y, ctx = ops.dropout(x, p, None, train=train)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(ops.dropout_vjp(ctx, 2.0 * x), 2.0 * x)


# --- embedding, pooling, loss ------------------------------------------------------------------


def test_embedding_forward_and_vjp():
    rng = _rng(10)
    tokens = np.array([[0, 3, 3, 1], [2, 3, 0, 0]])                        # repeats: the VJP must add them
    E = rng.normal(size=(5, 3))
    y, ctx = ops.embedding(tokens, E)
    assert y.shape == (2, 3, 4)
    for b, l in np.ndindex(2, 4):
        np.testing.assert_array_equal(y[b, :, l], E[tokens[b, l]])
    w = rng.normal(size=y.shape)
    gE = ops.embedding_vjp(ctx, w)
    np.testing.assert_array_equal(gE[4], 0.0)                              # unused row
    check_vjp(lambda E: np.sum(w * ops.embedding(tokens, E)[0]), [gE], [E],
              autograd_loss=lambda E: anp.sum(w * anp.transpose(E[tokens], (0, 2, 1))))


@FAST
@given(B=small, H=small, L=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_masked_mean_forward_and_vjp(B, H, L, seed):
    rng = _rng(seed)
    x = rng.normal(size=(B, H, L))
    mask = rng.random((B, L)) < 0.6
    mask[:, 0] = True                                                       # every row has a valid step
    y, ctx = ops.masked_mean(x, mask)
    for b, h in np.ndindex(B, H):
        vals = [x[b, h, l] for l in range(L) if mask[b, l]]
        assert math.isclose(y[b, h], sum(vals) / len(vals), rel_tol=1e-12, abs_tol=1e-15)
    w = rng.normal(size=y.shape)
    m = mask.astype(float)
    check_vjp(lambda x: np.sum(w * ops.masked_mean(x, mask)[0]), [ops.masked_mean_vjp(ctx, w)], [x],
              autograd_loss=lambda x: anp.sum(w * anp.sum(x * m[:, None, :], axis=2) / anp.sum(m, axis=1)[:, None]))


def test_masked_mean_without_mask_is_time_mean():
    x = _rng(11).normal(size=(2, 3, 4))
    np.testing.assert_allclose(ops.masked_mean(x)[0], x.mean(axis=2), rtol=1e-14)


def test_cross_entropy_matches_direct_softmax():
    rng = _rng(12)
    z, labels = rng.normal(size=(6, 4)), np.array([0, 3, 1, 1, 2, 0])
    loss, _ = ops.cross_entropy(z, labels)
    direct = -np.mean([math.log(math.exp(z[b, labels[b]]) / sum(math.exp(v) for v in z[b])) for b in range(6)])
    assert math.isclose(loss, direct, rel_tol=1e-12)


def test_cross_entropy_is_stable_for_huge_logits():
    loss, ctx = ops.cross_entropy(np.array([[1000.0, 0.0], [1000.0, 0.0]]), np.array([0, 1]))
    assert math.isclose(loss, 500.0, rel_tol=1e-12)                        # (0 + 1000) / 2
    np.testing.assert_allclose(ops.cross_entropy_vjp(ctx), [[0.0, 0.0], [0.5, -0.5]], atol=1e-300)


def test_cross_entropy_vjp():
    rng = _rng(13)
    z, labels = 3.0 * rng.normal(size=(5, 3)), np.array([2, 0, 1, 2, 2])
    _, ctx = ops.cross_entropy(z, labels)
    g = 2.5
    rows = np.arange(5)
    check_vjp(lambda z: g * ops.cross_entropy(z, labels)[0], [ops.cross_entropy_vjp(ctx, g)], [z],
              autograd_loss=lambda z: g * anp.mean(alogsumexp(z, axis=1) - z[rows, labels]))


def test_masked_sequence_cross_entropy_vjp():
    """Classes on axis 1, one label per step, padded steps masked out: the mean over valid positions."""
    rng = _rng(14)
    z, labels = 2.0 * rng.normal(size=(3, 4, 5)), rng.integers(0, 4, (3, 5))
    mask = rng.random((3, 5)) < 0.7
    mask[0, 0] = True
    _, ctx = ops.cross_entropy(z, labels, mask)
    b, k = np.nonzero(mask)

    def ref(z):
        lse = alogsumexp(z, axis=1)                                            # (3, 5)
        return anp.sum((lse - z[np.arange(3)[:, None], labels, np.arange(5)[None]])[b, k]) / b.size

    np.testing.assert_allclose(ops.cross_entropy(z, labels, mask)[0], ref(z), rtol=1e-12)
    check_vjp(lambda z: ops.cross_entropy(z, labels, mask)[0], [ops.cross_entropy_vjp(ctx)], [z], autograd_loss=ref)


def test_mse_vjp():
    rng = _rng(15)
    pred, target = rng.normal(size=6), rng.normal(size=6)
    _, ctx = ops.mse(pred, target)
    check_vjp(lambda p: 1.5 * ops.mse(p, target)[0], [ops.mse_vjp(ctx, 1.5)], [pred],
              autograd_loss=lambda p: 1.5 * anp.mean((p - target) ** 2))
    np.testing.assert_allclose(ops.mse(pred, target)[0] * 1.5, 1.5 * np.mean((pred - target) ** 2))


def test_take_steps_and_vjp_with_a_repeated_step():
    rng = _rng(16)
    x = rng.normal(size=(2, 3, 6))
    index = np.array([[5, 1, 1], [0, 2, 4]])
    y, ctx = ops.take_steps(x, index)
    np.testing.assert_array_equal(y[1, :, 2], x[1, :, 4])
    np.testing.assert_array_equal(y[0, :, 1], x[0, :, 1])
    gy = rng.normal(size=y.shape)
    check_vjp(lambda x: np.sum(gy * ops.take_steps(x, index)[0]), [ops.take_steps_vjp(ctx, gy)], [x],
              autograd_loss=lambda x: anp.sum(gy * anp.stack([x[b][:, index[b]] for b in range(2)])))


# --- bad input ---------------------------------------------------------------------------------

X3 = np.ones((2, 4, 3))
H4 = np.ones(4)
BAD = [
    (lambda: ops.linear(np.ones(4), np.ones((2, 4)), np.ones(2)), "x must have ndim >= 2"),
    (lambda: ops.linear(X3, np.ones((2, 3)), np.ones(2)), r"x.shape\[1\] must equal W.shape\[1\]"),
    (lambda: ops.linear(X3, np.ones((2, 4)), np.ones(3)), r"b must have shape \(2,\)"),
    (lambda: ops.linear(X3 * np.nan, np.ones((2, 4)), np.ones(2)), "x must be finite"),
    (lambda: ops.linear_vjp(ops.linear(X3, np.ones((2, 4)), np.ones(2))[1], np.ones((2, 3, 3))), "gy must have shape"),
    (lambda: ops.glu(np.ones((2, 3, 4))), "must be even"),
    (lambda: ops.glu(X3, axis=3), r"axis must be an integer in \[-3, 2\]"),
    (lambda: ops.gelu([np.inf]), "x must be finite"),
    (lambda: ops.layer_norm(X3, H4, H4, eps=0.0), r"eps must lie in \(0, inf\)"),
    (lambda: ops.layer_norm(X3, np.ones(3), H4), r"gamma must have shape \(4,\)"),
    (lambda: ops.batch_norm(X3, H4, H4, H4, -H4, True), r"running_var must lie in \[0, inf\)"),
    (lambda: ops.batch_norm(X3, H4, H4, H4, H4, True, momentum=1.5), r"momentum must lie in \[0, 1\]"),
    (lambda: ops.batch_norm(X3, H4, H4, H4, H4, True, eps=-1.0), r"eps must lie in \(0, inf\)"),
    (lambda: ops.batch_norm(np.ones((1, 4, 1)), H4, H4, H4, H4, True), "at least 2 values per channel"),
    (lambda: ops.batch_norm(X3, H4, H4, np.ones(3), H4, False), r"running_mean must have shape \(4,\)"),
    (lambda: ops.batch_norm(X3, H4, np.ones(2), H4, H4, False), r"beta must have shape \(4,\)"),
    (lambda: ops.channel_affine(X3, np.ones(3), H4), r"alpha must have shape \(4,\)"),
    (lambda: ops.batch_norm(X3, H4, H4, H4, H4, "yes"), "train must be one of"),
    (lambda: ops.dropout(X3, 1.0, np.zeros((2, 4)), True), r"p must lie in \[0, 1\)"),
    (lambda: ops.dropout(X3, -0.1, np.zeros((2, 4)), True), r"p must lie in \[0, 1\)"),
    (lambda: ops.dropout(X3, 0.5, np.ones((2, 4)), True), r"u must lie in \[0, 1\)"),
    (lambda: ops.dropout(X3, 0.5, np.zeros((2, 3)), True), r"u must have shape \(2, 4\)"),
    (lambda: ops.embedding(np.array([[0.0, 1.0]]), np.ones((3, 2))), "tokens must be a 2-D integer array"),
    (lambda: ops.embedding(np.array([[0, 3]]), np.ones((3, 2))), r"tokens must lie in \[0, 2\]"),
    (lambda: ops.masked_mean(X3, np.ones((2, 3))), "mask must be a boolean array"),
    (lambda: ops.masked_mean(X3, np.ones((2, 4), dtype=bool)), r"mask must have shape \(2, 3\)"),
    (lambda: ops.masked_mean(X3, np.array([[True] * 3, [False] * 3])), "at least 1 valid step"),
    (lambda: ops.cross_entropy(np.ones((2, 3)), np.array([0, 3])), r"labels must lie in \[0, 2\]"),
    (lambda: ops.cross_entropy(np.ones((2, 3)), np.array([0])), r"labels must have shape \(2,\)"),
    (lambda: ops.cross_entropy(np.ones(3), np.array([0])), "logits must have ndim >= 2"),
    (lambda: ops.cross_entropy(np.ones((2, 3, 4)), np.zeros((2, 4), int), np.zeros((2, 4), bool)), "at least 1 valid"),
    (lambda: ops.take_steps(X3, np.array([[3]] * 2)), r"index must lie in \[0, 2\]"),
    (lambda: ops.mse(np.ones(2), np.ones(3)), r"target must have shape \(2,\)"),
]


@pytest.mark.parametrize("call, message", BAD)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
