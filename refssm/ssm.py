"""Diagonal state-space models: initialisation, discretisation, kernel, convolution and scan.

The continuous system, per channel h and complex mode n (N/2 conjugate-pair modes stored; the other
half is their conjugate, so outputs take 2 Re):

    x'(t) = A x(t) + B u(t),    y(t) = 2 Re(C x(t))                                   (S4D, Gu et al. 2022)

Discretised with step dt:  x_t = Abar x_{t-1} + Bbar u_t,  y_t = 2 Re(C x_t), i.e. the convolution

    y[t] = sum_{j<=t} K[j] u[t-j],     K[l] = 2 Re sum_n C_n Bbar_n Abar_n^l       (Vandermonde kernel)

Shapes: A, B, C are (H, N/2) complex; dt is (H,) or (H, 1), broadcast against the mode axis;
signals are (..., H, L) with time last. The D skip (y += D u) belongs to the layer, not to this module.

Every differentiable function f has a forward `f_fwd(...) -> (y, ctx)` (`f(...)` is its y alone) and its
VJP right below it, `f_vjp(ctx, g) -> grads`: the ctx carries what the forward computed (the
discretisation and Vandermonde powers of the kernel, the spectra of a convolution), so a VJP never
recomputes its forward. Gradients of a real loss with respect to a complex argument z = a + ib are
returned as dL/da + i dL/db. Fast paths: refssm.kernels.ssm (Numba scan, kernel and kernel VJP).
"""

import numpy as np
from scipy import fft

from refssm import backend
from refssm._checks import as_array, choice, in_range, positive_int, time_series

INITS = ("lin", "inv", "real", "legs")
METHODS = ("zoh", "bilinear", "euler")


# --------------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------------

def hippo_legs_normal(N):
    """Eigen-decomposition of the normal part of the HiPPO-LegS matrix (Gu et al. 2022, S4D-LegS).

    LegS: A[n,k] = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for n == k, 0 above; B[n] = sqrt(2n+1).
    A = S - P P^T with P[n] = sqrt(n + 1/2), and S = -I/2 + (skew-symmetric) is normal, so its
    eigenvalues are -1/2 + i w. Returns the N/2 eigenvalues with w > 0 and B projected onto their
    eigenvectors, V^H B. Shapes: (N/2,), (N/2,) complex.
    """
    n = np.arange(N)
    q = np.sqrt(2 * n + 1.0)
    A = -np.tril(np.outer(q, q), -1) - np.diag(n + 1.0)                        # (N, N) LegS
    P = np.sqrt(n + 0.5)
    S = A + np.outer(P, P)                                                     # -I/2 + skew
    w, V = np.linalg.eigh(1j * (S - S.T) / 2)                                  # Hermitian: eigvals -w_k
    lam = -0.5 - 1j * w                                                        # (N,) eigenvalues of S
    keep = np.argsort(lam.imag)[N // 2:]                                       # Im > 0 half
    return lam[keep], V[:, keep].conj().T @ q


def diag_modes(N, init="lin"):
    """The N/2 modes (A, B) of an initialisation (see `init_diag`), each (N/2,) complex; no randomness."""
    n = np.arange(N // 2)
    if init == "lin":
        return -0.5 + 1j * np.pi * n, np.ones(N // 2, complex)
    if init == "inv":
        return -0.5 + 1j * (N / np.pi) * (N / (2 * n + 1) - 1), np.ones(N // 2, complex)
    if init == "real":
        return -(n + 1.0) + 0j, np.ones(N // 2, complex)
    return hippo_legs_normal(N)


def init_diag(H, N, init="lin", dt_min=1e-3, dt_max=1e-1, rng=None):
    """Diagonal SSM parameters for H channels with state size N (N/2 complex modes per channel).

    init:
      "lin"  S4D-Lin   A_n = -1/2 + i pi n,                      B_n = 1
      "inv"  S4D-Inv   A_n = -1/2 + i (N/pi) (N/(2n+1) - 1),     B_n = 1
      "real" S4D-Real  A_n = -(n + 1),                           B_n = 1
      "legs" S4D-LegS  eigenvalues of the normal part of HiPPO-LegS, B = V^H B_LegS
    n = 0 .. N/2-1. C ~ complex normal with E|C|^2 = 1 (real and imaginary parts N(0, 1/2)).
    log_dt ~ Uniform[log dt_min, log dt_max] per channel.
    rng: numpy Generator (required for reproducibility; a fresh default_rng() if None).
    Returns dict(log_dt (H,), A (H, N/2), B (H, N/2), C (H, N/2)), complex128 except log_dt.
    """
    H = positive_int("H", H)
    N = positive_int("N", N, minimum=2)
    if N % 2:
        raise ValueError(f"N must be even (N/2 conjugate-pair modes), got {N}")
    choice("init", init, INITS)
    dt_min = float(in_range("dt_min", dt_min, 0, None, lo_open=True))
    dt_max = float(in_range("dt_max", dt_max, dt_min, None))
    rng = np.random.default_rng() if rng is None else rng
    A, B = diag_modes(N, init)
    C = (rng.standard_normal((H, N // 2)) + 1j * rng.standard_normal((H, N // 2))) / np.sqrt(2)
    log_dt = rng.uniform(np.log(dt_min), np.log(dt_max), H)
    return dict(log_dt=log_dt, A=np.tile(A, (H, 1)), B=np.tile(B, (H, 1)), C=C)


# --------------------------------------------------------------------------------------------------
# Discretisation
# --------------------------------------------------------------------------------------------------

def _check_ssm(A, B=None, dt=None, method=None):
    A = as_array("A", A, dtype=complex)
    if A.ndim < 1:
        raise ValueError(f"A must have ndim >= 1 (..., N/2), got shape {A.shape}")
    if np.any(A.real >= 0):
        raise ValueError("A must have Re(A) < 0 (a stable system), got Re(A) >= 0")
    out = [A]
    if B is not None:
        out.append(as_array("B", B, dtype=complex))
    if dt is not None:
        dt = in_range("dt", dt, 0, None, lo_open=True)
        if dt.ndim == A.ndim - 1 and dt.ndim > 0:
            dt = dt[..., None]                                                 # (H,) -> (H, 1)
        out.append(dt)
    if method is not None:
        choice("method", method, METHODS)
    return out


def _discretize(A, B, dt, method):
    dtA = dt * A
    if method == "bilinear":
        return (1 + dtA / 2) / (1 - dtA / 2), dt * B / (1 - dtA / 2)
    Abar = np.exp(dtA)
    return Abar, ((Abar - 1) / A * B if method == "zoh" else dt * B)


def discretize(A, B, dt, method="zoh"):
    """Discrete (Abar, Bbar) of x' = A x + B u with step dt.

      "zoh"      Abar = exp(dt A),                   Bbar = (Abar - 1) / A * B     (exact for held input)
      "bilinear" Abar = (1 + dt A/2)/(1 - dt A/2),   Bbar = dt B / (1 - dt A/2)    (Tustin)
      "euler"    Abar = exp(dt A),                   Bbar = dt B     (Euler-B: exact A, Euler B; Mamba)

    A, B: (H, N/2) complex with Re A < 0; dt > 0, scalar, (H,) or (H, 1). Returns (Abar, Bbar).
    """
    A, B, dt = _check_ssm(A, B, dt, method)
    return _discretize(A, B, dt, method)


def _jacobian(A, B, dt, method, Abar):
    """discretize_jacobian for checked inputs, with the forward's Abar (exp(dt A) is not recomputed)."""
    if method == "bilinear":
        den = 1 - dt * A / 2
        return dict(dAbar_dA=dt / den**2, dAbar_ddt=A / den**2,
                    dBbar_dA=dt * dt * B / (2 * den**2), dBbar_dB=dt / den, dBbar_ddt=B / den**2)
    if method == "zoh":
        return dict(dAbar_dA=dt * Abar, dAbar_ddt=A * Abar,
                    dBbar_dA=B * (dt * A * Abar - Abar + 1) / A**2, dBbar_dB=(Abar - 1) / A, dBbar_ddt=B * Abar)
    return dict(dAbar_dA=dt * Abar, dAbar_ddt=A * Abar,
                dBbar_dA=0.0, dBbar_dB=dt, dBbar_ddt=B)


def discretize_jacobian(A, B, dt, method="zoh"):
    """Holomorphic partial derivatives of (Abar, Bbar) w.r.t. A, B and dt (all elementwise).

    Returns dict with keys dAbar_dA, dAbar_ddt, dBbar_dA, dBbar_dB, dBbar_ddt, each broadcasting
    against A.
    """
    A, B, dt = _check_ssm(A, B, dt, method)
    return _jacobian(A, B, dt, method, _discretize(A, B, dt, method)[0])


# --------------------------------------------------------------------------------------------------
# Kernel
# --------------------------------------------------------------------------------------------------

def vandermonde(Abar, L):
    """V[..., n, l] = Abar_n^l for l = 0..L-1, as exp(l log Abar). Shape (..., N/2, L)."""
    return np.exp(np.log(Abar)[..., None] * np.arange(L))


def kernel_prepare(A, B, C, dt, L, method="zoh"):
    """The checked inputs of `kernel_fwd` and their discretisation: the part of the kernel's ctx shared
    by the oracle and its fast path (refssm.kernels.ssm.kernel_fwd), which add what their VJP needs.

    The parameters are cast to complex128 (dt to float64) whatever their dtype: the powers Abar^l up to
    l = L - 1 need double precision (in complex64, |Abar|^l drifts by about l * 6e-8 relative).
    Returns dict(A, B, C, dt (broadcast against A, e.g. (H, 1)), dt_shape, method, L, Abar, Bbar, W = C Bbar,
    K_shape).
    """
    L = positive_int("L", L)
    A, B, dt_b = _check_ssm(A, B, dt, method)
    C = as_array("C", C, dtype=complex)
    A, B, C = (np.asarray(x, dtype=np.complex128) for x in (A, B, C))
    dt_b = np.asarray(dt_b, dtype=np.float64)
    Abar, Bbar = _discretize(A, B, dt_b, method)
    W = C * Bbar
    K_shape = np.broadcast_shapes(W.shape, Abar.shape)[:-1] + (L,)
    return dict(A=A, B=B, C=C, dt=dt_b, dt_shape=np.shape(dt), method=method, L=L, Abar=Abar, Bbar=Bbar, W=W,
                K_shape=K_shape)


def kernel_fwd(A, B, C, dt, L, method="zoh"):
    """SSM convolution kernel K[h, l] = 2 Re sum_n C[h,n] Bbar[h,n] Abar[h,n]^l, l = 0..L-1, and its ctx.

    A, B, C: (H, N/2) complex (A, B may be (1, N/2), shared by the channels); dt: (H,) or (H, 1); L >= 1.
    Returns (K (H, L) float64, ctx for `kernel_vjp`). Computed in complex128 whatever the parameters'
    dtype (see kernel_prepare). The ctx keeps the discretisation and the (H, N/2, L) Vandermonde matrix,
    which the VJP reuses. Cost O(H N L) time and memory.
    """
    ctx = kernel_prepare(A, B, C, dt, L, method)
    ctx["V"] = vandermonde(ctx["Abar"], ctx["L"])                              # (H, N/2, L)
    return 2 * np.einsum("...n,...nl->...l", ctx["W"], ctx["V"]).real, ctx


def kernel(A, B, C, dt, L, method="zoh"):
    """K (H, L) float64 of `kernel_fwd`, without its ctx."""
    return kernel_fwd(A, B, C, dt, L, method)[0]


def kernel_cotangent(ctx, gK):
    """gK = dL/dK checked against the kernel's shape, as float64 (the VJPs of the kernel and its fast path)."""
    gK = np.asarray(as_array("gK", gK), dtype=np.float64)
    if gK.shape != ctx["K_shape"]:
        raise ValueError(f"gK must have the kernel's shape {ctx['K_shape']}, got {gK.shape}")
    return gK


def power_sums(gK, Abar, V=None):
    """S_n = sum_l gK[l] Abar_n^l and T_n = sum_l l gK[l] Abar_n^(l-1) (dS/dAbar): the two reductions of
    `kernel_vjp`. gK (..., L), Abar (..., N/2), V = vandermonde(Abar, L) if already computed
    -> S, T (..., N/2). Cost O(H N L) with the Vandermonde matrix."""
    L = gK.shape[-1]
    V = vandermonde(Abar, L) if V is None else V                               # (H, N/2, L)
    S = np.einsum("...l,...nl->...n", gK, V)
    T = np.einsum("...l,...nl->...n", gK * np.arange(L), V) / Abar
    return S, T


def kernel_vjp(ctx, gK):
    """VJP of `kernel_fwd`: (gA, gB, gC, gdt) for upstream gK (H, L), from the power sums of gK over the
    ctx's Vandermonde matrix (`power_sums`) and the chain rule `kernel_chain`."""
    S, T = power_sums(kernel_cotangent(ctx, gK), ctx["Abar"], ctx["V"])
    return kernel_chain(ctx, S, T)


def kernel_chain(ctx, S, T):
    """The chain rule of the kernel's VJP, given the power sums S, T of gK (see `power_sums`; the oracle
    and the fast path compute them differently, and share this). Returns (gA, gB, gC, gdt).

    With W = C Bbar, z = Abar: loss = 2 Re sum_n W_n S_n, S_n = sum_l gK[l] z_n^l, so
    grad W = 2 conj(S), grad z = 2 conj(W sum_l l gK[l] z^(l-1)); then the chain rule through
    the holomorphic maps W(C, Bbar), (Abar, Bbar)(A, B, dt): grad_x = grad_w conj(dw/dx) for complex x,
    and Re(conj(grad_w) dw/ddt) for the real dt. Each gradient has its input's shape, so parameters
    shared across channels (e.g. A of shape (1, N/2)) get the sum over the channels that use them.
    Gradients of complex inputs are dL/dRe + i dL/dIm (complex128); gdt is float64.
    """
    A, B, C, dt = ctx["A"], ctx["B"], ctx["C"], ctx["dt"]
    gW, gz = 2 * np.conj(S), 2 * np.conj(ctx["W"] * T)
    gC = gW * np.conj(ctx["Bbar"])
    gBbar = gW * np.conj(C)
    J = _jacobian(A, B, dt, ctx["method"], ctx["Abar"])
    gA = gz * np.conj(J["dAbar_dA"]) + gBbar * np.conj(J["dBbar_dA"])
    gB = gBbar * np.conj(J["dBbar_dB"])
    gdt_modes = (np.conj(gz) * J["dAbar_ddt"] + np.conj(gBbar) * J["dBbar_ddt"]).real
    return (sum_to_shape(gA, A.shape), sum_to_shape(gB, B.shape), sum_to_shape(gC, C.shape),
            sum_to_shape(gdt_modes, dt.shape).reshape(ctx["dt_shape"]))


def sum_to_shape(g, shape):
    """Sum a broadcast gradient g back to `shape` (the adjoint of numpy broadcasting)."""
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead > 0 else g
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return (g.sum(axis=axes, keepdims=True) if axes else g).reshape(shape)


# --------------------------------------------------------------------------------------------------
# Convolutions (real FFTs of a fast length n >= 2L - 1: linear, never circular)
# --------------------------------------------------------------------------------------------------
#
# These are generic operations: real FFTs, ufuncs and reductions only, the same code for every backend, on
# numpy arrays (scipy.fft, on _WORKERS threads) or CuPy arrays (cupyx.scipy.fft: cuFFT, no workers argument),
# whichever the inputs are (backend.array_module / fft_module). The FFT length is computed on the host.
# They keep the dtype: float32 signals give complex64 spectra and float32 outputs, float64 stays float64
# (mixed inputs compute in float64). A ctx holds the forward's spectra, which the VJP reuses: a forward
# costs two rffts and one irfft, a VJP one rfft (of gy) and two irffts.

_WORKERS = -1      # scipy.fft threads: all cores (set_fft_workers)


def set_fft_workers(n):
    """Threads of the FFT convolutions (scipy.fft's workers): n >= 1, or -1 for all cores (the default).
    refssm.distributed sets it to each rank's share of the cores."""
    global _WORKERS
    if n != -1:
        positive_int("n", n)
    _WORKERS = int(n)


def conv_length(L):
    """FFT length of the convolutions: the smallest fast length n >= 2L - 1, so that the product of two
    zero-padded spectra is the linear convolution on the L outputs (no wrap-around)."""
    return fft.next_fast_len(2 * L - 1, real=True)


def _rfft(x, n):
    xp = backend.array_module(x)
    if xp is np:
        return fft.rfft(x, n, axis=-1, workers=_WORKERS)
    return backend.fft_module(xp).rfft(x, n, axis=-1)


def _irfft(X, n, L):
    """The first L samples of the inverse of spectrum X (..., n//2 + 1); X is a temporary, overwritten."""
    xp = backend.array_module(X)
    if xp is np:
        return fft.irfft(X, n, axis=-1, overwrite_x=True, workers=_WORKERS)[..., :L]
    return backend.fft_module(xp).irfft(X, n, axis=-1, overwrite_x=True)[..., :L]


def _check_conv(u, **kernels):
    """u (..., L) and the kernels (..., L), broadcasting against u, in one float dtype: float32 if all are
    float32 arrays, else float64."""
    dtypes = [getattr(x, "dtype", None) for x in (u, *kernels.values())]
    dtype = np.float32 if all(d == np.float32 for d in dtypes) else np.float64
    u = time_series("u", u, dtype)
    out = [u]
    for name, K in kernels.items():
        K = time_series(name, K, dtype)
        if K.shape[-1] != u.shape[-1]:
            raise ValueError(f"{name} must have the same length as u along the last axis: "
                             f"{K.shape[-1]} != {u.shape[-1]}")
        try:
            np.broadcast_shapes(u.shape[:-1], K.shape[:-1])
        except ValueError:
            raise ValueError(f"{name} shape {K.shape} does not broadcast against u shape {u.shape}") from None
        out.append(K)
    if len({x.dtype for x in out}) > 1:                                        # trusted callers, mixed dtypes
        dtype = np.result_type(*(x.dtype for x in out))
        out = [x.astype(dtype, copy=False) for x in out]
    return out


def _cotangent(gy, shape, dtype):
    """gy = dL/dy of the output's shape, in the forward's dtype."""
    gy = as_array("gy", gy, dtype=dtype)
    if gy.shape != shape:
        raise ValueError(f"gy must have the output's shape {shape}, got {gy.shape}")
    return gy.astype(dtype, copy=False)


def causal_conv_fwd(u, K):
    """y[..., t] = sum_{j<=t} K[..., j] u[..., t-j], and the ctx of `causal_conv_vjp`.

    u: (..., L) e.g. (B, H, L); K: (..., L) broadcasting against u, e.g. (H, L). Real FFTs of length
    conv_length(L) >= 2L - 1 (zero padding, so no wrap-around), on all cores. The ctx keeps the spectra
    rfft(u) and rfft(K). Cost O(L log L) per row. dtype kept (float32 in, float32 out). y is the first L
    samples of the inverse transform, a view (no copy; its rows are strided by n).
    """
    u, K = _check_conv(u, K=K)
    L = u.shape[-1]
    n = conv_length(L)
    U, KF = _rfft(u, n), _rfft(K, n)
    y = _irfft(U * KF, n, L)
    return y, (U, KF, u.shape, K.shape, y.shape, n)


def causal_conv(u, K):
    """y of `causal_conv_fwd`, without its ctx."""
    return causal_conv_fwd(u, K)[0]


def _correlate(G, X, shape, n, L, last_use=False):
    """sum_t g[t] x[t - j] for j = 0..L-1 (x zero outside 0..L-1) from the spectra G = rfft(g), X = rfft(x),
    summed over broadcast axes down to `shape` (..., L) in the frequency domain, before the inverse FFT.
    G * conj(X) takes one temporary of the product's shape, none if G has that shape and `last_use`
    says it may be overwritten (the caller's own spectrum of gy, used for the last time)."""
    product_shape = np.broadcast_shapes(G.shape, X.shape)
    conj = backend.array_module(G).conj
    if last_use and G.shape == product_shape:
        GX = G
        GX *= conj(X)
    elif X.shape == product_shape:
        GX = conj(X)
        GX *= G
    else:
        GX = G * conj(X)
    return _irfft(sum_to_shape(GX, tuple(shape[:-1]) + G.shape[-1:]), n, L)


def causal_conv_vjp(ctx, gy):
    """VJP of `causal_conv_fwd`: (gu, gK), two correlations sharing one rfft of gy (zero-padded, so linear)
    and the forward's spectra: gu[s] = sum_{t>=s} K[t-s] gy[t],  gK[j] = sum_t gy[t] u[t-j] (summed over
    broadcast axes in the frequency domain, then inverted). Two irffts."""
    U, KF, u_shape, K_shape, y_shape, n = ctx
    L = y_shape[-1]
    G = _rfft(_cotangent(gy, y_shape, U.real.dtype), n)
    gK = _correlate(G, U, K_shape, n, L)
    return _correlate(G, KF, u_shape, n, L, last_use=True), gK


def two_sided_kernel(K_fwd, K_bwd, n):
    """k (..., n): K_fwd[j] at j = 0..L-1 and the anti-causal part K_bwd[d-1] at n - d, d = 1..L-1, zeros
    between. Circular convolution with k of a signal zero-padded to n >= 2L - 1 is the bidirectional
    convolution on the first L samples: the causal and anti-causal parts never overlap or wrap onto them.
    """
    L = K_fwd.shape[-1]
    shape = np.broadcast_shapes(K_fwd.shape[:-1], K_bwd.shape[:-1]) + (n,)
    k = backend.array_module(K_fwd).zeros_like(K_fwd, shape=shape)
    k[..., :L] = K_fwd
    k[..., n - L + 1:] = K_bwd[..., L - 2::-1] if L > 1 else K_bwd[..., :0]      # K_bwd[d-1] at n - d
    return k


def bidirectional_conv_fwd(u, K_fwd, K_bwd):
    """y[t] = sum_{j<=t} K_fwd[j] u[t-j] + sum_{d>=1} K_bwd[d-1] u[t+d], and the ctx of its VJP.

    The backward kernel sees strictly future inputs (S4 bidirectional convention; reference notes,
    Binary S4D 2.2); K_bwd[L-1] is never used. One FFT product with the two-sided kernel
    (`two_sided_kernel`), length conv_length(L) >= 2L - 1. Shapes and dtypes as `causal_conv_fwd`.
    """
    u, K_fwd, K_bwd = _check_conv(u, K_fwd=K_fwd, K_bwd=K_bwd)
    L = u.shape[-1]
    n = conv_length(L)
    U, KF = _rfft(u, n), _rfft(two_sided_kernel(K_fwd, K_bwd, n), n)
    y = _irfft(U * KF, n, L)
    return y, (U, KF, u.shape, K_fwd.shape, K_bwd.shape, y.shape, n)


def bidirectional_conv(u, K_fwd, K_bwd):
    """y of `bidirectional_conv_fwd`, without its ctx."""
    return bidirectional_conv_fwd(u, K_fwd, K_bwd)[0]


def bidirectional_conv_vjp(ctx, gy):
    """VJP of `bidirectional_conv_fwd`: (gu, gK_fwd, gK_bwd), one rfft of gy and two irffts (as
    causal_conv_vjp, with the two-sided kernel; its gradient splits into the two parts)."""
    U, KF, u_shape, f_shape, b_shape, y_shape, n = ctx
    L = y_shape[-1]
    G = _rfft(_cotangent(gy, y_shape, U.real.dtype), n)
    k_shape = np.broadcast_shapes(f_shape[:-1], b_shape[:-1]) + (n,)
    gk = _correlate(G, U, k_shape, n, n)                                       # (..., n), two-sided
    gu = _correlate(G, KF, u_shape, n, L, last_use=True)
    gK_bwd = backend.array_module(gk).zeros_like(gk, shape=b_shape[:-1] + (L,))
    gK_bwd[..., :L - 1] = sum_to_shape(gk[..., n - 1:n - L:-1], b_shape[:-1] + (L - 1,))
    return gu, sum_to_shape(gk[..., :L], f_shape), gK_bwd


# --------------------------------------------------------------------------------------------------
# Recurrence
# --------------------------------------------------------------------------------------------------

def check_scan(u, Abar, Bbar, C):
    """Validate the inputs of `scan`; return them with Abar, Bbar, C broadcast to (..., H, N/2)."""
    u = time_series("u", u)
    Abar = as_array("Abar", Abar, dtype=complex, min_ndim=1)
    Bbar = as_array("Bbar", Bbar, dtype=complex, min_ndim=1)
    C = as_array("C", C, dtype=complex, min_ndim=1)
    try:
        shape = u.shape[:-1] + np.broadcast_shapes(Abar.shape[-1:], Bbar.shape[-1:], C.shape[-1:])
        Abar, Bbar, C = (np.broadcast_to(p, shape) for p in (Abar, Bbar, C))
    except ValueError:
        raise ValueError(f"Abar, Bbar and C (shapes {Abar.shape}, {Bbar.shape}, {C.shape}) must "
                         f"broadcast against u.shape[:-1] + (N/2,), u.shape = {u.shape}") from None
    return u, Abar, Bbar, C


def scan(u, Abar, Bbar, C):
    """The recurrence x_t = Abar x_{t-1} + Bbar u_t, x_{-1} = 0, y_t = 2 Re sum_n C_n x_t[n].

    u: (..., H, L) real; Abar, Bbar, C: (H, N/2) complex. Returns y (..., H, L). Cost O(L) sequential
    steps of O(H N) each. Equals causal_conv(u, K) with K from the same (Abar, Bbar, C).
    """
    u, Abar, Bbar, C = check_scan(u, Abar, Bbar, C)
    x = np.zeros(u.shape[:-1] + Abar.shape[-1:], dtype=complex)                # (..., H, N/2)
    y = np.empty(u.shape)
    for t in range(u.shape[-1]):
        x = Abar * x + Bbar * u[..., t, None]
        y[..., t] = 2 * np.einsum("...n,...n->...", C, x).real
    return y
