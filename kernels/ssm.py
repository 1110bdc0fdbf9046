"""Numba fast paths of refssm.ssm: the recurrence `scan` and the Vandermonde `kernel`.

Both loop over rows (channels, and batch for the scan) in parallel (prange) and keep the mode axis
N/2 innermost. Complex sums run in another order than the oracle's einsum, so they match it to
1e-12 relative, not bit for bit.
"""

import numpy as np
from numba import njit, prange

from refssm._checks import as_array, positive_int
from refssm.kernels.neurons import _rows
from refssm import ssm
from refssm.ssm import discretize

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
    _scan_rows(*_rows(u, Abar.real, Abar.imag, Bbar.real, Bbar.imag, C.real, C.imag, y))
    return y


@njit(parallel=True, cache=True)
def _kernel_rows(W, Abar, log_Abar, K):
    R, L = K.shape
    n = W.shape[1]
    for i in prange(R):
        p = np.empty(n, np.complex128)                                         # W Abar^l
        for l0 in range(0, L, _BLOCK):
            for k in range(n):
                p[k] = W[i, k] * np.exp(l0 * log_Abar[i, k])                   # the oracle's power
            for l in range(l0, min(l0 + _BLOCK, L)):
                acc = 0.0
                for k in range(n):
                    acc += p[k].real
                    p[k] *= Abar[i, k]
                K[i, l] = 2 * acc


def kernel(A, B, C, dt, L, method="zoh"):
    """Fast path of refssm.ssm.kernel; must match it to 1e-12 relative.

    K[h, l] = 2 Re sum_n C[h,n] Bbar[h,n] Abar[h,n]^l, l = 0..L-1, with (Abar, Bbar) from
    refssm.ssm.discretize. Abar^l is exp(l log Abar), as in the oracle, at every 64th l and a running
    product in between (at most 63 roundings), so the (H, N/2, L) Vandermonde matrix is never formed:
    memory O(H L + H N), time O(H N L). A, B, C: (H, N/2) complex; dt: (H,) or (H, 1); L >= 1.
    Returns K (H, L) float64.
    """
    L = positive_int("L", L)
    C = as_array("C", C, dtype=complex)
    Abar, Bbar = discretize(A, B, dt, method)
    W, Abar = np.broadcast_arrays(C * Bbar, Abar)
    K = np.empty(W.shape[:-1] + (L,))
    _kernel_rows(*_rows(W, Abar, np.log(Abar), K))
    return K


@njit(parallel=True, cache=True)
def _power_sums_rows(g, Abar, log_Abar, S, T):
    R, L = g.shape
    n = Abar.shape[1]
    for i in prange(R):
        for k in range(n):
            s = 0j
            t = 0j
            for l0 in range(0, L, _BLOCK):
                p = np.exp(l0 * log_Abar[i, k])                                # the oracle's power
                for l in range(l0, min(l0 + _BLOCK, L)):
                    s += g[i, l] * p
                    t += l * g[i, l] * p
                    p *= Abar[i, k]
            S[i, k] = s
            T[i, k] = t / Abar[i, k]


def power_sums(gK, Abar):
    """Fast path of refssm.ssm.power_sums (S = sum_l gK[l] Abar^l, T = dS/dAbar); must match it to 1e-12
    relative. Powers as in `kernel`: no (H, N/2, L) Vandermonde, memory O(H N)."""
    g = np.ascontiguousarray(np.broadcast_to(gK, Abar.shape[:-1] + gK.shape[-1:]), dtype=np.float64)
    S, T = np.empty(Abar.shape, complex), np.empty(Abar.shape, complex)
    _power_sums_rows(*_rows(g, np.ascontiguousarray(Abar), np.log(Abar), S, T))
    return S, T


def kernel_vjp(gK, A, B, C, dt, L, method="zoh"):
    """Fast path of refssm.ssm.kernel_vjp (the same chain rule, with `power_sums` in Numba)."""
    return ssm.kernel_vjp(gK, A, B, C, dt, L, method, sums=power_sums)
