"""Benchmark of refssm.fractional, every figure measured in this one run:

1. the GL kernel of the fractional SSM: O(L log L) power-series inversion (gl_kernel) against the O(L²)
   recursion, numpy oracle (gl_kernel_recursion) and Numba (refssm.kernels.fractional.gl_recursion),
   at L = 1024, 4096, 16384 (and 65536): time ratios and agreement;
2. the short-memory (truncated window) GL kernel: its error against the full memory, by window length;
3. LongSpike's decoupled SOE kernel and the coupled SOE realisation against the exact fractional SSM,
   by number of terms M (relative L2 error of the kernels);
4. the layer kernel fssm_conv_kernel_fwd + _vjp (what LongSpike trains): numpy oracle against its Numba
   fast path (refssm.kernels.fractional), per method, times and agreement;
5. the FFT convolution of the SSM layer, forward + VJP (refssm.ssm.causal_conv_fwd / _vjp) in float32
   against the numpy float64 convolution refssm had before (np.fft, length 2L, the VJP re-transforming u
   and K), on the canonical shape B=16, H=128, L=1024; alternating runs, every ratio and the median.

Usage: python validation/bench_fractional.py [sections...]      e.g. `... 4 5`; all sections by default
"""

import os
import sys
import time

import numpy as np

from refssm import _checks, fractional as F, ssm
from refssm.kernels import fractional as KF


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def gl_kernel_speed(modes=8, alpha=0.6, dt=0.01):
    rng = np.random.default_rng(0)
    lam = -rng.uniform(0.05, 2.0, modes) + 1j * np.pi * np.arange(modes)       # S4D-Lin-like modes
    KF.gl_recursion(F.gl_weights(alpha, 8), lam, np.ones(8))                     # compile before timing
    print(f"1. GL kernel, alpha = {alpha}, dt = {dt}, {modes} modes, {os.cpu_count()} CPU cores (times: best of"
          f" repeats, one run;\n   max rel diff: max |k − k_ref| / max |k_ref| over modes, fast and Numba; k_ref the numpy oracle, Numba at 65536)")
    print(f"{'L':>6} {'fast s':>9} {'Numba L² s':>11} {'Numba/fast':>11} {'numpy L² s':>11} {'numpy oracle/fast':>21}"
          f" {'max rel diff':>13}")
    for L in (1024, 4096, 16384, 65536):
        t_fast, k_fast = best_time(lambda: F.gl_kernel(lam, alpha, dt, L), 5)
        delta = np.zeros(L)
        delta[0] = dt ** alpha
        t_numba, k_numba = best_time(lambda: KF.gl_recursion(F.gl_weights(alpha, L), dt ** alpha * lam, delta),
                                     1 if L > 4096 else 3)
        if L <= 16384:        # the numpy oracle; beyond, the Numba recursion is the O(L²) reference
            t_oracle, k_oracle = best_time(lambda: F.gl_kernel_recursion(lam, alpha, dt, L), 1 if L > 4096 else 2)
            oracle = f"{t_oracle:>11.3f} {t_oracle / t_fast:>20.0f}x"
        else:
            k_oracle, oracle = k_numba, f"{'-':>11} {'-':>21}"
        diff = max(np.abs(k - k_oracle).max(-1).max() / np.abs(k_oracle).max() for k in (k_fast, k_numba))
        print(f"{L:>6} {t_fast:>9.4f} {t_numba:>11.3f} {t_numba / t_fast:>10.0f}x {oracle} {diff:>13.1e}")


def short_memory_error(L=16384, alpha=0.6, dt=0.01):
    lam = np.array([-0.5 + 0j, -0.05 + 3j, -0.01 + 0j])
    full = F.gl_kernel(lam, alpha, dt, L)
    print(f"\n2. short-memory GL kernel, alpha = {alpha}, dt = {dt}, L = {L}; error against the full memory,"
          f"\n   relative to max |k| (max over time), per mode lambda = {', '.join(f'{v:g}' for v in lam)}")
    print(f"{'window K':>9}  {'relative max error per mode':>40}")
    for K in (16, 64, 256, 1024, 4096, L - 1):
        err = np.abs(F.gl_kernel(lam, alpha, dt, L, memory=K) - full).max(-1) / np.abs(full).max(-1)
        print(f"{K:>9}  " + "  ".join(f"{e:12.2e}" for e in err))


def soe_gap(alpha=0.7, dt=0.05, L=400):
    lam = np.array([-0.5 + 0j, -0.5 + 3j])
    print(f"\n3. SOE realisations against the exact (Mittag-Leffler, ZOH) fractional SSM, alpha = {alpha},"
          f" dt = {dt}, L = {L};\n   relative L2 error of the kernel (fssm_gap), modes lambda = -0.5, -0.5+3j")
    print(f"{'M':>4}  {'coupled':>22}  {'decoupled (LongSpike)':>24}")
    for M in (2, 4, 8, 16, 32, 64):
        coupled = F.fssm_gap(lam, alpha, dt, L, "soe_coupled", M=M)
        decoupled = F.fssm_gap(lam, alpha, dt, L, "soe_decoupled", M=M)
        print(f"{M:>4}  {coupled[0]:10.2e} {coupled[1]:10.2e}    {decoupled[0]:10.2e} {decoupled[1]:10.2e}")
    omega, eta = F.longspike_omega_eta(*F.longspike_logits([0.0, 0.1], [1.0, 0.1]))
    k_decoupled = F.fssm_kernel(lam, alpha, dt, L, "soe_decoupled", omega=omega, eta=eta)
    k_coupled = F.fssm_kernel(lam, alpha, dt, L, "soe_coupled", omega=omega, eta=eta)
    gap = np.linalg.norm(k_decoupled - k_coupled, axis=-1) / np.linalg.norm(k_coupled, axis=-1)
    print(f"LongSpike's initial omega = {omega.round(5)}, eta = {eta.round(5)} (main branch): its decoupled kernel"
          f" against the coupled\nrealisation of the same two terms: {gap[0]:.2e} {gap[1]:.2e}")


def conv_kernel_speed(H=64, N2=32, L=1024, repeats=3):
    rng = np.random.default_rng(0)
    lin = -0.5 + 1j * np.pi * np.arange(N2) * np.ones((H, 1))                 # S4D-Lin modes
    # for alpha > 1, D^alpha x = lam x is stable only for |arg lam| > alpha pi / 2 (126 degrees at 1.4): S4D-Lin
    # modes grow exponentially there, so modes with |Im/Re| = 1/2 (arg 153 degrees)
    damped = -(0.5 + np.arange(N2) / 8) * (1 + 0.5j) * np.ones((H, 1))
    B = np.ones((H, N2), complex)
    C = (rng.standard_normal((H, N2)) + 1j * rng.standard_normal((H, N2))) / np.sqrt(2)
    dt = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), H))
    gK = rng.standard_normal((H, L))
    omega, eta = F.longspike_omega_eta(*F.longspike_logits([0.0, 0.1], [1.0, 0.1]))
    cases = [("gl", 0.8, {}), ("gl", 1.4, {}), ("gl_explicit", 1.4, {}),
             ("soe_decoupled", 0.8, dict(omega=omega, eta=eta))]
    print(f"\n4. layer kernel fssm_conv_kernel_fwd + _vjp, H = {H}, N/2 = {N2}, L = {L}, dt in [1e-3, 1e-1] (S4D-Lin"
          f" modes for alpha <= 1,\n   lam_n = -(1/2 + n/8)(1 + i/2) for alpha > 1; LongSpike's initial omega, eta);"
          f" best of {repeats} (oracle at alpha > 1: one),\n   one run; max rel diff: max |fast − oracle| / max |oracle|"
          f" over K and every gradient. At alpha <= 1 both run the same code")
    print(f"{'method':>14} {'alpha':>6} {'oracle s':>9} {'Numba s':>9} {'oracle/Numba':>13} {'max rel diff':>13}")
    for method, alpha, kw in cases:
        A = lin if alpha <= 1 else damped

        def run(mod):
            K, ctx = mod.fssm_conv_kernel_fwd(A, B, C, dt, L, alpha, method, **kw)
            return (K, *mod.fssm_conv_kernel_vjp(ctx, gK))
        run(KF)                                                                 # compile before timing
        t_oracle, ref = best_time(lambda: run(F), 1 if alpha > 1 else repeats)
        t_fast, got = best_time(lambda: run(KF), repeats)
        diff = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(got, ref))
        print(f"{method:>14} {alpha:>6} {t_oracle:>9.3f} {t_fast:>9.3f} {t_oracle / t_fast:>12.1f}x {diff:>13.1e}")


def _old_conv_fwd(u, K):
    """The convolution as refssm had it before (numpy float64, np.fft of length 2L)."""
    L = u.shape[-1]
    n = 2 * L
    return np.fft.irfft(np.fft.rfft(u, n) * np.fft.rfft(K, n), n)[..., :L]


def _old_conv_vjp(gy, u, K):
    L = u.shape[-1]
    n = 2 * L
    G = np.fft.rfft(gy, n)
    gu = np.fft.irfft(ssm.sum_to_shape(G * np.conj(np.fft.rfft(K, n)), u.shape[:-1] + G.shape[-1:]), n)[..., :L]
    GK = ssm.sum_to_shape(G * np.conj(np.fft.rfft(u, n)), K.shape[:-1] + G.shape[-1:])
    return gu, np.fft.irfft(GK, n)[..., :L]


def conv_speed(B=16, H=128, L=1024, rounds=5, repeats=3):
    rng = np.random.default_rng(0)
    u, K, g = rng.standard_normal((B, H, L)), rng.standard_normal((H, L)) / L, rng.standard_normal((B, H, L))
    u32, K32, g32 = (x.astype(np.float32) for x in (u, K, g))

    def old():
        return _old_conv_fwd(u, K), _old_conv_vjp(g, u, K)

    def new(u, K, g):
        with _checks.trusted():                                                 # as the training loop calls it
            y, ctx = ssm.causal_conv_fwd(u, K)
            return y, ssm.causal_conv_vjp(ctx, g)

    y_old, (gu_old, gK_old) = old()
    y_new, (gu_new, gK_new) = new(u32, K32, g32)
    err = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in
              ((y_new, y_old), (gu_new, gu_old), (gK_new, gK_old)))
    print(f"\n5. FFT convolution forward + VJP, B = {B}, H = {H}, L = {L}, {os.cpu_count()} CPU cores; best of {repeats}"
          f" per run, runs alternating\n   old: numpy float64, np.fft length {2 * L}, VJP re-transforms u and K;"
          f" new: refssm.ssm.causal_conv_fwd/_vjp,\n   scipy.fft length {ssm.conv_length(L)}, spectra reused"
          f" (float32 max rel diff to old: {err:.1e})")
    print(f"{'round':>6} {'old f64 s':>10} {'new f32 s':>10} {'new f64 s':>10} {'old/new f32':>12} {'old/new f64':>12}")
    r32, r64 = [], []
    for i in range(rounds):
        t_old = best_time(old, repeats)[0]
        t32 = best_time(lambda: new(u32, K32, g32), repeats)[0]
        t64 = best_time(lambda: new(u, K, g), repeats)[0]
        r32.append(t_old / t32)
        r64.append(t_old / t64)
        print(f"{i + 1:>6} {t_old:>10.4f} {t32:>10.4f} {t64:>10.4f} {r32[-1]:>11.2f}x {r64[-1]:>11.2f}x")
    print(f"median ratio old f64 / new f32: {np.median(r32):.2f}x   (old f64 / new f64: {np.median(r64):.2f}x)")


SECTIONS = {"1": gl_kernel_speed, "2": short_memory_error, "3": soe_gap, "4": conv_kernel_speed, "5": conv_speed}


if __name__ == "__main__":
    for key in sys.argv[1:] or SECTIONS:
        SECTIONS[key]()
