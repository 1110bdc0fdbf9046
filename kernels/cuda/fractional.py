"""CUDA fast path of the fractional layer kernel (LongSpike) for backend "cupy": `fssm_conv_kernel_fwd` and its
VJP `fssm_conv_kernel_vjp`, to be registered as "fssm_kernel" against refssm.fractional.fssm_conv_kernel_fwd.
Same arguments, checks and ctx layout as the oracle and as the Numba path refssm.kernels.fractional; K comes
back on the device (`device_module`), float64, like refssm.kernels.cuda.ssm.kernel_fwd's.

By method, as refssm.kernels.fractional chooses:
  "gl", "gl_explicit", alpha > 1   the oracle's O(K L) GL recursion (refssm.fractional.gl_recursion, driven by
                                   a unit impulse) on the device, one thread per mode (flat grid); the modes'
                                   kernels k are held time-major (L, modes), so at every step the threads of a
                                   warp read the past values x_{n-j} of 32 neighbouring modes from one run of
                                   memory (coalesced). k then goes to the host, where the oracle forms K and,
                                   in the VJP, its gradients (O(L log L) FFTs from k)
  "gl", "gl_explicit", alpha <= 1  the oracle on the host (its O(L log L) Newton inversion), K moved to the device
  "soe_decoupled" with omega, eta  K = 2 Re sum_{n,m} C_n B_n eta_m b_nm e^{a_nm dt l} as one exponential sum of
                                   H N/2 M terms by refssm.kernels.cuda.ssm.exp_sum, and its VJP's two power
                                   sums of gK by refssm.kernels.cuda.ssm.power_moments, on the device
  other methods                    the oracle on the host (no VJP there, as in the oracle)
"""

import numpy as np
from numba import cuda

from refssm import backend
from refssm import fractional as F
from refssm.kernels.cuda import THREADS, device_module, flat_blocks, launch
from refssm.kernels.cuda.ssm import cotangent, exp_sum, power_moments


@cuda.jit
def _gl_impulse(w, c_re, c_im, inv_re, inv_im, shift, x_re, x_im):
    """x (L, R), time-major, of the GL scheme driven by a unit impulse (refssm.fractional.gl_recursion with
    r = delta), one thread per mode i < R:

        sum_{j=0}^{min(n, K-1)} w_j x_{n-j} - c x_{n-shift} = delta_n,   n = 0..L-1,

    x_n = (delta_n - sum_{j>=1} w_j x_{n-j} [+ c x_{n-1} if shift]) / diag, diag = w_0 - c (shift 0) or w_0,
    with 1/diag = inv given (w (K,) real; c, inv (R,) complex as real and imaginary parts)."""
    L, R = x_re.shape
    i = cuda.grid(1)
    if i < R:
        K = w.shape[0]
        for n in range(L):
            acc_re = 1.0 if n == 0 else 0.0
            acc_im = 0.0
            for j in range(1, (n if n < K - 1 else K - 1) + 1):
                acc_re -= w[j] * x_re[n - j, i]
                acc_im -= w[j] * x_im[n - j, i]
            if shift == 1 and n > 0:
                acc_re += c_re[i] * x_re[n - 1, i] - c_im[i] * x_im[n - 1, i]
                acc_im += c_re[i] * x_im[n - 1, i] + c_im[i] * x_re[n - 1, i]
            x_re[n, i] = acc_re * inv_re[i] - acc_im * inv_im[i]
            x_im[n, i] = acc_re * inv_im[i] + acc_im * inv_re[i]


def gl_impulse(w, c, shift, L):
    """The unit-impulse solution x (..., L) complex of the GL scheme (refssm.fractional.gl_recursion(w, c, delta,
    shift)) for w (K,) real and c (...) complex, computed on the device and returned to the host."""
    xp = device_module()
    c = np.asarray(c, np.complex128).reshape(-1)                                # (R,)
    inv = 1.0 / (w[0] - c * (shift == 0))
    w_d, c_re, c_im, inv_re, inv_im = (xp.asarray(np.ascontiguousarray(a))
                                       for a in (w, c.real, c.imag, inv.real, inv.imag))
    x_re, x_im = xp.empty((L, c.size)), xp.empty((L, c.size))
    launch(_gl_impulse, flat_blocks(c.size), THREADS, xp, w_d, c_re, c_im, inv_re, inv_im, shift, x_re, x_im)
    return (backend.to_host(x_re) + 1j * backend.to_host(x_im)).T


def fssm_conv_kernel_fwd(A, B, C, dt, L, alpha, method="gl", **kwargs):
    """CUDA fast path of refssm.fractional.fssm_conv_kernel_fwd; must match it to 1e-10 relative.
    A, B (H or 1, N/2), C (H, N/2) complex and dt (H,) on the host. Returns (K (H, L) float64 on the device,
    ctx for `fssm_conv_kernel_vjp`); the methods are computed as the module docstring says."""
    gl = method in ("gl", "gl_explicit")
    if gl and F.check_alpha(alpha) > 1.0:
        F.fssm_check_options(method, **kwargs)
        ctx = F.fssm_conv_kernel_prepare(A, B, C, dt, L)
        w, c, scale, L = F.gl_scheme(ctx["A"], alpha, ctx["dt"], ctx["L"], kwargs.get("memory"))
        explicit = method == "gl_explicit"
        k = gl_impulse(w, c, int(explicit), L).reshape(c.shape + (L,)) * scale[..., None]   # (H, N/2, L)
        K, ctx = F.fssm_conv_kernel_from_modes(
            ctx, k, dict(method=method, gl=F.gl_context(k, ctx["A"], alpha, ctx["dt"], explicit)))
        return device_module().asarray(K), ctx
    if method == "soe_decoupled" and kwargs.get("omega") is not None:
        F.fssm_check_options(method, **kwargs)
        ctx, Wm, adt = F.soe_decoupled_exponentials(A, B, C, dt, L, kwargs["omega"], kwargs["eta"])
        flat = lambda x: x.reshape(x.shape[:-2] + (-1,))                                # (H, N/2 M)
        K, log_rows = exp_sum(flat(Wm), flat(adt), ctx["L"])
        ctx.update(soe_shape=adt.shape, log_rows=log_rows)
        return K, ctx
    K, ctx = F.fssm_conv_kernel_fwd(A, B, C, dt, L, alpha, method, **kwargs)
    return device_module().asarray(K), ctx


def fssm_conv_kernel_vjp(ctx, gK):
    """CUDA fast path of refssm.fractional.fssm_conv_kernel_vjp, for a ctx of `fssm_conv_kernel_fwd` above:
    host (gA, gB, gC, gdt), then (g_omega, g_eta) for "soe_decoupled".

    Decoupled SOE: S_nm = sum_l gK_l e^{a_nm dt l} and R_nm = sum_l l gK_l e^{a_nm dt l} on the device, then on
    the host the oracle's chain rule with the sums over its per-mode cotangent gk = 2 gK conj(W):
    sum_l conj(gk_l) V_l = 2 W S, sum_l conj(gk_l) l V_l = 2 W R, gW = 2 conj(sum_m eta_m b_nm S_nm)
    (as refssm.kernels.fractional). Other methods: the oracle's VJP on the host, gK copied there."""
    if "log_rows" not in ctx:
        return F.fssm_conv_kernel_vjp(ctx, backend.to_host(gK))
    soe, shape = ctx["soe"], ctx["soe_shape"]                                           # (H, N/2, M)
    S, R = power_moments(cotangent(ctx, gK, F.fssm_conv_kernel_cotangent), *ctx["log_rows"])
    S, R = S.reshape(shape), R.reshape(shape)
    W2 = 2.0 * ctx["W"][..., None]
    modes = F.soe_decoupled_grads(soe, W2 * S, W2 * R)
    gW = 2.0 * np.conj((soe["eta"] * soe["b"] * S).sum(axis=-1))
    return F.fssm_conv_kernel_grads(ctx, gW, modes)
