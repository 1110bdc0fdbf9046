"""Numba fast paths for the O(L²) fractional memory sums; each matches one oracle in refssm.fractional.

  memory_sum(w, f)            oracle refssm.fractional.memory_sum(w, f, "direct")
                              (the sum behind gl_derivative, gl_integral and caputo_l1)
  gl_recursion(w, c, r, shift) oracle refssm.fractional.gl_recursion
                              (the GL scheme behind gl_kernel_recursion and gl_solve)

Same arguments, shapes and checks as the oracles. The sums may be reassociated (fastmath "reassoc", so that
they vectorise): results agree with the oracles to rounding (about 1e-15 relative to the sum of the
magnitudes of the terms), not bit for bit.
"""

import numba
import numpy as np

from refssm._checks import as_array, choice
from refssm.fractional import check_signal


@numba.njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def _memory_sum(w, f):
    # w (K,), f (B, L) -> S (B, L); every output is independent, so all (b, n) run in parallel
    B, L = f.shape
    K = w.size
    S = np.empty_like(f)
    for i in numba.prange(B * L):
        b, n = i // L, i % L
        acc = 0.0
        for j in range(min(n + 1, K)):
            acc += w[j] * f[b, n - j]
        S[b, n] = acc
    return S


def memory_sum(w, f):
    """S_n = Σ_{j=0}^{min(n, K−1)} w_j f_{n−j} for w (K,) and f (..., L) real. Cost O(K L), parallel
    over all outputs."""
    w = as_array("w", w, ndim=1)
    f = check_signal("f", f)
    return _memory_sum(np.ascontiguousarray(w), np.ascontiguousarray(f.reshape(-1, f.shape[-1]))).reshape(f.shape)


@numba.njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def _gl_recursion(w, c, r_re, r_im, shift):
    # w (K,), c (B,) complex, r (B, L) as real and imaginary parts -> x (B, L) complex.
    # Real and imaginary parts are kept apart so that the inner sum over the memory vectorises.
    B, L = r_re.shape
    K = w.size
    x_re = np.zeros((B, L))
    x_im = np.zeros((B, L))
    for b in numba.prange(B):
        diag = w[0] - (c[b] if shift == 0 else 0.0)
        for n in range(L):
            acc_re, acc_im = r_re[b, n], r_im[b, n]
            for j in range(1, min(n, K - 1) + 1):                 # r_n − Σ_{j≥1} w_j x_{n−j}
                acc_re -= w[j] * x_re[b, n - j]
                acc_im -= w[j] * x_im[b, n - j]
            acc = complex(acc_re, acc_im)
            if shift == 1 and n > 0:
                acc += c[b] * complex(x_re[b, n - 1], x_im[b, n - 1])
            acc /= diag
            x_re[b, n], x_im[b, n] = acc.real, acc.imag
    return x_re + 1j * x_im


def gl_recursion(w, c, r, shift=0):
    """Solve Σ_{j=0}^{min(n, K−1)} w_j x_{n−j} − c x_{n−shift} = r_n, n = 0..L−1 (see the oracle).
    w (K,) real, c (...) complex, r (..., L) broadcast against c[..., None]. Cost O(K L) per mode,
    parallel over modes."""
    w = as_array("w", w, ndim=1)
    c = as_array("c", c, dtype=np.complex128)
    r = as_array("r", r, dtype=np.complex128, min_ndim=1)
    choice("shift", shift, (0, 1))
    shape = np.broadcast_shapes(c.shape + (1,), r.shape)
    r = np.broadcast_to(r, shape).reshape(-1, shape[-1])
    c = np.broadcast_to(c[..., None], shape[:-1] + (1,)).reshape(-1)
    x = _gl_recursion(np.ascontiguousarray(w), np.ascontiguousarray(c), np.ascontiguousarray(r.real),
                      np.ascontiguousarray(r.imag), shift)
    return x.reshape(shape)
