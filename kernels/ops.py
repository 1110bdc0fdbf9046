"""Numba fast paths of the memory-bound dense ops of refssm.ops: LayerNorm over channels and the GLU,
each a fused pass over (B, H, L) activations, with its VJP. Registered in refssm.backend against the
oracles refssm.ops.layer_norm / layer_norm_vjp and refssm.ops.glu / glu_vjp
(tests/test_kernels_ops.py).

Scope: x (B, H, L) (and for the GLU, the split along axis 1). Any other shape or axis calls the
oracle (same results, same errors); the VJP then calls the oracle's VJP.

dtype: float32 stays float32, anything else is float64 (as the oracles' inputs are checked). The
LayerNorm computes in float64 in both dtypes (float32 values are widened as they are read, results
rounded once as they are written): its mean and variance per (b, l) (two passes over an L2-resident
tile, the variance as the mean of centred squares, as numpy computes it), x - mean (which in float32
would lose ulp(mean) / std, large when the mean dominates) and its gradients. The GLU runs in the
input's dtype.

LayerNorm's ctx keeps x (a reference, no copy) with the mean and 1/std per (b, l), and its VJP forms
x_hat = (x - mean) / std again inside its fused pass: it reads x where the oracle reads a stored
x_hat, the same bytes, and the forward writes one full array fewer. The GLU's ctx is the oracle's:
the first half a and sigmoid(b).

The GLU's sigmoid uses an exp that LLVM vectorises (`exp_nonpositive`: Cody-Waite reduction by
ln 2 and a degree-13 Taylor polynomial, within 2 ulp in float64), where math.exp would be a libm call
per element.
"""

import math

import llvmlite.ir as llvm_ir
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from refssm import ops
from refssm._checks import as_array, in_range

TILE_BYTES = 1 << 18            # LayerNorm tile: H channels x LB steps, about 256 KiB (L2)
PARTIALS = 64                   # fixed number of partial sums for gamma/beta: results do not depend
                                # on the thread count


def _dtype(x):
    return np.dtype(np.float32) if getattr(x, "dtype", None) == np.float32 else np.dtype(np.float64)


# --------------------------------------------------------------------------------------------------
# A vectorisable exp for z <= 0
# --------------------------------------------------------------------------------------------------

@intrinsic
def _pow2(typingctx, k, like):
    """2.0**k in like's float type, for an integer k in the normal range, from its bits."""
    sig = like(k, like)

    def codegen(context, builder, signature, args):
        kk = args[0]
        if signature.args[1] == types.float32:
            i32 = llvm_ir.IntType(32)
            bits = builder.shl(builder.add(builder.trunc(kk, i32), i32(127)), i32(23))
            return builder.bitcast(bits, llvm_ir.FloatType())
        i64 = llvm_ir.IntType(64)
        bits = builder.shl(builder.add(kk, i64(1023)), i64(52))
        return builder.bitcast(bits, llvm_ir.DoubleType())

    return sig, codegen


def exp_constants(dtype):
    """Constants of `exp_nonpositive`, a tuple of `dtype` scalars (a tuple: the loops keep them in
    registers, where array elements would be reloaded after every store): log2 e, ln 2 = hi + lo (hi exact in 9 bits, so
    k hi is exact), the lowest z, 1/2, 0, and 1/n! for n = 13 .. 0."""
    lowest = -87.0 if np.dtype(dtype) == np.float32 else -708.0
    taylor = [1.0 / math.factorial(n) for n in range(13, -1, -1)]
    return tuple(np.array([1.0 / math.log(2.0), 0.693359375, -2.121944400546905827679e-4, lowest, 0.5,
                           0.0] + taylor, dtype))


@njit(cache=True, error_model="numpy")
def exp_nonpositive(z, ce):
    """exp(z) for z <= 0 (0 below ce[3], near where exp underflows): z = k ln 2 + r with |r| <= ln2/2,
    exp(z) = 2^k p(r), p the Taylor polynomial of degree 13 (remainder below 2e-17 relative)."""
    zc = max(z, ce[3])
    k = np.floor(zc * ce[0] + ce[4])
    r = (zc - k * ce[1]) - k * ce[2]
    p = ((((((ce[6] * r + ce[7]) * r + ce[8]) * r + ce[9]) * r + ce[10]) * r + ce[11]) * r + ce[12]) * r
    p = ((((((p + ce[13]) * r + ce[14]) * r + ce[15]) * r + ce[16]) * r + ce[17]) * r + ce[18]) * r + ce[19]
    e = p * _pow2(np.int64(k), z)
    return e if z >= ce[3] else ce[5]


@njit(cache=True, error_model="numpy")
def _sigmoid(z, ce):
    """1 / (1 + exp(-z)) without overflow: with e = exp(-|z|), 1/(1 + e) for z >= 0, e/(1 + e) else."""
    e = exp_nonpositive(-abs(z), ce)
    q = ce[19] / (ce[19] + e)
    return q if z >= ce[5] else e * q


# --------------------------------------------------------------------------------------------------
# GLU
# --------------------------------------------------------------------------------------------------

@njit(parallel=True, cache=True, error_model="numpy")
def _glu_forward(x, ce, y, sig):
    """y = a sigmoid(b), sig = sigmoid(b) for a = x[:, :H], b = x[:, H:], row by row."""
    B, H2, L = x.shape
    H = H2 // 2
    for row in prange(B * H):
        b, h = row // H, row % H
        a_r, b_r, y_r, s_r = x[b, h], x[b, H + h], y[b, h], sig[b, h]
        for l in range(L):
            s = _sigmoid(b_r[l], ce)
            s_r[l] = s
            y_r[l] = a_r[l] * s


@njit(parallel=True, cache=True, error_model="numpy")
def _glu_backward(a, sig, gy, one, gx):
    """gx = concat(gy s, gy a s (1 - s)) along axis 1."""
    B, H, L = a.shape
    for row in prange(B * H):
        b, h = row // H, row % H
        a_r, s_r, g_r, ga, gb = a[b, h], sig[b, h], gy[b, h], gx[b, h], gx[b, H + h]
        for l in range(L):
            s, g = s_r[l], g_r[l]
            ga[l] = g * s
            gb[l] = g * a_r[l] * s * (one - s)


def glu(x, axis=1):
    """Fast path of refssm.ops.glu: y = a * sigmoid(b), x split into halves a, b along `axis`.
    Fused for x (B, 2H, L) split along axis 1 (or -2); any other shape or axis runs the oracle.
    Returns (y, ctx); y in x's dtype (float32 or float64)."""
    x_ = np.asarray(x) if isinstance(x, np.ndarray) else None
    if x_ is None or x_.ndim != 3 or isinstance(axis, bool) or axis not in (1, -2) or x_.shape[1] % 2:
        y, ctx = ops.glu(x, axis)
        return y, (None, ctx)
    x = np.ascontiguousarray(as_array("x", x, min_ndim=1, dtype=_dtype(x)))
    B, H2, L = x.shape
    y, sig = np.empty((B, H2 // 2, L), x.dtype), np.empty((B, H2 // 2, L), x.dtype)
    if y.size:
        _glu_forward(x, exp_constants(x.dtype), y, sig)
    return y, (x[:, :H2 // 2], sig)


def glu_vjp(ctx, gy):
    """Fast path of refssm.ops.glu_vjp: gx = concat(gy s, gy a s (1 - s)) along axis 1."""
    if ctx[0] is None:                                     # the oracle ran
        return ops.glu_vjp(ctx[1], gy)
    a, sig = ctx
    gy = np.asarray(gy)
    if gy.shape != sig.shape:
        raise ValueError(f"gy must have shape {sig.shape}, got {gy.shape}")
    gy = np.ascontiguousarray(gy, sig.dtype)
    B, H, L = sig.shape
    gx = np.empty((B, 2 * H, L), sig.dtype)
    if gx.size:
        _glu_backward(a, sig, gy, sig.dtype.type(1), gx)
    return gx


# --------------------------------------------------------------------------------------------------
# LayerNorm over channels
# --------------------------------------------------------------------------------------------------

@njit(parallel=True, cache=True, error_model="numpy")
def _layer_norm_forward(x, gamma, beta, eps, y, mean, rstd, LB):
    """Per task (b, steps l0 .. l0 + LB): mean and variance over the H channels in float64 (two passes
    over the tile), then y = gamma (x - mean) rstd + beta, formed in float64 and rounded once to x's
    dtype. mean, rstd (B, L) float64."""
    B, H, L = x.shape
    nl = (L + LB - 1) // LB
    for task in prange(B * nl):
        b, l0 = task // nl, (task % nl) * LB
        n = min(LB, L - l0)
        acc = np.zeros(n)
        for h in range(H):
            xr = x[b, h, l0:l0 + n]
            for l in range(n):
                acc[l] += np.float64(xr[l])
        mu64 = acc / H
        acc[:] = 0.0
        for h in range(H):
            xr = x[b, h, l0:l0 + n]
            for l in range(n):
                d = np.float64(xr[l]) - mu64[l]
                acc[l] += d * d
        mu, rs = mean[b, l0:l0 + n], rstd[b, l0:l0 + n]
        for l in range(n):
            mu[l] = mu64[l]
            rs[l] = 1.0 / np.sqrt(acc[l] / H + eps)
        for h in range(H):
            xr, yr, g, c = x[b, h, l0:l0 + n], y[b, h, l0:l0 + n], gamma[h], beta[h]
            for l in range(n):
                yr[l] = g * ((np.float64(xr[l]) - mu[l]) * rs[l]) + c


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def _accumulate_gy(m1, gr, c, n):
    """m1[l] += gamma gy[l] (the per-(b, l) sum over channels); returns sum_l gy[l] (for gbeta).
    fastmath "reassoc" (this function only) lets LLVM vectorise the sum over l."""
    sb = 0.0
    for l in range(n):
        g = np.float64(gr[l])
        m1[l] += c * g
        sb += g
    return sb


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def _accumulate_gy_xhat(m2, gr, xr, mu, rs, c, n):
    """m2[l] += gamma gy[l] x_hat[l]; returns sum_l gy[l] x_hat[l] (for ggamma)."""
    sg = 0.0
    for l in range(n):
        gx = np.float64(gr[l]) * ((np.float64(xr[l]) - mu[l]) * rs[l])
        m2[l] += c * gx
        sg += gx
    return sg


@njit(parallel=True, cache=True, error_model="numpy")
def _layer_norm_backward(x, gy, gamma, mean, rstd, LB, gx, ggamma, gbeta):
    """gx = rstd (gamma gy - mean_h(gamma gy) - x_hat mean_h(gamma gy x_hat)) per (b, l), with x_hat
    formed again from x; ggamma, gbeta (PARTIALS, H) float64 partial sums over (b, l)."""
    B, H, L = x.shape
    nl = (L + LB - 1) // LB
    tasks = B * nl
    P = ggamma.shape[0]
    for p in prange(P):
        gg, gb = ggamma[p], gbeta[p]
        for task in range(p * tasks // P, (p + 1) * tasks // P):
            b, l0 = task // nl, (task % nl) * LB
            n = min(LB, L - l0)
            mu, rs = mean[b, l0:l0 + n], rstd[b, l0:l0 + n]
            m1, m2 = np.zeros(n), np.zeros(n)
            for h in range(H):                             # two loops: each with few enough
                xr, gr, c = x[b, h, l0:l0 + n], gy[b, h, l0:l0 + n], gamma[h]     # arrays for LLVM's
                gb[h] += _accumulate_gy(m1, gr, c, n)                             # runtime alias checks
                gg[h] += _accumulate_gy_xhat(m2, gr, xr, mu, rs, c, n)
            for l in range(n):
                m1[l] /= H
                m2[l] /= H
            for h in range(H):
                xr, gr, gxr, c = x[b, h, l0:l0 + n], gy[b, h, l0:l0 + n], gx[b, h, l0:l0 + n], gamma[h]
                for l in range(n):
                    xh = (np.float64(xr[l]) - mu[l]) * rs[l]
                    gxr[l] = rs[l] * (c * gr[l] - m1[l] - xh * m2[l])


def _tile_steps(H, L, itemsize):
    """Steps per LayerNorm tile: the H x LB tile about TILE_BYTES, LB a multiple of 16 (or L)."""
    LB = max(16, (TILE_BYTES // max(H * itemsize, 1)) // 16 * 16)
    return max(1, min(L, LB))


def layer_norm(x, gamma, beta, eps=1e-5):
    """Fast path of refssm.ops.layer_norm: LayerNorm over channels (axis 1) for every (b, l).
    Fused for x (B, H, L); x (B, H) or any other shape runs the oracle. Returns (y, ctx), y in x's
    dtype (float32 or float64), statistics accumulated in float64."""
    if not (isinstance(x, np.ndarray) and x.ndim == 3):
        y, ctx = ops.layer_norm(x, gamma, beta, eps)
        return y, (None, ctx)
    x = np.ascontiguousarray(as_array("x", x, min_ndim=2, dtype=_dtype(x)))
    B, H, L = x.shape
    gamma, beta = (_vector(name, v, H, np.float64) for name, v in (("gamma", gamma), ("beta", beta)))
    eps = float(in_range("eps", eps, 0.0, lo_open=True))
    y, mean, rstd = np.empty_like(x), np.empty((B, L)), np.empty((B, L))
    LB = _tile_steps(H, L, x.itemsize)
    if x.size:
        _layer_norm_forward(x, gamma, beta, eps, y, mean, rstd, LB)
    return y, (x, gamma, mean, rstd, LB)


def layer_norm_vjp(ctx, gy):
    """Fast path of refssm.ops.layer_norm_vjp: (gx, ggamma, gbeta), gamma's and beta's gradients summed
    in float64 (fixed partial sums, independent of the thread count)."""
    if ctx[0] is None:                                     # the oracle ran
        return ops.layer_norm_vjp(ctx[1], gy)
    x, gamma, mean, rstd, LB = ctx
    gy = np.asarray(gy)
    if gy.shape != x.shape:
        raise ValueError(f"gy must have shape {x.shape}, got {gy.shape}")
    gy = np.ascontiguousarray(gy, x.dtype)
    B, H, L = x.shape
    P = max(1, min(PARTIALS, B * ((L + LB - 1) // LB)))
    gx, gg, gb = np.empty_like(x), np.zeros((P, H)), np.zeros((P, H))
    if x.size:
        _layer_norm_backward(x, gy, gamma, mean, rstd, LB, gx, gg, gb)
    return gx, gg.sum(axis=0).astype(x.dtype), gb.sum(axis=0).astype(x.dtype)


def _vector(name, v, n, dtype):
    """A per-channel parameter (n,) in `dtype`, with the oracle's message for a wrong shape."""
    v = as_array(name, v, ndim=1, dtype=dtype)
    if v.shape != (n,):
        raise ValueError(f"{name} must have shape {(n,)}, got {v.shape}")
    return np.ascontiguousarray(v, dtype)
