"""Diagonal state-space models: initialisation, discretisation, kernel, convolution and scan.

The continuous system, per channel h and complex mode n (N/2 conjugate-pair modes stored; the other
half is their conjugate, so outputs take 2 Re):

    x'(t) = A x(t) + B u(t),    y(t) = 2 Re(C x(t))                                   (S4D, Gu et al. 2022)

Discretised with step dt:  x_t = Abar x_{t-1} + Bbar u_t,  y_t = 2 Re(C x_t), i.e. the convolution

    y[t] = sum_{j<=t} K[j] u[t-j],     K[l] = 2 Re sum_n C_n Bbar_n Abar_n^l       (Vandermonde kernel)

Shapes: A, B, C are (H, N/2) complex; dt is (H,) or (H, 1), broadcast against the mode axis;
signals are (..., H, L) with time last. The D skip (y += D u) belongs to the layer, not to this module.

Every differentiable function here has its VJP right below it, named `<name>_vjp`. A VJP takes the
upstream gradient first, then the same inputs as the forward. Gradients of a real loss with respect
to a complex argument z = a + ib are returned as dL/da + i dL/db.
"""

import numpy as np

from refssm._checks import as_array, choice, in_range, positive_int

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
    n = np.arange(N // 2)
    if init == "lin":
        A, B = -0.5 + 1j * np.pi * n, np.ones(N // 2, complex)
    elif init == "inv":
        A, B = -0.5 + 1j * (N / np.pi) * (N / (2 * n + 1) - 1), np.ones(N // 2, complex)
    elif init == "real":
        A, B = -(n + 1.0) + 0j, np.ones(N // 2, complex)
    else:
        A, B = hippo_legs_normal(N)
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


def discretize(A, B, dt, method="zoh"):
    """Discrete (Abar, Bbar) of x' = A x + B u with step dt.

      "zoh"      Abar = exp(dt A),                   Bbar = (Abar - 1) / A * B     (exact for held input)
      "bilinear" Abar = (1 + dt A/2)/(1 - dt A/2),   Bbar = dt B / (1 - dt A/2)    (Tustin)
      "euler"    Abar = exp(dt A),                   Bbar = dt B     (Euler-B: exact A, Euler B; Mamba)

    A, B: (H, N/2) complex with Re A < 0; dt > 0, scalar, (H,) or (H, 1). Returns (Abar, Bbar).
    """
    A, B, dt = _check_ssm(A, B, dt, method)
    dtA = dt * A
    if method == "bilinear":
        return (1 + dtA / 2) / (1 - dtA / 2), dt * B / (1 - dtA / 2)
    Abar = np.exp(dtA)
    return Abar, ((Abar - 1) / A * B if method == "zoh" else dt * B)


def discretize_jacobian(A, B, dt, method="zoh"):
    """Holomorphic partial derivatives of (Abar, Bbar) w.r.t. A, B and dt (all elementwise).

    Returns dict with keys dAbar_dA, dAbar_ddt, dBbar_dA, dBbar_dB, dBbar_ddt, each broadcasting
    against A.
    """
    A, B, dt = _check_ssm(A, B, dt, method)
    dtA = dt * A
    if method == "bilinear":
        den = 1 - dtA / 2
        return dict(dAbar_dA=dt / den**2, dAbar_ddt=A / den**2,
                    dBbar_dA=dt * dt * B / (2 * den**2), dBbar_dB=dt / den, dBbar_ddt=B / den**2)
    Abar = np.exp(dtA)
    if method == "zoh":
        return dict(dAbar_dA=dt * Abar, dAbar_ddt=A * Abar,
                    dBbar_dA=B * (dtA * Abar - Abar + 1) / A**2, dBbar_dB=(Abar - 1) / A, dBbar_ddt=B * Abar)
    return dict(dAbar_dA=dt * Abar, dAbar_ddt=A * Abar,
                dBbar_dA=0.0, dBbar_dB=dt, dBbar_ddt=B)


# --------------------------------------------------------------------------------------------------
# Kernel
# --------------------------------------------------------------------------------------------------

def vandermonde(Abar, L):
    """V[..., n, l] = Abar_n^l for l = 0..L-1, as exp(l log Abar). Shape (..., N/2, L)."""
    return np.exp(np.log(Abar)[..., None] * np.arange(L))


def kernel(A, B, C, dt, L, method="zoh"):
    """SSM convolution kernel K[h, l] = 2 Re sum_n C[h,n] Bbar[h,n] Abar[h,n]^l, l = 0..L-1.

    A, B, C: (H, N/2) complex; dt: (H,) or (H, 1); L >= 1. Returns K (H, L) float64.
    Cost O(H N L) time and memory (the Vandermonde matrix is materialised).
    """
    L = positive_int("L", L)
    C = as_array("C", C, dtype=complex)
    Abar, Bbar = discretize(A, B, dt, method)
    return 2 * np.einsum("...n,...nl->...l", C * Bbar, vandermonde(Abar, L)).real


def power_sums(gK, Abar):
    """S_n = sum_l gK[l] Abar_n^l and T_n = sum_l l gK[l] Abar_n^(l-1) (dS/dAbar): the two reductions of
    `kernel_vjp`. gK (..., L), Abar (..., N/2) -> S, T (..., N/2). Cost O(H N L) with the Vandermonde."""
    L = gK.shape[-1]
    V = vandermonde(Abar, L)                                                   # (H, N/2, L)
    S = np.einsum("...l,...nl->...n", gK, V)
    T = np.einsum("...l,...nl->...n", gK * np.arange(L), V) / Abar
    return S, T


def kernel_vjp(gK, A, B, C, dt, L, method="zoh", sums=power_sums):
    """VJP of `kernel`: (gA, gB, gC, gdt) for upstream gK (H, L).

    With W = C Bbar, z = Abar: loss = 2 Re sum_n W_n S_n, S_n = sum_l gK[l] z_n^l, so
    grad W = 2 conj(S), grad z = 2 conj(W sum_l l gK[l] z^(l-1)); then the chain rule through
    the holomorphic maps W(C, Bbar), (Abar, Bbar)(A, B, dt): grad_x = grad_w conj(dw/dx) for complex x,
    and Re(conj(grad_w) dw/ddt) for the real dt. Each gradient has its input's shape, so parameters
    shared across channels (e.g. A of shape (1, N/2)) get the sum over the channels that use them.
    sums: the function computing (S, T); the fast path refssm.kernels.ssm.kernel_vjp passes its own.
    """
    A, B, dt_b = _check_ssm(A, B, dt, method)                                 # dt_b: (H, 1)
    C = as_array("C", C, dtype=complex)
    gK = as_array("gK", gK)
    if gK.shape[-1] != positive_int("L", L):
        raise ValueError(f"gK must have length L = {L} along its last axis, got shape {gK.shape}")
    Abar, Bbar = discretize(A, B, dt_b, method)
    S, T = sums(gK, np.broadcast_to(Abar, np.broadcast_shapes(Abar.shape, C.shape)))
    W = C * Bbar
    gW, gz = 2 * np.conj(S), 2 * np.conj(W * T)
    gC = gW * np.conj(Bbar)
    gBbar = gW * np.conj(C)
    J = discretize_jacobian(A, B, dt_b, method)
    gA = gz * np.conj(J["dAbar_dA"]) + gBbar * np.conj(J["dBbar_dA"])
    gB = gBbar * np.conj(J["dBbar_dB"])
    gdt_modes = (np.conj(gz) * J["dAbar_ddt"] + np.conj(gBbar) * J["dBbar_ddt"]).real
    return (sum_to_shape(gA, A.shape), sum_to_shape(gB, B.shape), sum_to_shape(gC, C.shape),
            sum_to_shape(gdt_modes, dt_b.shape).reshape(np.shape(dt)))


def sum_to_shape(g, shape):
    """Sum a broadcast gradient g back to `shape` (the adjoint of numpy broadcasting)."""
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead > 0 else g
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return (g.sum(axis=axes, keepdims=True) if axes else g).reshape(shape)


# --------------------------------------------------------------------------------------------------
# Convolutions (FFT, zero-padded to 2L: linear, never circular)
# --------------------------------------------------------------------------------------------------

def _check_conv(u, K, name="K"):
    u = as_array("u", u, min_ndim=1)
    K = as_array(name, K, min_ndim=1)
    if u.shape[-1] < 1:
        raise ValueError("u must have length L >= 1 along its last (time) axis")
    if K.shape[-1] != u.shape[-1]:
        raise ValueError(f"{name} must have the same length as u along the last axis: "
                         f"{K.shape[-1]} != {u.shape[-1]}")
    try:
        np.broadcast_shapes(u.shape[:-1], K.shape[:-1])
    except ValueError:
        raise ValueError(f"{name} shape {K.shape} does not broadcast against u shape {u.shape}") from None
    return u, K


def _fft_conv(u, K):
    """Linear causal convolution by FFT of size 2L; arrays already checked. (..., L)."""
    L = u.shape[-1]
    n = 2 * L
    return np.fft.irfft(np.fft.rfft(u, n) * np.fft.rfft(K, n), n)[..., :L]


def causal_conv(u, K):
    """y[..., t] = sum_{j<=t} K[..., j] u[..., t-j].

    u: (..., L) e.g. (B, H, L); K: (..., L) broadcasting against u, e.g. (H, L). FFT of size 2L
    (zero padding, so no wrap-around). Cost O(L log L) per row.
    """
    u, K = _check_conv(u, K)
    return _fft_conv(u, K)


def causal_conv_vjp(gy, u, K):
    """VJP of `causal_conv`, two correlations sharing the FFT of gy (zero-padded to 2L, so linear):
    gu[s] = sum_{t>=s} K[t-s] gy[t],  gK[j] = sum_t gy[t] u[t-j] (summed over broadcast axes)."""
    u, K = _check_conv(u, K)
    gy = as_array("gy", gy)
    L = u.shape[-1]
    n = 2 * L
    G = np.fft.rfft(gy, n)
    gu = np.fft.irfft(sum_to_shape(G * np.conj(np.fft.rfft(K, n)), u.shape[:-1] + G.shape[-1:]), n)[..., :L]
    GK = sum_to_shape(G * np.conj(np.fft.rfft(u, n)), K.shape[:-1] + G.shape[-1:])   # reduce, then invert
    return gu, np.fft.irfft(GK, n)[..., :L]


def _shift_future(K_bwd):
    """[0, K_bwd[0], ..., K_bwd[L-2]]: the backward kernel as a strictly-causal kernel."""
    return np.concatenate([np.zeros(K_bwd.shape[:-1] + (1,)), K_bwd[..., :-1]], axis=-1)


def bidirectional_conv(u, K_fwd, K_bwd):
    """y[t] = sum_{j<=t} K_fwd[j] u[t-j] + sum_{d>=1} K_bwd[d-1] u[t+d].

    The backward kernel sees strictly future inputs (S4 bidirectional convention; reference notes,
    Binary S4D 2.2). Computed as a causal convolution plus a causal convolution in reversed time.
    """
    u, K_fwd = _check_conv(u, K_fwd, "K_fwd")
    _, K_bwd = _check_conv(u, K_bwd, "K_bwd")
    return _fft_conv(u, K_fwd) + _fft_conv(u[..., ::-1], _shift_future(K_bwd))[..., ::-1]


def bidirectional_conv_vjp(gy, u, K_fwd, K_bwd):
    """VJP of `bidirectional_conv`: (gu, gK_fwd, gK_bwd)."""
    u, K_fwd = _check_conv(u, K_fwd, "K_fwd")
    _, K_bwd = _check_conv(u, K_bwd, "K_bwd")
    gy = as_array("gy", gy)
    gu_f, gK_f = causal_conv_vjp(gy, u, K_fwd)
    gu_r, gK_shift = causal_conv_vjp(gy[..., ::-1], u[..., ::-1], _shift_future(K_bwd))
    gK_b = np.concatenate([gK_shift[..., 1:], np.zeros(gK_shift.shape[:-1] + (1,))], axis=-1)
    return gu_f + gu_r[..., ::-1], gK_f, gK_b


# --------------------------------------------------------------------------------------------------
# Recurrence
# --------------------------------------------------------------------------------------------------

def check_scan(u, Abar, Bbar, C):
    """Validate the inputs of `scan`; return them with Abar, Bbar, C broadcast to (..., H, N/2)."""
    u = as_array("u", u, min_ndim=1)
    Abar = as_array("Abar", Abar, dtype=complex, min_ndim=1)
    Bbar = as_array("Bbar", Bbar, dtype=complex, min_ndim=1)
    C = as_array("C", C, dtype=complex, min_ndim=1)
    if u.shape[-1] < 1:
        raise ValueError("u must have length L >= 1 along its last (time) axis")
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
