"""Benchmark of refssm.fractional, every figure measured in this one run:

1. the GL kernel of the fractional SSM: O(L log L) power-series inversion (gl_kernel) against the O(L²)
   recursion, numpy oracle (gl_kernel_recursion) and Numba (refssm.kernels.fractional.gl_recursion),
   at L = 1024, 4096, 16384 (and 65536): time ratios and agreement;
2. the short-memory (truncated window) GL kernel: its error against the full memory, by window length;
3. LongSpike's decoupled SOE kernel and the coupled SOE realisation against the exact fractional SSM,
   by number of terms M (relative L2 error of the kernels).

Usage: python validation/bench_fractional.py
"""

import os
import time

import numpy as np

from refssm import fractional as F
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


if __name__ == "__main__":
    gl_kernel_speed()
    short_memory_error()
    soe_gap()
