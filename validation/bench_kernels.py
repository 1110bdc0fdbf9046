"""Numba fast paths (refssm.kernels) against their numpy oracles: speed ratios and kernel memory.

    python validation/bench_kernels.py

Everything is measured in one run (DESIGN.md, performance protocol): each fast path is called once
before timing so JIT compilation (or loading the on-disk cache) is excluded; times are the best of
a few calls (one call for oracles slower than a second). Every row also checks the result against
the oracle: "bit-exact" (spikes and potentials, PMBC iterations) or the largest deviation relative
to max|oracle|. Peak memory of `kernel` is tracemalloc's peak during one call (numpy allocations;
the Numba loop's own scratch is N/2 complex numbers per row in flight).
"""

import time
import tracemalloc

import numba
import numpy as np

from refssm import neurons, ssm
from refssm.kernels import neurons as fast_neurons, ssm as fast_ssm

B, H, N = 16, 128, 64


def best_time(f, calls):
    """(best wall time of `calls` calls, last result)."""
    best = np.inf
    for _ in range(calls):
        t0 = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t0)
    return best, out


def compare(name, oracle, fast, check):
    t_fast, out_fast = best_time(fast, 1)                                     # warm-up: JIT or cache
    t_fast, out_fast = best_time(fast, 5)
    t_oracle, out_oracle = best_time(oracle, 1)
    if t_oracle < 1.0:
        t_oracle, out_oracle = best_time(oracle, 3)
    print(f"{name:<42} {t_oracle:>10.4f} {t_fast:>10.4f} {t_oracle / t_fast:>9.1f}x   "
          f"{check(out_fast, out_oracle)}")


def bit_exact(a, b):
    a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
    same = all(np.array_equal(x, y) for x, y in zip(a, b))
    return "bit-exact" if same else "MISMATCH"


def relative(a, b):
    return f"max |diff| / max |oracle| = {np.abs(a - b).max() / np.abs(b).max():.1e}"


def kernel_peak_bytes(kernel, args):
    tracemalloc.start()
    kernel(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main():
    rng = np.random.default_rng(0)
    print(f"numba {numba.__version__}, {numba.get_num_threads()} threads, numpy {np.__version__}")
    print(f"{'':<42} {'numpy s':>10} {'numba s':>10} {'speedup':>10}   check")

    x = rng.normal(0.3, 1.0, (B, H, 1024))
    lif = (x, 0.125, 1.0, "hard")
    compare(f"lif {x.shape} tau=0.125 hard", lambda: neurons.lif(*lif), lambda: fast_neurons.lif(*lif),
            bit_exact)
    ref = (x, 0.125, 1.0, 0.5, 0.5)
    compare(f"refractory {x.shape} tau=0.125", lambda: neurons.refractory(*ref),
            lambda: fast_neurons.refractory(*ref), bit_exact)
    for tau in (0.125, 0.9):
        args = (x, tau, 1.0, 0.5, 0.5)
        iterations = fast_neurons.pmbc(*args)[2]
        compare(f"pmbc {x.shape} tau={tau} ({iterations} it.)", lambda: neurons.pmbc(*args),
                lambda: fast_neurons.pmbc(*args), bit_exact)

    p = ssm.init_diag(H, N, rng=rng)
    dt = np.exp(p["log_dt"])
    Abar, Bbar = ssm.discretize(p["A"], p["B"], dt)
    for L in (1024, 4096):
        u = rng.standard_normal((B, H, L))
        compare(f"scan {u.shape} N={N}", lambda: ssm.scan(u, Abar, Bbar, p["C"]),
                lambda: fast_ssm.scan(u, Abar, Bbar, p["C"]), relative)
    for L in (1024, 4096):
        args = (p["A"], p["B"], p["C"], dt, L)
        compare(f"kernel H={H} N={N} L={L}", lambda: ssm.kernel(*args), lambda: fast_ssm.kernel(*args),
                relative)

    print(f"\n{'kernel peak memory (tracemalloc)':<42} {'numpy MiB':>10} {'numba MiB':>10} {'ratio':>10}"
          f"   output K")
    for L in (1024, 4096):
        args = (p["A"], p["B"], p["C"], dt, L)
        oracle, fast = kernel_peak_bytes(ssm.kernel, args), kernel_peak_bytes(fast_ssm.kernel, args)
        print(f"{f'kernel H={H} N={N} L={L}':<42} {oracle / 2**20:>10.1f} {fast / 2**20:>10.2f} "
              f"{oracle / fast:>9.0f}x   {H * L * 8 / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
