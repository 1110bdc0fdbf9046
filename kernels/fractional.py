"""Numba fast paths of refssm.fractional; each matches one oracle there.

  memory_sum(w, f)            oracle refssm.fractional.memory_sum(w, f, "direct")
                              (the sum behind gl_derivative, gl_integral and caputo_l1)
  gl_recursion(w, c, r, shift) oracle refssm.fractional.gl_recursion
                              (the GL scheme behind gl_kernel_recursion and gl_solve)
  fssm_conv_kernel_fwd, fssm_conv_kernel_vjp
                              oracle refssm.fractional.fssm_conv_kernel_fwd / _vjp, the fractional layer
                              kernel (registered as "fssm_kernel" in refssm.backend); see there

Same arguments, shapes and checks as the oracles. The sums may be reassociated (fastmath "reassoc", so that
they vectorise): results agree with the oracles to rounding (about 1e-15 relative to the sum of the
magnitudes of the terms), not bit for bit.
"""

import numba
import numpy as np

from refssm import fractional as F
from refssm._checks import as_array, choice, time_series
from refssm.kernels import ssm as kssm


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
    f = time_series("f", f)
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


# ----------------------------------------------------------------------------------------------------
# the fractional layer kernel (registered as "fssm_kernel")


def fssm_conv_kernel_fwd(A, B, C, dt, L, alpha, method="gl", **kwargs):
    """Fast path of refssm.fractional.fssm_conv_kernel_fwd; must match it to 1e-10 relative (float64).
    Same arguments, checks and ctx layout; K (H, L) float64, computed in complex128.

    By method, whichever is fastest:
      "gl", "gl_explicit", alpha > 1   the oracle's O(L²) recursion, here in Numba (`gl_recursion`), parallel
                                       over the H N/2 modes; the VJP is the oracle's (O(L log L), from k)
      "gl", "gl_explicit", alpha <= 1  the oracle itself: its O(L log L) Newton inversion is already best
      "soe_decoupled" with omega, eta  K = 2 Re Σ_{n,m} C_n B_n η_m b_nm e^{a_nm dt l} as one sum of H·N/2·M
                                       exponentials (refssm.kernels.ssm.exp_sum): no (H, N/2, M, L)
                                       Vandermonde and no (H, N/2, L) per-mode kernel; its VJP takes the
                                       two power sums of gK the same way (refssm.kernels.ssm.power_moments)
      other methods                    the oracle (no VJP there, as in the oracle)
    """
    gl = method in ("gl", "gl_explicit")
    if gl and F.check_alpha(alpha) > 1.0:
        F.fssm_check_options(method, **kwargs)
        ctx = F.fssm_conv_kernel_prepare(A, B, C, dt, L)
        w, c, scale, L = F.gl_scheme(ctx["A"], alpha, ctx["dt"], ctx["L"], kwargs.get("memory"))
        delta = np.zeros(L)
        delta[0] = 1.0
        explicit = method == "gl_explicit"
        k = gl_recursion(w, c, delta, shift=int(explicit)) * scale[..., None]          # (H, N/2, L)
        return F.fssm_conv_kernel_from_modes(
            ctx, k, dict(method=method, gl=F.gl_context(k, ctx["A"], alpha, ctx["dt"], explicit)))
    if method == "soe_decoupled" and kwargs.get("omega") is not None:
        F.fssm_check_options(method, **kwargs)
        ctx, Wm, adt = F.soe_decoupled_exponentials(A, B, C, dt, L, kwargs["omega"], kwargs["eta"])
        rows = lambda x: x.reshape(x.shape[:-2] + (-1,))                                # (H, N/2 M)
        ctx.update(adt=adt, Abar=np.exp(adt))
        return kssm.exp_sum(rows(Wm), rows(ctx["Abar"]), rows(adt), ctx["L"]), ctx
    return F.fssm_conv_kernel_fwd(A, B, C, dt, L, alpha, method, **kwargs)


def fssm_conv_kernel_vjp(ctx, gK):
    """Fast path of refssm.fractional.fssm_conv_kernel_vjp, for a ctx of `fssm_conv_kernel_fwd` above:
    (gA, gB, gC, gdt), then (g_omega, g_eta) for "soe_decoupled".

    Decoupled SOE: with S_nm = Σ_l gK_l e^{a_nm dt l} and R_nm = Σ_l l gK_l e^{a_nm dt l} (Numba, no
    Vandermonde), the oracle's sums over its per-mode cotangent gk = 2 gK conj(W) are
    Σ_l conj(gk_l) V_l = 2 W S and Σ_l conj(gk_l) l V_l = 2 W R, and gW = 2 conj(Σ_m η_m b_nm S_nm); the rest
    is the oracle's chain rule (refssm.fractional.soe_decoupled_grads, fssm_conv_kernel_grads).
    Other methods: the oracle's VJP (the ctx has its layout).
    """
    if "adt" not in ctx:
        return F.fssm_conv_kernel_vjp(ctx, gK)
    gK = F.fssm_conv_kernel_cotangent(ctx, gK)
    soe, adt = ctx["soe"], ctx["adt"]
    shape = adt.shape                                                                   # (H, N/2, M)
    S, R = kssm.power_moments(gK, ctx["Abar"].reshape(shape[:-2] + (-1,)), adt.reshape(shape[:-2] + (-1,)))
    S, R = S.reshape(shape), R.reshape(shape)
    W2 = 2.0 * ctx["W"][..., None]
    modes = F.soe_decoupled_grads(soe, W2 * S, W2 * R)
    gW = 2.0 * np.conj((soe["eta"] * soe["b"] * S).sum(axis=-1))
    return F.fssm_conv_kernel_grads(ctx, gW, modes)
