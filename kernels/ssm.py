"""Numba fast paths of refssm.ssm: the recurrence `scan` and the Vandermonde kernel `kernel_fwd` with its
VJP `kernel_vjp` (registered as "ssm_kernel" in refssm.backend), built on two primitives that never form
the (H, N/2, L) Vandermonde matrix: `exp_sum` (the kernel) and `power_moments` (the VJP's power sums).

All loop over rows (channels, and batch for the scan) in parallel (prange) and keep the mode axis
N/2 innermost. Complex sums run in another order than the oracle's einsum, so they match it to
1e-12 relative, not bit for bit.
"""

import numpy as np
from numba import njit, prange

from refssm.kernels import rows
from refssm import ssm

_BLOCK = 64   # kernel: powers Abar^l are exp(l log Abar) every _BLOCK steps, running products between


@njit(cache=True)
def _sum4(a):
    """sum(a) in four interleaved partial sums: independent additions that pipeline."""
    n = a.shape[0]
    m = n - n % 4
    s0 = s1 = s2 = s3 = 0.0
    for k in range(0, m, 4):
        s0 += a[k]
        s1 += a[k + 1]
        s2 += a[k + 2]
        s3 += a[k + 3]
    for k in range(m, n):
        s0 += a[k]
    return (s0 + s1) + (s2 + s3)


@njit(parallel=True, cache=True)
def _scan_rows(u, a_re, a_im, b_re, b_im, c_re, c_im, y):
    """Real and imaginary parts in separate arrays, so that the loop over modes vectorises."""
    R, L = u.shape
    n = a_re.shape[1]
    for i in prange(R):
        x_re, x_im, y_modes = np.zeros(n), np.zeros(n), np.empty(n)
        for t in range(L):
            for k in range(n):
                xr, xi = x_re[k], x_im[k]
                x_re[k] = a_re[i, k] * xr - a_im[i, k] * xi + b_re[i, k] * u[i, t]
                x_im[k] = a_re[i, k] * xi + a_im[i, k] * xr + b_im[i, k] * u[i, t]
                y_modes[k] = c_re[i, k] * x_re[k] - c_im[i, k] * x_im[k]     # Re(C_k x_k)
            y[i, t] = 2 * _sum4(y_modes)


def scan(u, Abar, Bbar, C):
    """Fast path of refssm.ssm.scan; must match it to 1e-12 relative.

    x_t = Abar x_{t-1} + Bbar u_t, x_{-1} = 0, y_t = 2 Re sum_n C_n x_t[n]. u: (..., H, L) real;
    Abar, Bbar, C: (H, N/2) complex, or any shape broadcasting against u.shape[:-1] + (N/2,).
    Returns y (..., H, L). Memory: y plus the parameters broadcast to (..., H, N/2).
    """
    u, Abar, Bbar, C = ssm.check_scan(u, Abar, Bbar, C)
    y = np.empty(u.shape)
    _scan_rows(*rows(u, Abar.real, Abar.imag, Bbar.real, Bbar.imag, C.real, C.imag, y))
    return y


@njit(parallel=True, cache=True)
def _kernel_rows(W, a_re, a_im, log_Abar, K):
    """Modes innermost, real and imaginary parts in separate arrays (the loop over k vectorises)."""
    R, L = K.shape
    n = W.shape[1]
    for i in prange(R):
        p_re, p_im = np.empty(n), np.empty(n)                                  # W Abar^l
        for l0 in range(0, L, _BLOCK):
            for k in range(n):
                p = W[i, k] * np.exp(l0 * log_Abar[i, k])                      # the oracle's power
                p_re[k], p_im[k] = p.real, p.imag
            for l in range(l0, min(l0 + _BLOCK, L)):
                K[i, l] = 2 * _sum4(p_re)                                      # four partial sums pipeline
                for k in range(n):
                    pr, pi = p_re[k], p_im[k]
                    p_re[k] = pr * a_re[i, k] - pi * a_im[i, k]
                    p_im[k] = pr * a_im[i, k] + pi * a_re[i, k]


def exp_sum(W, Abar, log_Abar, L):
    """K[..., l] = 2 Re sum_k W[..., k] Abar[..., k]^l, l = 0..L-1, for W, Abar, log_Abar (..., n) complex
    broadcasting together, log_Abar = log Abar (the branch the oracle's exp(l log Abar) uses).

    Abar^l is exp(l log Abar) at every 64th l and a running product in between (at most 63 roundings), so
    the (..., n, L) Vandermonde matrix is never formed: memory O(size(K) + size(W)), time O(n L) per row,
    rows in parallel. The sum over k runs in another order than an einsum: equal to it to ~1e-13 relative.
    Returns K (..., L) float64. Used by `kernel_fwd` and by refssm.kernels.fractional (the decoupled SOE).
    """
    W, Abar, log_Abar = (np.asarray(x, dtype=np.complex128) for x in np.broadcast_arrays(W, Abar, log_Abar))
    K = np.empty(W.shape[:-1] + (L,))
    _kernel_rows(*rows(W, Abar.real, Abar.imag, log_Abar, K))
    return K


def kernel_fwd(A, B, C, dt, L, method="zoh"):
    """Fast path of refssm.ssm.kernel_fwd (registered as "ssm_kernel" in refssm.backend); must match it to
    1e-12 relative.

    K[h, l] = 2 Re sum_n C[h,n] Bbar[h,n] Abar[h,n]^l, l = 0..L-1, with the checks, casts and
    discretisation of refssm.ssm.kernel_prepare, summed by `exp_sum`: the (H, N/2, L) Vandermonde matrix is
    never formed, memory O(H L + H N), time O(H N L). A, B, C: (H, N/2) complex (A, B may be (1, N/2));
    dt: (H,) or (H, 1); L >= 1. Returns (K (H, L) float64, ctx for `kernel_vjp`: the oracle's ctx without V).
    """
    ctx = ssm.kernel_prepare(A, B, C, dt, L, method)
    Abar = ctx["Abar"]
    return exp_sum(ctx["W"], Abar, np.log(Abar), ctx["L"]), ctx


def kernel(A, B, C, dt, L, method="zoh"):
    """K of `kernel_fwd`, without its ctx."""
    return kernel_fwd(A, B, C, dt, L, method)[0]


@njit(parallel=True, cache=True)
def _moments_rows(g, a_re, a_im, log_Abar, S, R1):
    """Modes innermost: the n independent chains of a row advance together (real and imaginary parts in
    separate arrays, so the loop over k vectorises), instead of one latency-bound chain after another."""
    R, L = g.shape
    n = a_re.shape[1]
    for i in prange(R):
        p_re, p_im = np.empty(n), np.empty(n)
        s_re, s_im, t_re, t_im = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
        for l0 in range(0, L, _BLOCK):
            for k in range(n):
                p = np.exp(l0 * log_Abar[i, k])                                # the oracle's power
                p_re[k], p_im[k] = p.real, p.imag
            for l in range(l0, min(l0 + _BLOCK, L)):
                gl, lgl = g[i, l], l * g[i, l]
                for k in range(n):
                    pr, pi = p_re[k], p_im[k]
                    s_re[k] += gl * pr
                    s_im[k] += gl * pi
                    t_re[k] += lgl * pr
                    t_im[k] += lgl * pi
                    p_re[k] = pr * a_re[i, k] - pi * a_im[i, k]
                    p_im[k] = pr * a_im[i, k] + pi * a_re[i, k]
        for k in range(n):
            S[i, k] = s_re[k] + 1j * s_im[k]
            R1[i, k] = t_re[k] + 1j * t_im[k]


def power_moments(g, Abar, log_Abar):
    """S[..., k] = sum_l g[..., l] Abar[..., k]^l and R[..., k] = sum_l l g[..., l] Abar[..., k]^l for g (..., L)
    real and Abar, log_Abar (..., n) complex (leading dims broadcasting), powers as in `exp_sum`: no
    (..., n, L) Vandermonde, memory O(size(Abar)), time O(n L) per row. Returns (S, R) complex128."""
    lead = np.broadcast_shapes(g.shape[:-1], Abar.shape[:-1], log_Abar.shape[:-1])
    Abar, log_Abar = (np.broadcast_to(np.asarray(x, dtype=np.complex128), lead + Abar.shape[-1:])
                      for x in (Abar, log_Abar))
    g = np.broadcast_to(np.asarray(g, dtype=np.float64), lead + g.shape[-1:])
    S, R = np.empty(Abar.shape, complex), np.empty(Abar.shape, complex)
    _moments_rows(*rows(g, Abar.real, Abar.imag, log_Abar, S, R))
    return S, R


def power_sums(gK, Abar):
    """Fast path of refssm.ssm.power_sums (S = sum_l gK[l] Abar^l, T = dS/dAbar); must match it to 1e-12
    relative. `power_moments` with T = R / Abar: no (H, N/2, L) Vandermonde, memory O(H N)."""
    S, R = power_moments(gK, Abar, np.log(Abar))
    return S, R / Abar


def kernel_vjp(ctx, gK):
    """Fast path of refssm.ssm.kernel_vjp: the power sums of gK in Numba (`power_sums`), then the oracle's
    chain rule refssm.ssm.kernel_chain. Returns (gA, gB, gC, gdt), each of its input's shape."""
    gK = ssm.kernel_cotangent(ctx, gK)
    return ssm.kernel_chain(ctx, *power_sums(gK, ctx["Abar"]))
