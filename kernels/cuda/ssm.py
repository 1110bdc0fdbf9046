"""CUDA fast path of refssm.ssm's Vandermonde kernel for backend "cupy": `kernel_fwd` and its VJP
`kernel_vjp` (to be registered as "ssm_kernel" against refssm.ssm.kernel_fwd), built on two kernels that
never form the (H, N/2, L) Vandermonde matrix: `exp_sum` (the kernel) and `power_moments` (the VJP's power
sums).

The parameters are small (H, N/2) host arrays: the checks, casts and discretisation are
refssm.ssm.kernel_prepare's, on the host. Only the sums over the long axis L run on the device:

  exp_sum        one thread per output K[i, l] (flat grid of THREADS-thread blocks): the power
                 Abar^l = exp(l log Abar) as the oracle's vandermonde computes it (exp(l Re log Abar) times
                 cos, sin of l Im log Abar), summed over the modes. No running products, so every thread
                 is independent and the error does not grow with l.
  power_moments  one block per (row i, mode k), its threads striding over l, each summing its share of
                 S = sum_l g_l Abar^l and R = sum_l l g_l Abar^l (real and imaginary parts), then a tree
                 reduction in shared memory.

Complex numbers travel as separate real and imaginary float64 arrays. The sums run in another order
than the oracle's einsum: they match it to ~1e-13 relative, not bit for bit.
"""

import math

import numpy as np
from numba import cuda, float64

from refssm import backend, ssm
from refssm.kernels.cuda import THREADS, device_module, flat_blocks, launch, rows

REDUCE_THREADS = 128     # power_moments: at most this many threads per (row, mode) block, a power of two


@cuda.jit
def _exp_sum(w_re, w_im, la_re, la_im, K):
    """K[i, l] = 2 Re sum_k W[i, k] exp(l log Abar[i, k]) for rows W, log Abar (R, n), K (R, L)."""
    R, L = K.shape
    idx = cuda.grid(1)
    if idx < R * L:
        i = idx // L
        l = idx - i * L
        acc = 0.0
        for k in range(w_re.shape[1]):
            mag = math.exp(l * la_re[i, k])
            phase = l * la_im[i, k]
            acc += mag * (w_re[i, k] * math.cos(phase) - w_im[i, k] * math.sin(phase))
        K[i, l] = 2.0 * acc


@cuda.jit
def _power_moments(g, la_re, la_im, out):
    """out[i, k] = (Re S, Im S, Re R, Im R) with S = sum_l g[i, l] Abar[i, k]^l, R = sum_l l g[i, l] Abar[i, k]^l,
    for g (R, L), log Abar (R, n), out (R, n, 4); one block per (i, k), blockDim a power of two."""
    part = cuda.shared.array((4, REDUCE_THREADS), float64)
    n = la_re.shape[1]
    i = cuda.blockIdx.x // n
    k = cuda.blockIdx.x - i * n
    t = cuda.threadIdx.x
    a, b = la_re[i, k], la_im[i, k]
    s_re = s_im = r_re = r_im = 0.0
    for l in range(t, g.shape[1], cuda.blockDim.x):
        mag = math.exp(l * a) * g[i, l]
        phase = l * b
        p_re, p_im = mag * math.cos(phase), mag * math.sin(phase)
        s_re += p_re
        s_im += p_im
        r_re += l * p_re
        r_im += l * p_im
    part[0, t], part[1, t], part[2, t], part[3, t] = s_re, s_im, r_re, r_im
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half:
            for q in range(4):
                part[q, t] += part[q, t + half]
        cuda.syncthreads()
        half //= 2
    if t == 0:
        for q in range(4):
            out[i, k, q] = part[q, 0]


def exp_sum(W, log_Abar, L):
    """K[..., l] = 2 Re sum_k W[..., k] exp(l log_Abar[..., k]), l = 0..L-1, for host W, log_Abar (..., n)
    complex broadcasting together (log_Abar = log Abar, the branch the oracle's vandermonde uses, or a
    given exponent such as a dt): K (..., L) float64 on the device (`device_module`), and the device rows
    (R, n) of log_Abar's real and imaginary parts, for `power_moments`. Device memory O(size(K) + size(W))."""
    W, log_Abar = np.broadcast_arrays(np.asarray(W, np.complex128), np.asarray(log_Abar, np.complex128))
    xp = device_module()
    w_re, w_im, la_re, la_im = rows(*(xp.asarray(np.ascontiguousarray(part))
                                      for part in (W.real, W.imag, log_Abar.real, log_Abar.imag)))
    K = xp.empty((w_re.shape[0], L))
    launch(_exp_sum, flat_blocks(K.size), THREADS, xp, w_re, w_im, la_re, la_im, K)
    return K.reshape(W.shape[:-1] + (L,)), (la_re, la_im)


def power_moments(g, la_re, la_im):
    """S[i, k] = sum_l g[i, l] Abar[i, k]^l and R[i, k] = sum_l l g[i, l] Abar[i, k]^l for device rows g (R, L)
    float64 and log Abar's parts (R, n): host complex128 arrays (R, n), copied from the device (small)."""
    xp = backend.array_module(g, la_re)
    R, n = la_re.shape
    out = xp.empty((R, n, 4))
    threads = min(REDUCE_THREADS, 1 << (g.shape[1] - 1).bit_length())
    launch(_power_moments, R * n, threads, xp, g, la_re, la_im, out)
    out = backend.to_host(out)
    return out[..., 0] + 1j * out[..., 1], out[..., 2] + 1j * out[..., 3]


def kernel_fwd(A, B, C, dt, L, method="zoh"):
    """CUDA fast path of refssm.ssm.kernel_fwd; must match it to 1e-10 relative.

    K[h, l] = 2 Re sum_n C[h,n] Bbar[h,n] Abar[h,n]^l, l = 0..L-1, with the checks, casts and discretisation
    of refssm.ssm.kernel_prepare on the host (A, B, C: (H, N/2) complex host arrays, A, B may be (1, N/2);
    dt: (H,) or (H, 1); L >= 1), summed on the device by `exp_sum` without the Vandermonde matrix.
    Returns (K (H, L) float64 on the device (`device_module`), ctx for `kernel_vjp`: the oracle's ctx
    without V, with the device rows of log Abar)."""
    ctx = ssm.kernel_prepare(A, B, C, dt, L, method)
    K, ctx["log_Abar_rows"] = exp_sum(ctx["W"], np.log(ctx["Abar"]), ctx["L"])
    return K, ctx


def cotangent(ctx, gK, check):
    """gK = dL/dK as device rows (R, L) float64: a host gK checked by `check(ctx, gK)` (its oracle's check),
    then moved to the device (`device_module`); a device gK checked against ctx["K_shape"] there."""
    if backend.array_module(gK) is np:
        return rows(device_module().asarray(check(ctx, gK)))[0]
    if tuple(gK.shape) != ctx["K_shape"]:
        raise ValueError(f"gK must have the kernel's shape {ctx['K_shape']}, got {tuple(gK.shape)}")
    return rows(gK.astype(np.float64, copy=False))[0]


def kernel_vjp(ctx, gK):
    """CUDA fast path of refssm.ssm.kernel_vjp: the power sums of gK (K's shape, float64, on the device) by
    `power_moments`, then the oracle's chain rule refssm.ssm.kernel_chain on the host. Returns host
    (gA, gB, gC, gdt), each of its input's shape, as the oracle's."""
    S, R = power_moments(cotangent(ctx, gK, ssm.kernel_cotangent), *ctx["log_Abar_rows"])
    shape = np.broadcast_shapes(ctx["W"].shape, ctx["Abar"].shape)
    return ssm.kernel_chain(ctx, S.reshape(shape), R.reshape(shape) / ctx["Abar"])
