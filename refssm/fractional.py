"""Fractional calculus and the fractional-order diagonal SSM (numpy oracles, float64/complex128).

Contents, one function per formula (h and dt are uniform steps, time is the last axis):

  Grünwald–Letnikov (GL)   gl_weights, memory_sum, gl_derivative, gl_integral
  Caputo L1                l1_weights, caputo_l1, caputo_rl_correction
  Mittag-Leffler           mittag_leffler, ml_impulse_response, ml_step_response
  fractional SSM           D^α x = λ x + u per complex mode; the SSM output is y = 2 Re(C x) with B
                           folded into C, so every kernel below is the response of one mode to u.
    GL scheme              gl_recursion (O(L²) oracle), gl_kernel_recursion, gl_kernel (O(L log L)),
                           gl_kernel_fwd / gl_kernel_vjp, gl_solve (Caputo initial-value problem)
    exact, sampled by ZOH  exact_kernel
    sums of exponentials   soe_quadrature, soe_coupled_kernel (converges to the Caputo system),
                           soe_decoupled_kernel (LongSpike's public code) with _fwd / _vjp,
                           longspike_omega_eta (with _fwd / _vjp), longspike_logits, longspike_kernel
    one entry point        fssm_kernel(lam, alpha, dt, L, method) with fssm_kernel_fwd / _vjp, fssm_gap;
                           for the models: fssm_conv_kernel (K = 2 Re Σ C B k, like refssm.ssm.kernel)
                           with fssm_conv_kernel_fwd / _vjp

VJP convention (as everywhere in refssm): `y, ctx = f_fwd(...)`, `grads = f_vjp(ctx, g)`; the ctx holds what
the forward computed (the kernels, their Vandermonde matrices), so a VJP never recomputes its forward.

Fast paths (Numba, refssm.kernels.fractional): memory_sum and gl_recursion, the two O(L²) sums, and
fssm_conv_kernel_fwd / _vjp (the Numba recursion for α > 1, the decoupled SOE without its Vandermonde).

Conventions. D^α with 0 < α < 2 and zero history before t = 0. Riemann–Liouville (RL) and Caputo
derivatives coincide for functions that vanish at t = 0 (0 < α ≤ 1); the GL scheme approximates RL, the
L1 scheme approximates Caputo, and `caputo_rl_correction` is their difference. Every fractional kernel
is the response to a unit sample u_0 = 1 (u_n = 0 for n > 0), so a continuous-time kernel is scaled like a
discrete one: k[n] ≈ dt · G(t_n) with G(t) = t^(α−1) E_{α,α}(λ t^α) the impulse response. Gradients of a
real loss with respect to a complex variable z are reported as dL/dRe z + i dL/dIm z.
"""

import numpy as np
from scipy import fft, linalg, optimize, special

from refssm._checks import as_array, choice, in_range, positive_int, time_series
from refssm.ssm import sum_to_shape


# ----------------------------------------------------------------------------------------------------
# input checks shared by this module and refssm.kernels.fractional


def check_alpha(alpha, hi=2.0, hi_open=True):
    """alpha as a float scalar in (0, hi) (or (0, hi]); ValueError naming the allowed range."""
    a = in_range("alpha", alpha, 0.0, hi, lo_open=True, hi_open=hi_open)
    if a.ndim:
        raise ValueError(f"alpha must be a scalar, got shape {a.shape}")
    return float(a)


def check_step(name, h):
    """A uniform grid step: a positive float scalar. An array of steps (a non-uniform grid) is refused."""
    v = as_array(name, h)
    if v.ndim:
        raise ValueError(f"{name} must be a scalar step: this scheme needs a uniform grid, got shape {v.shape}")
    return float(in_range(name, v, 0.0, lo_open=True))


def check_memory(memory, L):
    """Short-memory window length K (number of past terms kept), or None for the full sum."""
    return L if memory is None else min(positive_int("memory", memory), L)


# ----------------------------------------------------------------------------------------------------
# Grünwald–Letnikov


def _binomial_series(a, n):
    """Coefficients of (1 − z)^a, k = 0..n−1, for any real a: w_0 = 1, w_k = w_{k−1} (1 − (a+1)/k)."""
    w = np.empty(n)
    w[0] = 1.0
    w[1:] = np.cumprod(1.0 - (a + 1.0) / np.arange(1, n))   # (n-1,)
    return w


def gl_weights(alpha, n):
    """GL weights w_k = (−1)^k binom(α, k), k = 0..n−1, by the stable recursion.

    w_0 = 1, w_k = w_{k−1} (1 − (α+1)/k) (Podlubny 1999, eq. 7.6): no Gamma-function overflow, no
    cancellation. They are the coefficients of the generating function (1 − z)^α; for α > 0 they sum to
    zero, and Σ_{k<n} w_k = binom(n−1−α, n−1). alpha in (0, 2). Cost O(n).
    """
    return _binomial_series(check_alpha(alpha), positive_int("n", n))


def memory_sum(w, f, method="direct"):
    """The causal memory sum S_n = Σ_{j=0}^{min(n, K−1)} w_j f_{n−j} of weights w (K,) and f (..., L).

    method "direct": the O(K L) sum as written (the oracle); "fft": zero-padded FFT linear convolution,
    O(L log L), equal to the direct sum to rounding. Never circular: without the padding to length
    ≥ L + K − 1 the product of two DFTs is a circular convolution, whose wrap-around corrupts every
    index but the last (the bug of differint's GL, reference notes ecosystem §1.10).
    Fast path: refssm.kernels.fractional.memory_sum (direct, Numba).
    """
    w = as_array("w", w, ndim=1)
    f = time_series("f", f)
    choice("method", method, ("direct", "fft"))
    L, K = f.shape[-1], min(w.size, f.shape[-1])
    w = w[:K]
    if method == "fft":
        n = fft.next_fast_len(L + K - 1, real=True)
        return fft.irfft(fft.rfft(f, n) * fft.rfft(w, n), n)[..., :L]
    S = np.empty_like(f)
    for n in range(L):
        j = min(n + 1, K)
        S[..., n] = f[..., n - j + 1:n + 1] @ w[:j][::-1]          # Σ_j w_j f_{n−j}
    return S


def gl_derivative(f, alpha, h, method="direct"):
    """Grünwald–Letnikov derivative of order α of samples f_n = f(n h), at every grid point.

        D^α f(t_n) ≈ h^(−α) Σ_{k=0}^{n} w_k f_{n−k},      w_k = (−1)^k binom(α, k)

    It approximates the Riemann–Liouville derivative with zero history before t = 0, e.g.
    D^α t^p = Γ(p+1)/Γ(p+1−α) t^(p−α). First order: error O(h) at fixed t > 0 for smooth f.
    f (..., L) real; alpha in (0, 2); h > 0 the (uniform) step. Cost O(L²) ("direct") or O(L log L) ("fft").
    """
    f = time_series("f", f)
    alpha, h = check_alpha(alpha), check_step("h", h)
    return memory_sum(gl_weights(alpha, f.shape[-1]), f, method) * h ** (-alpha)


def gl_integral(f, alpha, h, method="direct"):
    """Grünwald–Letnikov fractional integral of order α: GL with order −α.

        I^α f(t_n) ≈ h^α Σ_{k=0}^{n} (−1)^k binom(−α, k) f_{n−k}

    e.g. I^α t^p = Γ(p+1)/Γ(p+1+α) t^(p+α). First order, O(h). alpha in (0, 2). Cost as gl_derivative.
    """
    f = time_series("f", f)
    alpha, h = check_alpha(alpha), check_step("h", h)
    return memory_sum(_binomial_series(-alpha, f.shape[-1]), f, method) * h ** alpha


# ----------------------------------------------------------------------------------------------------
# Caputo L1 scheme


def l1_weights(alpha, n):
    """L1 weights b_j = (j+1)^(1−α) − j^(1−α), j = 0..n−1 (0 < α < 1). Cost O(n)."""
    alpha = check_alpha(alpha, hi=1.0)
    j = np.arange(positive_int("n", n), dtype=float)
    return (j + 1.0) ** (1.0 - alpha) - j ** (1.0 - alpha)


def caputo_l1(f, alpha, h):
    """Caputo derivative of order 0 < α < 1 by the L1 scheme (f interpolated piecewise linearly).

        D_C^α f(t_n) ≈ h^(−α)/Γ(2−α) Σ_{j=0}^{n−1} b_j (f_{n−j} − f_{n−j−1}),   b_j = (j+1)^(1−α) − j^(1−α)

    and D_C^α f(t_0) = 0. Exact for piecewise-linear f; order 2 − α for f in C²[0, t]. The Caputo
    derivative ignores f(0): it differs from the RL/GL one by caputo_rl_correction(f(0), α, t).
    f (..., L) real; alpha in (0, 1); h > 0. Cost O(L²) (a memory_sum of b with the increments of f).
    """
    f = time_series("f", f)
    alpha, h = check_alpha(alpha, hi=1.0), check_step("h", h)
    df = np.diff(f, axis=-1, prepend=f[..., :1])             # (..., L), df_0 = 0, df_n = f_n − f_{n−1}
    return memory_sum(l1_weights(alpha, f.shape[-1]), df) * (h ** (-alpha) / special.gamma(2.0 - alpha))


def caputo_rl_correction(f0, alpha, t):
    """The initial-value term between the two derivatives, 0 < α < 1:

        D_RL^α f(t) − D_C^α f(t) = f(0) t^(−α) / Γ(1−α)

    (Diethelm 2010, Lemma 3.4). It is the RL derivative of the constant f(0), which Caputo removes, so the
    Caputo problem D_C^α x = g, x(0) = x0 is the RL problem for x − x0. Infinite at t = 0 unless f(0) = 0.
    f0 and t broadcast; t >= 0. Cost O(size).
    """
    f0 = as_array("f0", f0)
    alpha = check_alpha(alpha, hi=1.0)
    t = in_range("t", t, 0.0)
    with np.errstate(divide="ignore"):
        return f0 * t ** (-alpha) / special.gamma(1.0 - alpha)


# ----------------------------------------------------------------------------------------------------
# Mittag-Leffler function

# Contour parameters (see mittag_leffler): target exp(-_ML_LOG_TOL) for the quadrature error (raised for
# β > α + 1: the error constant, measured, grows up to e^8 per unit of β − α beyond 1); parabola
# scales tried (larger μ shortens the contour but amplifies rounding by e^μ); the asymptotic series is
# used where |z|^(1/α) >= _ML_ASYMPTOTIC, where its smallest term is below e^-50.
_ML_LOG_TOL = 36.0
_ML_MU = np.geomspace(0.02, 2.0, 40)
_ML_ASYMPTOTIC = 50.0
_ML_CHUNK = 4096


def _ml_poles(z, alpha):
    """The poles s_j = |z|^(1/α) e^{iφ_j}, φ_j = (arg z + 2πj)/α, of s^(α−β)/(s^α − z) on the principal
    sheet φ_j ∈ (−π, π]; at most three for α ≤ 2 (j = −1, 0, 1). Returns (s (n, 3), valid (n, 3))."""
    phi = (np.angle(z)[:, None] + 2.0 * np.pi * np.arange(-1, 2)) / alpha     # (n, 3)
    valid = (phi > -np.pi) & (phi <= np.pi) & (z[:, None] != 0)
    s = np.abs(z)[:, None] ** (1.0 / alpha) * np.exp(1j * phi)
    return np.where(valid, s, 1.0), valid


def _ml_residues(s, use, beta, alpha):
    """Σ over the poles in use of the residue (1/α) s_j^(1−β) e^{s_j} of e^s s^(α−β)/(s^α − z)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(use, s ** (1.0 - beta) * np.exp(s), 0.0).sum(axis=1) / alpha


def _ml_contour(z, alpha, beta):
    """E_{α,β}(z) by inverting the Laplace transform s^(α−β)/(s^α − z) on the parabola s(u) = μ(1+iu)²."""
    s_pole, valid = _ml_poles(z, alpha)
    # a stronger branch point, s^(α−β) with β − α > 1, enlarges the quadrature error's constant
    T = _ML_LOG_TOL + 8.0 * max(0.0, beta - alpha - 1.0)
    # each pole lies on the parabola of scale ρ² with ρ = Re √s_j; in the u-plane it sits at height
    # 1 − ρ/√μ, and the branch point s = 0 at height 1
    rho = np.sqrt(s_pole).real                                         # (n, 3)
    ratio = rho[:, :, None] / np.sqrt(_ML_MU)                         # (n, 3, nμ)
    left = valid[:, :, None] & (ratio < 1.0)
    right = valid[:, :, None] & (ratio >= 1.0)
    d_in = np.minimum(1.0, np.where(left, 1.0 - ratio, np.inf).min(axis=1))      # strip width inside
    # truncation at |u| = U costs e^{μ(1−U²)}; the outer strip width a costs e^{μ(1+a)² − 2πa/h} and is
    # best at a = U unless a pole right of the contour is closer (Weideman & Trefethen 2007, §2)
    U = np.sqrt(1.0 + T / _ML_MU)                                     # (nμ,)
    a = np.minimum(np.where(right, ratio - 1.0, np.inf).min(axis=1), U)
    h = np.minimum(2 * np.pi * d_in / T, 2 * np.pi * a / (T + _ML_MU * (1 + a) ** 2))
    with np.errstate(divide="ignore"):                                 # h = 0: a pole on that parabola
        nodes = np.ceil(U / h)                                         # (n, nμ) nodes per half-line
    best = np.argmin(nodes, axis=1)                                    # fewest nodes
    i = np.arange(z.size)
    mu, h, K = _ML_MU[best], h[i, best], nodes[i, best].astype(int)
    integral = np.empty_like(z)
    for k in np.unique(K):                                             # one node count at a time
        sel = K == k
        u = np.arange(-k, k + 1) * h[sel, None]                       # (n_k, 2k+1)
        s = mu[sel, None] * (1.0 + 1j * u) ** 2
        log_s = np.log(s)
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            f = np.exp(s + (alpha - beta) * log_s) * (1.0 + 1j * u) / (np.exp(alpha * log_s) - z[sel, None])
        integral[sel] = (h[sel] * mu[sel] / np.pi) * f.sum(axis=1)   # (h/2πi) Σ F(s) s'(u), s' = 2iμ(1+iu)
    return integral + _ml_residues(s_pole, valid & (rho > np.sqrt(mu)[:, None]), beta, alpha)


def _ml_asymptotic(z, alpha, beta):
    """Large |z|: E_{α,β}(z) = Σ_poles (1/α) s_j^(1−β) e^{s_j} − Σ_{k≥1} z^(−k)/Γ(β−αk), the series cut
    at its smallest term (bounded by Γ(αk−β+1)|z|^(−k)), so the error is about e^{−|z|^(1/α)}."""
    k = np.arange(1, 161)
    log_bound = special.gammaln(np.maximum(alpha * k - beta + 1.0, 1.0)) - np.log(np.abs(z))[:, None] * k
    # stop at the smallest term, and before 1/Γ overflows (there the terms are below 1e-70 anyway)
    keep = (k <= np.argmin(log_bound, axis=1)[:, None] + 1) & (alpha * k - beta < 170.0)   # (n, 160)
    with np.errstate(invalid="ignore", under="ignore"):
        terms = np.where(keep, np.exp(-k * np.log(z)[:, None]) * special.rgamma(beta - alpha * k), 0.0)
    s_pole, valid = _ml_poles(z, alpha)
    return _ml_residues(s_pole, valid, beta, alpha) - terms.sum(axis=1)


def mittag_leffler(z, alpha, beta=1.0):
    """The two-parameter Mittag-Leffler function E_{α,β}(z) = Σ_{k≥0} z^k / Γ(αk + β).

    Computed from the inverse Laplace transform E_{α,β}(z) = (1/2πi) ∫ e^s s^(α−β)/(s^α − z) ds
    (Garrappa 2015): the Bromwich line is deformed to a parabola s(u) = μ(1+iu)², the integral is done by
    the trapezoidal rule in u (exponentially convergent), and the residues (1/α) s_j^(1−β) e^{s_j} of the
    poles s_j = z^(1/α) lying right of the parabola are added. For each z the scale μ and the step are
    chosen from the error estimates of Weideman & Trefethen (2007) so that no pole comes near the contour.
    Where |z|^(1/α) >= 50 the asymptotic series (with the same residues) is used instead.
    Accuracy, against pymittagleffler for α in [0.05, 2], |z| in [1e-3, 1e4], every arg z: relative
    difference <= 1.1e-11 where |E| > 1e-6 (typically 1e-13; the worst cases are where E is exponentially
    small, such as E_1(z) = e^z for Re z << 0, as the quadrature error is absolute, ~1e-17) and absolute
    <= 1.2e-12 where |E| <= 1 (there pymittagleffler was the one off, by a 40-digit check).
    Cost: about 50–150 complex exponentials per point on the contour, 160 terms on the asymptotic side.

    z: real or complex array (any shape); alpha in (0, 2]; beta real. Returns float64 for real z
    (E is real there), complex128 otherwise. Identities: E_1(z) = e^z, E_2(−z²) = cos z,
    E_{1/2}(−z) = erfcx(z), E_{1,2}(z) = (e^z − 1)/z.
    """
    real = not np.iscomplexobj(z)
    z = as_array("z", z, dtype=np.complex128)
    alpha = check_alpha(alpha, hi=2.0, hi_open=False)
    beta = float(as_array("beta", beta, ndim=0))
    flat = z.reshape(-1)
    E = np.empty_like(flat)
    big = np.abs(flat) ** (1.0 / alpha) >= _ML_ASYMPTOTIC
    for sel, method in ((big, _ml_asymptotic), (~big, _ml_contour)):
        idx = np.flatnonzero(sel)
        for start in range(0, idx.size, _ML_CHUNK):
            part = idx[start:start + _ML_CHUNK]
            E[part] = method(flat[part], alpha, beta)
    E = E.reshape(z.shape)
    return E.real if real else E


def ml_impulse_response(lam, alpha, t):
    """G(t) = t^(α−1) E_{α,α}(λ t^α): the impulse response of D^α x = λ x + u (zero history), per mode.

    It solves x = k_α * (λ x + δ) with k_α(t) = t^(α−1)/Γ(α) (Podlubny 1999, eq. 1.80). Singular at t = 0
    for α < 1. lam (...) and t broadcast, t > 0. Cost: one mittag_leffler per point.
    """
    lam = as_array("lam", lam, dtype=np.complex128)
    alpha = check_alpha(alpha)
    t = in_range("t", t, 0.0, lo_open=True)
    return t ** (alpha - 1.0) * mittag_leffler(lam * t ** alpha, alpha, alpha)


def ml_step_response(lam, alpha, t):
    """S(t) = ∫_0^t G = t^α E_{α,α+1}(λ t^α): the response of D^α x = λ x + u to u = 1 for t >= 0.

    For α = 1 it is (e^{λt} − 1)/λ. lam (...) and t broadcast, t >= 0. Cost: one mittag_leffler per point.
    """
    lam = as_array("lam", lam, dtype=np.complex128)
    alpha = check_alpha(alpha)
    t = in_range("t", t, 0.0)
    return t ** alpha * mittag_leffler(lam * t ** alpha, alpha, alpha + 1.0)


# ----------------------------------------------------------------------------------------------------
# the GL-discretised fractional SSM


def _mode_args(lam, dt, L):
    lam = as_array("lam", lam, dtype=np.complex128)
    return lam, in_range("dt", dt, 0.0, lo_open=True), positive_int("L", L)


def gl_recursion(w, c, r, shift=0):
    """Solve the lower-triangular Toeplitz system of the GL scheme, one step at a time:

        Σ_{j=0}^{min(n, K−1)} w_j x_{n−j} − c x_{n−shift} = r_n,      n = 0..L−1, x_{−1} = 0

    i.e. x = r / (W(z) − c z^shift) as power series, W(z) = Σ w_j z^j. shift 0 is the implicit GL scheme,
    shift 1 the explicit one. w (K,) real with w_0 != 0; c (...) complex; r (..., L) complex, broadcast
    against c[..., None]. Returns x (..., L) complex. Cost O(K L) per mode: the oracle.
    Fast path: refssm.kernels.fractional.gl_recursion (Numba).
    """
    w = as_array("w", w, ndim=1)
    c = as_array("c", c, dtype=np.complex128)
    r = as_array("r", r, dtype=np.complex128, min_ndim=1)
    choice("shift", shift, (0, 1))
    x = np.zeros(np.broadcast_shapes(c.shape + (1,), r.shape), dtype=np.complex128)
    r = np.broadcast_to(r, x.shape)
    L, K = x.shape[-1], min(w.size, x.shape[-1])
    diag = w[0] - c * (shift == 0)                                 # coefficient of x_n
    for n in range(L):
        j = min(n, K - 1)                                          # past terms kept
        acc = r[..., n] - x[..., n - j:n] @ w[j:0:-1]              # r_n − Σ_{j≥1} w_j x_{n−j}
        if shift == 1 and n > 0:
            acc = acc + c * x[..., n - 1]
        x[..., n] = acc / diag
    return x


def gl_scheme(lam, alpha, dt, L, memory=None):
    """The checked terms of the GL scheme: (w, c, scale, L) with w = gl_weights(alpha, L) cut after w_K
    (memory = K), c = dt^α λ, scale = dt^α; lam (...) complex, dt broadcast with lam. Shared by
    gl_kernel_recursion, gl_kernel and the Numba recursion of refssm.kernels.fractional."""
    lam, dt, L = _mode_args(lam, dt, L)
    alpha = check_alpha(alpha)
    w = gl_weights(alpha, L)[:check_memory(memory, L) + 1]          # short memory: keep w_0..w_K
    scale = dt ** alpha
    return w, scale * lam, scale, L


def gl_kernel_recursion(lam, alpha, dt, L, explicit=False, memory=None):
    """Impulse-response kernel of the GL-discretised fractional SSM, by the O(L²) recursion (oracle).

    Implicit (default):   Σ_{j=0}^{n} w_j x_{n−j} = dt^α (λ x_n + u_n)
    explicit:             Σ_{j=0}^{n} w_j x_{n−j} = dt^α (λ x_{n−1} + u_n)
    driven by u_0 = 1, u_n = 0 (n > 0); k[n] = x_n. Its generating function is
    dt^α / ((1 − z)^α − dt^α λ z^s) with s = 0 (implicit) or 1 (explicit), and
    k[n] ≈ dt · t^(α−1) E_{α,α}(λ t^α) at t = n dt, to first order in dt. At α = 1 the implicit scheme is
    backward Euler, x_n = (x_{n−1} + dt u_n)/(1 − dt λ), and the explicit one forward Euler.
    memory = K keeps only w_0..w_K (the short-memory principle, Podlubny 1999 §7.3).
    lam (...) complex, dt broadcast with lam, alpha in (0, 2). Returns (..., L) complex. Cost O(K L) per mode.
    """
    w, c, scale, L = gl_scheme(lam, alpha, dt, L, memory)
    delta = np.zeros(L)
    delta[0] = 1.0
    return gl_recursion(w, c, delta, shift=int(explicit)) * scale[..., None]


def _series_reciprocal(w, c, shift, L):
    """First L coefficients of 1/(W(z) − c z^shift), W real (L,) shared, c (...) complex, by Newton's
    iteration g ← g − g (P g − 1) mod z^{2m}, which doubles the number of correct coefficients each step.
    Both products are cyclic convolutions of length 2m: the wrap-around of P g lands in coefficients
    0..m−1, which are known (1, 0, ..., 0) and zeroed, and that of g · z^m e lands below m, unused."""
    w = np.pad(w, (0, L - w.size))                                 # W = w_0 + ... + w_K z^K, (L,)
    g = np.zeros(c.shape + (L,), dtype=np.complex128)
    g[..., 0] = 1.0 / (w[0] - c * (shift == 0))                    # 1/P(0)
    m = 1
    while m < L:
        n = min(2 * m, L)
        cz_hat = c[..., None] * np.exp(-2j * np.pi * np.arange(n) / n) if shift else c[..., None]
        g_hat = fft.fft(g[..., :n])                                # g_m, zero above m
        r = fft.ifft((fft.fft(w[:n]) - cz_hat) * g_hat, overwrite_x=True)
        r[..., :m] = 0.0                                           # r = z^m e, e_j = (P g − 1)_{m+j}
        r = fft.fft(r, overwrite_x=True)
        r *= g_hat
        g[..., m:n] = -fft.ifft(r, overwrite_x=True)[..., m:n]    # g_m e mod z^{n−m}, shifted by z^m
        m = n
    return g


def gl_kernel(lam, alpha, dt, L, explicit=False, memory=None):
    """The GL kernel of gl_kernel_recursion, computed in O(L log L) as a power series:

        k(z) = dt^α / ((1 − z)^α − dt^α λ z^s)        (s = 0 implicit, s = 1 explicit)

    by Newton's iteration for the reciprocal of a power series with FFT products (Brent & Kung 1978).
    For 0 < α <= 1 and Re λ < 0 it equals the recursion to ~1e-12 relative to max |k|. For 1 < α < 2 the
    series grows like n^(α−1) and the FFT products lose accuracy on lightly damped modes (measured at
    L = 4096: up to 6e-10 at α = 1.3, 2e-6 at α = 1.5, 2e-4 at α = 1.6), so fssm_kernel uses the
    recursion there. With memory = K, (1 − z)^α is cut after z^K.
    lam (...) complex, dt broadcast with lam, alpha in (0, 2). Returns (..., L) complex.
    Cost O(L log L) per mode (about eight FFTs of length L).
    """
    w, c, scale, L = gl_scheme(lam, alpha, dt, L, memory)
    return _series_reciprocal(w, c, int(explicit), L) * scale[..., None]


def _causal_square(k):
    """(k * k)_n = Σ_{j=0}^{n} k_j k_{n−j}, first L terms, by zero-padded FFT."""
    L = k.shape[-1]
    n = fft.next_fast_len(2 * L - 1)
    return fft.ifft(fft.fft(k, n) ** 2, n)[..., :L]


def gl_context(k, lam, alpha, dt, explicit=False):
    """The ctx of gl_kernel_vjp for a GL kernel k (..., L) of (lam, alpha, dt), however it was computed
    (gl_kernel, gl_kernel_recursion or a fast path): the VJP needs the kernel, not how it was found."""
    return dict(k=k, lam=np.asarray(lam, dtype=np.complex128), alpha=float(alpha),
                dt=np.asarray(dt, dtype=np.float64), explicit=bool(explicit))


def gl_kernel_fwd(lam, alpha, dt, L, explicit=False, memory=None):
    """gl_kernel and the ctx of gl_kernel_vjp: -> (k (..., L) complex, ctx)."""
    k = gl_kernel(lam, alpha, dt, L, explicit, memory)
    return k, gl_context(k, lam, alpha, dt, explicit)


def gl_kernel_vjp(ctx, gk):
    """VJP of the GL kernel (gl_kernel_fwd; fssm_kernel_fwd "gl", "gl_explicit") with respect to lam and dt.

    With P(z) = W(z) − c z^s, c = dt^α λ and k = dt^α / P:
        ∂k/∂λ  = dt^α · dt^α z^s / P² = z^s (k * k)
        ∂k/∂dt = (α/dt) (k + λ z^s (k * k))
    (k * k: causal self-convolution of the forward's k, from the ctx). k is holomorphic in λ, so with
    gk = dL/dRe k + i dL/dIm k:
        g_lam = Σ_n conj(∂k_n/∂λ) gk_n,     g_dt = Σ_n Re(conj(gk_n) ∂k_n/∂dt)  (summed to dt's shape).
    gk (..., L) complex. Returns (g_lam, g_dt). Cost O(L log L) per mode.
    """
    k, lam, dt = ctx["k"], ctx["lam"], ctx["dt"]
    gk = as_array("gk", gk, dtype=np.complex128)
    dk_dlam = _causal_square(k)                                    # (..., L)
    if ctx["explicit"]:
        dk_dlam = np.concatenate([np.zeros_like(dk_dlam[..., :1]), dk_dlam[..., :-1]], axis=-1)
    dk_ddt = (ctx["alpha"] / dt)[..., None] * (k + lam[..., None] * dk_dlam)
    g_lam = sum_to_shape((np.conj(dk_dlam) * gk).sum(axis=-1), lam.shape)
    g_dt = sum_to_shape((np.conj(gk) * dk_ddt).real.sum(axis=-1), dt.shape)
    return g_lam, g_dt


def gl_solve(lam, alpha, dt, u, x0=0.0):
    """Solve the Caputo problem D^α x = λ x + u(t), x(0) = x0 (0 < α <= 1) by the implicit GL scheme:

        Σ_{j=0}^{n} w_j (x_{n−j} − x0) = dt^α (λ x_n + u_n),       n >= 1,  x_0 = x0

    (GL applied to x − x0: the Caputo derivative is the RL derivative of x − x0, see caputo_rl_correction).
    First order in dt at fixed t > 0. Relaxation: u = 0 gives x0 E_α(λ t^α). u_0 is not used.
    lam (...) complex, dt and x0 broadcast with lam, u (..., L) real or complex. Returns x (..., L) complex.
    Cost O(L²) per mode (gl_recursion).
    """
    u = as_array("u", u, dtype=np.complex128, min_ndim=1)
    lam, dt, L = _mode_args(lam, dt, u.shape[-1])
    alpha = check_alpha(alpha, hi=1.0, hi_open=False)
    x0 = as_array("x0", x0, dtype=np.complex128)
    c = dt ** alpha * lam                                          # (...)
    x = np.broadcast_to(x0[..., None], np.broadcast_shapes(c.shape + (1,), x0.shape + (1,), u.shape))
    x = x.astype(np.complex128)
    # y_m = x_{m+1} − x0 solves the same scheme from y_{−1} = 0 with r_m = dt^α (λ x0 + u_{m+1})
    r = (dt ** alpha)[..., None] * ((lam * x0)[..., None] + u[..., 1:])
    x[..., 1:] += gl_recursion(gl_weights(alpha, L), c, r)
    return x


# ----------------------------------------------------------------------------------------------------
# the exact fractional SSM, sampled with a zero-order hold


def exact_kernel(lam, alpha, dt, L):
    """ZOH sampling of the exact fractional SSM: the input is held on each step, so

        k[n] = ∫_{t_n}^{t_{n+1}} G(t) dt = S(t_{n+1}) − S(t_n),     S(t) = t^α E_{α,α+1}(λ t^α)

    finite at n = 0 although G is singular there. At α = 1 it is the S4D ZOH kernel
    e^{λ n dt} (e^{λ dt} − 1)/λ. Absolute error about 1e-13 max |S| (mittag_leffler's, then the
    difference). lam (...) complex,
    dt broadcast with lam, alpha in (0, 2). Returns (..., L) complex. Cost O(L) Mittag-Leffler evaluations.
    """
    lam, dt, L = _mode_args(lam, dt, L)
    t = dt[..., None] * np.arange(L + 1)                           # (..., L+1)
    S = ml_step_response(lam[..., None], alpha, t)
    return np.diff(S, axis=-1)


# ----------------------------------------------------------------------------------------------------
# sum-of-exponentials (SOE) realisations


# SOE nodes faster than this (per step) settle within 1e-6 of a step; they are lumped into a direct term
SOE_OMEGA_MAX = 1e6


def soe_quadrature(alpha, M, L):
    """M-term sum of exponentials, in units of the step, k_α(τ) = τ^(α−1)/Γ(α) ≈ d0 δ(τ) + Σ_m η_m e^{−ω_m τ}.

    From k_α(τ) = (sin πα/π) ∫_R exp(−τ e^x + (1−α) x) dx (ω = e^x), the trapezoidal rule with step
    h = π²/A on the nodes x_m gives ω_m = e^{x_m}, η_m = (sin πα/π) h e^{(1−α) x_m} (the classical
    exponentially convergent SOE, e.g. Jiang et al. 2017). The nodes run down from ω = SOE_OMEGA_MAX = 1e6
    (per step) to x_min = −log L − A/(1−α), which leaves a tail of relative size e^{−A} at τ = L; A solves
    (M − 1) π²/A = log(1e6 L) + A/(1−α). The nodes beyond 1e6 decay within a millionth of a step, so they
    are kept as the mass they carry, d0 = Σ_{j≥1} η_j/ω_j = (sin πα/π) h e^{−α x_max}/(e^{αh} − 1)
    (a geometric series), i.e. a direct term d0 δ(τ). The error decreases like exp(−c √((1−α) M)).
    For a step dt: ω = ω̃/dt, η = η̃ dt^(α−1), d0 → d0 dt^α. alpha in (0, 1); M >= 2.
    Returns (omega (M,), eta (M,), d0). Cost O(M).
    """
    alpha = check_alpha(alpha, hi=1.0)
    M, L = positive_int("M", M, minimum=2), positive_int("L", L)
    x_max = np.log(SOE_OMEGA_MAX)
    A = optimize.brentq(lambda A: (M - 1) * np.pi ** 2 / A - x_max - np.log(L) - A / (1 - alpha), 1e-6, 1e6)
    h = np.pi ** 2 / A
    x = x_max - h * np.arange(M)[::-1]                             # (M,), ascending to x_max
    c = np.sin(np.pi * alpha) / np.pi * h
    return np.exp(x), c * np.exp((1.0 - alpha) * x), c * np.exp(-alpha * x_max) / np.expm1(alpha * h)


def _soe_args(lam, dt, L, omega, eta):
    lam = as_array("lam", lam, dtype=np.complex128)
    dt = in_range("dt", dt, 0.0, lo_open=True)
    omega = in_range("omega", omega, 0.0)
    eta = as_array("eta", eta, min_ndim=1)
    if omega.shape[-1:] != eta.shape[-1:]:
        raise ValueError(f"omega and eta must have the same last axis M, got {omega.shape} and {eta.shape}")
    return lam, dt, positive_int("L", L), omega, eta


def soe_coupled_kernel(lam, dt, L, omega, eta, d0=0.0):
    """ZOH kernel of the coupled ("diffusive") SOE realisation of the Caputo system.

    With k_α ≈ d0 δ + Σ_m η_m e^{−ω_m t}, x = k_α * (λ x + u) is realised exactly by M coupled states
        ż_m = −ω_m z_m + η_m (λ x + u),     x = Σ_m z_m + d0 (λ x + u)
    i.e. A = −diag(ω) + λ̃ η 1ᵀ, B = η/(1 − λ d0), C = 1ᵀ/(1 − λ d0), D = d0/(1 − λ d0), λ̃ = λ/(1 − λ d0)
    (reference notes longspike §2.6, there with d0 = 0). Its transfer function is 1/(1/K̂(s) − λ), K̂ the
    SOE's Laplace transform, which tends to 1/(s^α − λ) as the SOE converges.
    Computed in the scaled state z_m/√η_m, where A' = −diag(ω) + λ̃ v vᵀ with v = √η: for Re λ <= 0 its
    numerical range lies in the left half-plane, so e^{A't} is a contraction and its matrix exponential
    stays accurate while ω spans many decades. ZOH: k[n] = C' e^{A' dt n} ∫_0^{dt} e^{A's} ds B' + D [n = 0].
    lam (...) complex; dt, d0 >= 0, omega (..., M), eta (..., M) > 0 broadcast with lam.
    Returns (..., L) complex. Cost O(M³ + L M²) per mode.
    """
    lam, dt, L, omega, eta = _soe_args(lam, dt, L, omega, eta)
    v = np.sqrt(in_range("eta", eta, 0.0, lo_open=True))[..., :, None]          # (..., M, 1)
    d0 = in_range("d0", d0, 0.0)
    M = v.shape[-2]
    gain = 1.0 / (1.0 - lam * d0)                                               # (...)
    dt = np.asarray(dt)[..., None, None]
    A = dt * (-omega[..., :, None] * np.eye(M) + (lam * gain)[..., None, None] * (v * np.swapaxes(v, -1, -2)))
    # [[A, b], [0, 0]] exponentiates to [[e^A, ∫_0^1 e^{As} ds b], [0, 1]] (Van Loan 1978); b is scaled
    # down so that the augmented matrix stays dissipative like A (the block is linear in b)
    aug = np.zeros(A.shape[:-2] + (M + 1, M + 1), dtype=np.complex128)
    aug[..., :M, :M] = A
    aug[..., :M, M:] = v * 2.0 ** -40
    E = linalg.expm(aug)
    Phi, z = E[..., :M, :M], E[..., :M, M:] * (dt * 2.0 ** 40)                  # z: (..., M, 1)
    k = np.empty(np.broadcast_shapes(Phi.shape[:-2], v.shape[:-2], gain.shape) + (L,), dtype=np.complex128)
    for n in range(L):
        k[..., n] = (v * z)[..., 0].sum(axis=-1)                                # vᵀ z_n
        z = Phi @ z
    k *= gain[..., None] ** 2
    k[..., 0] += d0 * gain
    return k


def _decoupled_terms(lam, dt, omega, eta):
    """a_m = η_m λ − ω_m and the ZOH input gain b_m = (e^{a_m dt} − 1)/a_m, = dt where |a_m| < 1e-6."""
    a = eta * lam[..., None] - omega                                 # (..., M)
    dt = np.asarray(dt)[..., None]
    small = np.abs(a) < 1e-6
    b = np.where(small, dt, np.expm1(a * dt) / np.where(small, 1.0, a))
    return a, dt, small, b


def soe_decoupled_prepare(lam, dt, L, omega, eta):
    """The checked inputs of soe_decoupled_kernel_fwd and its terms a, b (_decoupled_terms): its ctx without
    the Vandermonde matrix, shared with the Numba fast path. dict(lam, dt_shape, omega, eta, a,
    dt (..., 1), small, b, L)."""
    lam, dt_in, L, omega, eta = _soe_args(lam, dt, L, omega, eta)
    a, dt, small, b = _decoupled_terms(lam, dt_in, omega, eta)
    return dict(lam=lam, dt_shape=np.shape(dt_in), omega=omega, eta=eta, a=a, dt=dt, small=small, b=b, L=L)


def soe_decoupled_kernel_fwd(lam, dt, L, omega, eta):
    """LongSpike's kernel (public code, reference notes longspike §2.2), per mode, B = C = 1:

        k[ℓ] = Σ_m η_m b_m e^{a_m dt ℓ},   a_m = η_m λ − ω_m,   b_m = (e^{a_m dt} − 1)/a_m  (= dt if |a_m| < 1e-6)

    the ZOH kernel of M decoupled, time-rescaled, extra-damped copies ż_m = a_m z_m + u, y = Σ η_m z_m
    (A_frac = −ω_m + η_m A, C_frac = η_m C). It drops the cross-branch coupling of soe_coupled_kernel,
    so it equals the Caputo system only as λ → 0; with SOE weights of k_α it does not converge to it.
    lam (...) complex; dt, omega (..., M), eta (..., M) broadcast with lam (LongSpike: (M,) per layer).
    Returns (k (..., L) complex, ctx for soe_decoupled_kernel_vjp). Cost O(M L) per mode.
    """
    ctx = soe_decoupled_prepare(lam, dt, L, omega, eta)
    a, dt, b = ctx["a"], ctx["dt"], ctx["b"]
    ctx["V"] = V = np.exp((a * dt)[..., None] * np.arange(ctx["L"]))  # (..., M, L) Vandermonde
    return np.einsum("...m,...ml->...l", ctx["eta"] * b, V), ctx


def soe_decoupled_kernel(lam, dt, L, omega, eta):
    """k of soe_decoupled_kernel_fwd, without its ctx."""
    return soe_decoupled_kernel_fwd(lam, dt, L, omega, eta)[0]


def soe_decoupled_kernel_vjp(ctx, gk):
    """VJP of soe_decoupled_kernel_fwd with respect to lam, dt, omega and eta (its learned parameters,
    besides the SSM's own; LongSpike learns ω, η through longspike_omega_eta): the two power sums of
    conj(gk) over the forward's Vandermonde matrix, then soe_decoupled_grads.
    gk (..., L) complex. Returns (g_lam, g_dt, g_omega, g_eta). Cost O(M L) per mode.
    """
    gk = as_array("gk", gk, dtype=np.complex128)
    V = ctx["V"]
    gV = np.einsum("...l,...ml->...m", np.conj(gk), V)               # Σ_ℓ conj(gk) V
    glV = np.einsum("...l,...ml->...m", np.conj(gk) * np.arange(V.shape[-1]), V)   # Σ_ℓ conj(gk) ℓ V
    return soe_decoupled_grads(ctx, gV, glV)


def soe_decoupled_grads(ctx, gV, glV):
    """The chain rule of soe_decoupled_kernel_vjp, given gV = Σ_ℓ conj(gk_ℓ) V_ℓ and glV = Σ_ℓ conj(gk_ℓ) ℓ V_ℓ
    (..., M), V_ℓ = e^{a dt ℓ} (the Numba fast path computes them without V, and shares this).

    ∂k/∂a_m = η_m (∂b/∂a + b dt ℓ) V_ℓ, ∂k/∂dt = Σ_m η_m (∂b/∂dt + b a ℓ) V_ℓ,
    ∂k/∂η_m|_a = b_m V_ℓ, a = η λ − ω, where ∂b/∂a = (dt e^{a dt} − b)/a and ∂b/∂dt = e^{a dt}, or 0 and 1
    where |a| < 1e-6 (b = dt there, as in the code). With G_a = Σ_ℓ conj(∂k/∂a) gk_ℓ (holomorphic chain rule):
        g_lam = Σ_m η_m G_a,m,   g_omega = −Re G_a,   g_eta = Re(conj(G_a) λ) + Re Σ_ℓ conj(gk_ℓ) b V_ℓ
    each summed to its input's shape. Returns (g_lam, g_dt, g_omega, g_eta).
    """
    lam, eta, a, dt, small, b = (ctx[k] for k in ("lam", "eta", "a", "dt", "small", "b"))
    db_da = np.where(small, 0.0, (dt * np.exp(a * dt) - b) / np.where(small, 1.0, a))
    db_ddt = np.where(small, 1.0, np.exp(a * dt))
    G_a = np.conj(eta * (db_da * gV + b * dt * glV))                 # Σ_ℓ conj(∂k/∂a) gk
    g_lam = sum_to_shape((eta * G_a).sum(axis=-1), lam.shape)
    g_dt = sum_to_shape((eta * (db_ddt * gV + b * a * glV)).real.sum(axis=-1), ctx["dt_shape"])
    g_omega = sum_to_shape(-G_a.real, ctx["omega"].shape)
    g_eta = sum_to_shape((np.conj(G_a) * lam[..., None]).real + (b * gV).real, eta.shape)
    return g_lam, g_dt, g_omega, g_eta


# LongSpike's bounded-sigmoid parameterisation (reference notes longspike §2.3)
OMEGA_BOUNDS = (1e-6, 100.0)
ETA_BOUNDS = (1e-6, 10.0)


def longspike_omega_eta_fwd(omega_logit, eta_logit):
    """ω = ω_min + (ω_max − ω_min) σ(ω_logit), η = η_min + (η_max − η_min) σ(η_logit), with
    (ω_min, ω_max) = (1e-6, 100) and (η_min, η_max) = (1e-6, 10). Logits (M,), float64.
    Returns ((omega, eta), ctx for longspike_omega_eta_vjp: the two sigmoids)."""
    (olo, ohi), (elo, ehi) = OMEGA_BOUNDS, ETA_BOUNDS
    so = special.expit(np.asarray(as_array("omega_logit", omega_logit), dtype=np.float64))
    se = special.expit(np.asarray(as_array("eta_logit", eta_logit), dtype=np.float64))
    return (olo + (ohi - olo) * so, elo + (ehi - elo) * se), (so, se)


def longspike_omega_eta(omega_logit, eta_logit):
    """(omega, eta) of longspike_omega_eta_fwd, without its ctx."""
    return longspike_omega_eta_fwd(omega_logit, eta_logit)[0]


def longspike_omega_eta_vjp(ctx, g):
    """VJP of longspike_omega_eta_fwd: g = (g_omega, g_eta) -> (g_omega_logit, g_eta_logit), with
    dω/dℓ = (ω_max − ω_min) σ(ℓ)(1 − σ(ℓ)), likewise for η."""
    (olo, ohi), (elo, ehi) = OMEGA_BOUNDS, ETA_BOUNDS
    (so, se), (g_omega, g_eta) = ctx, g
    return g_omega * (ohi - olo) * so * (1.0 - so), g_eta * (ehi - elo) * se * (1.0 - se)


def longspike_logits(omega, eta):
    """Initial logits as LongSpike sets them: logit(clamp((v − min)/(max − min), 1e-6, 1 − 1e-6)).
    The main-branch defaults ω = [0, 0.1], η = [1, 0.1] give effective ω ≈ [1.01e-4, 0.1]."""
    def logit(name, v, lo, hi):
        return special.logit(np.clip((as_array(name, v) - lo) / (hi - lo), 1e-6, 1 - 1e-6))
    return logit("omega", omega, *OMEGA_BOUNDS), logit("eta", eta, *ETA_BOUNDS)


def longspike_kernel(A, C, dt, omega, eta, L):
    """The layer kernel of LongSpike's public code (default LoongSpikeKernel, B = 1):

        K[c, h, ℓ] = 2 Re Σ_{m,n} η_m C[c,h,n] b[h,m,n] e^{dt_h A_frac[h,m,n] ℓ},  A_frac = −ω_m + η_m A[h,n]

    with b the ZOH gain of soe_decoupled_kernel. A (H, N/2) complex, C (c, H, N/2) complex (C·B for the
    trainable-B variant), dt (H,), omega, eta (M,) shared by the layer. Returns K (c, H, L) real.
    The trainable-B code also clamps Re(dt A_frac ℓ) at −50, a change below e^−50 that is not reproduced.
    Cost O(c H M N L).
    """
    C = as_array("C", C, dtype=np.complex128, ndim=3)
    dt = as_array("dt", dt, ndim=1)
    k = soe_decoupled_kernel(A, dt[:, None], L, omega, eta)          # (H, N/2, L)
    return 2.0 * np.einsum("chn,hnl->chl", C, k).real


# ----------------------------------------------------------------------------------------------------
# one entry point


FSSM_METHODS = ("gl", "gl_explicit", "exact", "soe_coupled", "soe_decoupled")


def fssm_check_options(method, memory=None, M=None, omega=None, eta=None):
    """The checks of fssm_kernel's method and its options (shared with the Numba fast path)."""
    choice("method", method, FSSM_METHODS)
    soe = method.startswith("soe")
    if memory is not None and not method.startswith("gl"):
        raise ValueError(f"memory applies to the methods 'gl' and 'gl_explicit', not {method!r}")
    if not soe and (M, omega, eta) != (None, None, None):
        raise ValueError(f"M, omega and eta apply to the SOE methods, not {method!r}")
    if soe and ((omega is None) != (eta is None) or (omega is None) == (M is None)):
        raise ValueError("the SOE methods need either M (quadrature weights) or both omega and eta")
    return method


def fssm_kernel_fwd(lam, alpha, dt, L, method="gl", *, memory=None, M=None, omega=None, eta=None):
    """Kernel k (..., L) of the fractional diagonal SSM D^α x = λ x + u (one complex mode, B = C = 1),
    for lam (...) complex and dt broadcast with lam (e.g. (H, N/2) and (H, 1)), and the ctx of
    fssm_kernel_vjp. The SSM output is y = 2 Re Σ_n C_n B_n (k_n * u).

    method
      "gl"            implicit GL scheme (gl_kernel, O(L log L); gl_kernel_recursion, O(L²), for α > 1);
                      first order, k[n] ≈ dt G(n dt)
      "gl_explicit"   explicit GL scheme (gl_kernel, explicit=True)
      "exact"         the exact system sampled with a zero-order hold (exact_kernel, via Mittag-Leffler)
      "soe_coupled"   coupled SOE realisation (soe_coupled_kernel); converges to "exact" as M grows
      "soe_decoupled" LongSpike's decoupled SOE form (soe_decoupled_kernel); does not converge
    memory: short-memory window K for the GL methods. M: number of SOE terms, with the nodes, weights and
    direct term of soe_quadrature(alpha, M, L) scaled to each dt; or give omega, eta (..., M) in absolute
    time units instead (e.g. LongSpike's learned values, for which alpha is unused).
    alpha in (0, 2) for the GL methods and "exact", in (0, 1) for the SOE ones.
    A VJP exists for "gl", "gl_explicit" and "soe_decoupled" with omega and eta (see fssm_kernel_vjp).
    """
    fssm_check_options(method, memory, M, omega, eta)
    if method in ("gl", "gl_explicit"):
        # Newton's inversion is accurate where the kernel decays (α <= 1); above, the O(L²) recursion
        kernel = gl_kernel if check_alpha(alpha) <= 1.0 else gl_kernel_recursion
        explicit = method == "gl_explicit"
        k = kernel(lam, alpha, dt, L, explicit=explicit, memory=memory)
        return k, dict(method=method, gl=gl_context(k, lam, alpha, dt, explicit))
    if method == "exact":
        return exact_kernel(lam, alpha, dt, L), dict(method=method)
    if omega is not None and method == "soe_decoupled":
        k, ctx = soe_decoupled_kernel_fwd(lam, dt, L, omega, eta)
        return k, dict(method=method, soe=ctx)
    d0 = 0.0
    if omega is None:
        alpha = check_alpha(alpha, hi=1.0)
        unit_omega, unit_eta, unit_d0 = soe_quadrature(alpha, M, L)
        dt = in_range("dt", dt, 0.0, lo_open=True)
        omega, eta = unit_omega / dt[..., None], unit_eta * dt[..., None] ** (alpha - 1.0)
        d0 = unit_d0 * dt ** alpha
    if method == "soe_coupled":
        return soe_coupled_kernel(lam, dt, L, omega, eta, d0), dict(method=method)
    k = soe_decoupled_kernel(lam, dt, L, omega, eta)
    k[..., 0] += d0       # the lumped fastest nodes: a decoupled branch with ω -> ∞ passes (η/ω) u through
    return k, dict(method=method)


def fssm_kernel(lam, alpha, dt, L, method="gl", *, memory=None, M=None, omega=None, eta=None):
    """k (..., L) complex of fssm_kernel_fwd (see there for the methods and options), without its ctx."""
    return fssm_kernel_fwd(lam, alpha, dt, L, method, memory=memory, M=M, omega=omega, eta=eta)[0]


def fssm_gap(lam, alpha, dt, L, method, reference="exact", **kwargs):
    """Relative L2 distance ||k − k_ref|| / ||k_ref|| (per mode, over the L steps) between the kernels
    fssm_kernel(..., method, **kwargs) and fssm_kernel(..., reference). E.g. how far LongSpike's form is
    from the fractional SSM it names: fssm_gap(lam, 0.7, dt, L, "soe_decoupled", M=8)."""
    k = fssm_kernel(lam, alpha, dt, L, method, **kwargs)
    k_ref = fssm_kernel(lam, alpha, dt, L, reference)
    return np.linalg.norm(k - k_ref, axis=-1) / np.linalg.norm(k_ref, axis=-1)


def fssm_kernel_vjp(ctx, gk):
    """VJP of fssm_kernel_fwd for the methods with a hand-written backward, gk = dL/dRe k + i dL/dIm k:
      "gl", "gl_explicit"   -> (g_lam, g_dt)                      (gl_kernel_vjp)
      "soe_decoupled" with omega, eta given (LongSpike's learned form)
                            -> (g_lam, g_dt, g_omega, g_eta)      (soe_decoupled_kernel_vjp)
    Other methods (and "soe_decoupled" with quadrature weights M) raise ValueError.
    Cost O(L log L) and O(M L) per mode.
    """
    if "gl" in ctx:
        return gl_kernel_vjp(ctx["gl"], gk)
    if "soe" in ctx:
        return soe_decoupled_kernel_vjp(ctx["soe"], gk)
    raise ValueError(f"method {ctx['method']!r} has no VJP: the VJP exists for 'gl', 'gl_explicit' and "
                     f"'soe_decoupled' with omega and eta given")


def fssm_conv_kernel_prepare(A, B, C, dt, L):
    """The checked inputs of fssm_conv_kernel_fwd, cast to complex128 (dt to float64) whatever their dtype,
    and W = C B: the part of the ctx shared by the oracle and its fast path (refssm.kernels.fractional).
    Returns dict(A, B, C, W, dt (H, 1), dt_shape, L, K_shape)."""
    L = positive_int("L", L)
    A, B, C = (np.asarray(as_array(name, x, dtype=np.complex128), dtype=np.complex128)
               for name, x in (("A", A), ("B", B), ("C", C)))
    dt_shape = np.shape(dt)
    dt = np.asarray(as_array("dt", dt), dtype=np.float64).reshape(-1, 1)       # (H, 1)
    W = C * B
    K_shape = np.broadcast_shapes(W.shape, A.shape, dt.shape)[:-1] + (L,)
    return dict(A=A, B=B, C=C, W=W, dt=dt, dt_shape=dt_shape, L=L, K_shape=K_shape)


def soe_decoupled_exponentials(A, B, C, dt, L, omega, eta):
    """The decoupled SOE layer kernel as one sum of H·N/2·M exponentials, the form its fast paths sum without a
    Vandermonde matrix: K[h, l] = 2 Re Σ_{n,m} Wm[h,n,m] exp(adt[h,n,m] l), Wm = C_n B_n η_m b_nm, adt = a_nm dt.
    Returns (ctx of fssm_conv_kernel_prepare with soe = soe_decoupled_prepare(...) added, Wm, adt), Wm and adt
    (H, N/2, M) complex."""
    ctx = fssm_conv_kernel_prepare(A, B, C, dt, L)
    soe = soe_decoupled_prepare(ctx["A"], ctx["dt"], ctx["L"], omega, eta)
    Wm = ctx["W"][..., None] * soe["eta"] * soe["b"]                                # (H, N/2, M)
    Wm, adt = np.broadcast_arrays(Wm, soe["a"] * soe["dt"])                         # a dt = log Abar
    ctx["soe"] = soe
    return ctx, Wm, adt


def fssm_conv_kernel_from_modes(ctx, k, modes):
    """K = 2 Re Σ_n W_n k_n from the per-mode kernels k (H, N/2, L) and their fssm_kernel_fwd ctx `modes`;
    both are kept in ctx for fssm_conv_kernel_vjp. Returns (K, ctx)."""
    ctx.update(k=k, modes=modes)
    return 2.0 * np.einsum("...n,...nl->...l", ctx["W"], k).real, ctx


def fssm_conv_kernel_fwd(A, B, C, dt, L, alpha, method="gl", **kwargs):
    """The layer kernel K[h, l] = 2 Re Σ_n C[h,n] B[h,n] k[h,n,l] of a fractional diagonal SSM, with
    k = fssm_kernel(A, alpha, dt[:, None], L, method, **kwargs): the fractional counterpart of
    refssm.ssm.kernel_fwd. A, B (H or 1, N/2) complex, C (H, N/2) complex, dt (H,). Computed in complex128
    whatever the parameters' dtype. Returns (K (H, L) float64, ctx for fssm_conv_kernel_vjp), the ctx
    holding the per-mode kernels k (H, N/2, L) and their own ctx.
    Fast path: refssm.kernels.fractional.fssm_conv_kernel_fwd (registered as "fssm_kernel").
    """
    ctx = fssm_conv_kernel_prepare(A, B, C, dt, L)
    k, modes = fssm_kernel_fwd(ctx["A"], alpha, ctx["dt"], ctx["L"], method, **kwargs)   # (H, N/2, L)
    return fssm_conv_kernel_from_modes(ctx, k, modes)


def fssm_conv_kernel(A, B, C, dt, L, alpha, method="gl", **kwargs):
    """K (H, L) float64 of fssm_conv_kernel_fwd, without its ctx."""
    return fssm_conv_kernel_fwd(A, B, C, dt, L, alpha, method, **kwargs)[0]


def fssm_conv_kernel_cotangent(ctx, gK):
    """gK = dL/dK checked against the kernel's shape, as float64."""
    gK = np.asarray(as_array("gK", gK), dtype=np.float64)
    if gK.shape != ctx["K_shape"]:
        raise ValueError(f"gK must have the kernel's shape {ctx['K_shape']}, got {gK.shape}")
    return gK


def fssm_conv_kernel_vjp(ctx, gK):
    """VJP of fssm_conv_kernel_fwd for upstream gK (H, L) real: (gA, gB, gC, gdt), each of its input's shape,
    followed by (g_omega, g_eta) for "soe_decoupled". With W = C B, K = 2 Re Σ_n W_n k_n:
        gk = 2 gK conj(W),   gW = 2 Σ_l gK_l conj(k_l)
    then fssm_kernel_vjp (the modes) and fssm_conv_kernel_grads (the rest of the chain rule).
    Cost: that of fssm_kernel_vjp; the forward's k is reused.
    """
    gK = fssm_conv_kernel_cotangent(ctx, gK)
    gW = 2.0 * np.einsum("...l,...nl->...n", gK, np.conj(ctx["k"]))
    modes = fssm_kernel_vjp(ctx["modes"], 2.0 * gK[..., None, :] * np.conj(ctx["W"])[..., None])
    return fssm_conv_kernel_grads(ctx, gW, modes)


def fssm_conv_kernel_grads(ctx, gW, mode_grads):
    """The chain rule of fssm_conv_kernel_vjp after the modes (shared with the fast path): gW = dL/dW and
    mode_grads = (g_lam, g_dt, *g_soe) of the per-mode kernels -> (gA, gB, gC, gdt, *g_soe) with
    gC = gW conj(B), gB = gW conj(C), each summed to its input's shape."""
    g_lam, g_dt, *g_soe = mode_grads
    return (sum_to_shape(g_lam, ctx["A"].shape), sum_to_shape(gW * np.conj(ctx["C"]), ctx["B"].shape),
            sum_to_shape(gW * np.conj(ctx["B"]), ctx["C"].shape), g_dt.reshape(ctx["dt_shape"]), *g_soe)
