"""Numba fast paths (refssm.kernels) against their numpy oracles: speed ratios and kernel memory,
and the LIF forward + backward against the memory bandwidth of a plain copy.

    python validation/bench_kernels.py            # everything
    python validation/bench_kernels.py lif ops    # only the LIF bandwidth / only LayerNorm and GLU

Everything is measured in one run (DESIGN.md, performance protocol): each fast path is called once
before timing so JIT compilation (or loading the on-disk cache) is excluded; times are the best of
a few calls (one call for oracles slower than a second). Every row also checks the result against
the oracle: "bit-exact" (spikes and potentials, PMBC iterations) or the largest deviation relative
to max|oracle|. Peak memory of `kernel` is tracemalloc's peak during one call (numpy allocations;
the Numba loop's own scratch is N/2 complex numbers per row in flight).
"""

import statistics
import sys
import time
import tracemalloc

import numba
import numpy as np

from refssm import neurons, ops, spiking, ssm, surrogate
from refssm._checks import trusted
from refssm.kernels import neurons as fast_neurons, ops as fast_ops, spiking as fast_spiking, ssm as fast_ssm

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


def lif_bandwidth(rounds=5, R=8192, L=4096):
    """LIF forward + backward (float32, soft reset, "bptt_detach_reset", atan) as bandwidth, against
    np.copyto of arrays of the same size, alternating copy and LIF `rounds` times (DESIGN.md).

    Bytes counted: the forward reads x and writes s and g (3 arrays), the backward reads gs, g and s
    and writes gx (4 arrays); the copy reads one and writes one. "passes" times the two compiled
    passes on outputs allocated once (as a workspace would hold them: the figure the target is
    about); "calls" times the public lif + lif_vjp, which also allocate their outputs (fresh pages
    the kernel must zero on every call)."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.0, (R, L)).astype(np.float32)
    gs = rng.standard_normal((R, L)).astype(np.float32)
    src, dst = x.copy(), np.zeros_like(x)
    sg = surrogate.get("atan")
    args = (x, np.float32(0.5), np.float32(1.0), sg, "bptt_detach_reset", "soft")
    s, ctx = fast_spiking.lif(*args)                                          # compile / load cache
    fast_spiking.lif_vjp(ctx, gs)
    gradient, hard, g, s_rows, _, tau, th, vr, c, _, _ = ctx
    code = fast_spiking.surrogate_constants(sg, np.float32)[0]
    thc = np.nextafter(th, np.float32(-np.inf))
    gx, gth = fast_spiking._empty_aligned(x.shape, np.float32), np.zeros(R)
    gx[:] = 0
    no_v = np.empty((0, 0), np.float32)
    TBf, TBb = fast_spiking.FORWARD_TILE // 4, fast_spiking.BACKWARD_TILE // 4
    stream_f, stream_b = fast_spiking._streams(g, fast_spiking.FORWARD_TILE), \
        fast_spiking._streams(gx, fast_spiking.BACKWARD_TILE)

    def passes():
        fast_spiking._lif_forward(x, tau, th, thc, th, False, code, c, fast_ops.exp_constants(np.float32), s_rows,
                                  g, no_v, False, stream_f, TBf,
                                  4 * numba.get_num_threads())
        fast_spiking._lif_backward(gs, g, s_rows, s_rows, tau, th, vr, False, False, c, gx, gth, stream_b, TBb,
                                   4 * numba.get_num_threads())

    def calls():
        _, ctx = fast_spiking.lif(*args)
        fast_spiking.lif_vjp(ctx, gs)

    passes()
    print(f"\nLIF forward + backward, float32, {R} neurons x {L} steps, soft reset, bptt_detach_reset, atan; "
          f"streaming stores: {stream_f and stream_b}")
    print(f"{'round':<6} {'copy GB/s':>10} {'passes GB/s':>12} {'ratio':>7} {'calls GB/s':>11} {'ratio':>7}")
    ratios, call_ratios = [], []
    for r in range(rounds):
        t_copy = best_time(lambda: np.copyto(dst, src), 3)[0]
        t_pass = best_time(passes, 3)[0]
        t_copy = min(t_copy, best_time(lambda: np.copyto(dst, src), 3)[0])
        t_call = best_time(calls, 2)[0]
        copy_bw, pass_bw, call_bw = 2 * x.nbytes / t_copy, 7 * x.nbytes / t_pass, 7 * x.nbytes / t_call
        ratios.append(pass_bw / copy_bw)
        call_ratios.append(call_bw / copy_bw)
        print(f"{r:<6} {copy_bw / 1e9:>10.1f} {pass_bw / 1e9:>12.1f} {ratios[-1]:>7.2f} {call_bw / 1e9:>11.1f} "
              f"{call_ratios[-1]:>7.2f}")
    print(f"lif_bandwidth_ratio median={statistics.median(ratios):.2f} (passes), "
          f"{statistics.median(call_ratios):.2f} (calls incl. allocation)")


def dense_ops(B=16, H=128, L=1024):
    """LayerNorm and GLU: the fused Numba pair against the numpy oracle in the same dtype (the oracle
    inside trusted(), as the models call it, so float32 stays float32), forward and VJP separately."""
    rng = np.random.default_rng(1)
    print(f"\n{'op (B, H, L) = ' + str((B, H, L)):<42} {'numpy s':>10} {'numba s':>10} {'speedup':>10}   check")
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((B, H, L)).astype(dtype)
        gamma, beta = (1 + 0.1 * rng.standard_normal(H)).astype(dtype), (0.1 * rng.standard_normal(H)).astype(dtype)
        gy = rng.standard_normal((B, H, L)).astype(dtype)
        x2 = rng.standard_normal((B, 2 * H, L)).astype(dtype)
        with trusted():
            _, c_ln = ops.layer_norm(x, gamma, beta)
            _, c_glu = ops.glu(x2)
            _, f_ln = fast_ops.layer_norm(x, gamma, beta)
            _, f_glu = fast_ops.glu(x2)
            name = np.dtype(dtype).name
            compare(f"layer_norm {name}", lambda: ops.layer_norm(x, gamma, beta)[0],
                    lambda: fast_ops.layer_norm(x, gamma, beta)[0], relative)
            compare(f"layer_norm_vjp {name}", lambda: ops.layer_norm_vjp(c_ln, gy)[0],
                    lambda: fast_ops.layer_norm_vjp(f_ln, gy)[0], relative)
            compare(f"glu {name}", lambda: ops.glu(x2)[0], lambda: fast_ops.glu(x2)[0], relative)
            compare(f"glu_vjp {name}", lambda: ops.glu_vjp(c_glu, gy), lambda: fast_ops.glu_vjp(f_glu, gy),
                    relative)


def spiking_ops(B=16, H=128, L=1024):
    """LIF (forward + VJP, every gradient mode) and the refractory neuron's VJP: the Numba pair
    against the oracle of refssm.spiking in the same dtype, at the size of a training step."""
    rng = np.random.default_rng(2)
    print(f"\n{'spiking (B, H, L) = ' + str((B, H, L)):<42} {'numpy s':>10} {'numba s':>10} {'speedup':>10}   check")
    sg = surrogate.get("atan")
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        x = rng.normal(0.3, 1.0, (B, H, L)).astype(dtype)
        gs = rng.standard_normal((B, H, L)).astype(dtype)
        v_th = (1 + 0.1 * rng.standard_normal(H)).astype(dtype)
        with trusted():
            for gradient, reset in (("bptt_detach_reset", "soft"), ("bptt", "hard"), ("output", "hard")):
                args = (x, dtype(0.5), v_th, sg, gradient, reset)

                def pair(module):
                    s, ctx = module.lif(*args)
                    return s, module.lif_vjp(ctx, gs)[0]

                compare(f"lif+vjp {gradient} {reset} {name}", lambda: pair(spiking), lambda: pair(fast_spiking),
                        lambda a, b: ("spikes equal, " if np.array_equal(a[0], b[0]) else "SPIKES DIFFER, ")
                        + relative(a[1], b[1]))
            ln_vth, log_theta = (0.1 * rng.standard_normal(H)).astype(dtype), np.full(H, np.log(0.3), dtype)
            _, c0 = spiking.refractory(x, ln_vth, log_theta, 0.125, 0.5, sg)
            _, c1 = fast_spiking.refractory(x, ln_vth, log_theta, 0.125, 0.5, sg)
            compare(f"refractory_vjp {name}", lambda: spiking.refractory_vjp(c0, gs)[0],
                    lambda: fast_spiking.refractory_vjp(c1, gs)[0], relative)


def main(parts):
    print(f"numba {numba.__version__}, {numba.get_num_threads()} threads, numpy {np.__version__}")
    if "lif" in parts:
        lif_bandwidth()
    if "ops" in parts:
        dense_ops()
        spiking_ops()
    if "neurons" not in parts:
        return
    rng = np.random.default_rng(0)
    print(f"\n{'':<42} {'numpy s':>10} {'numba s':>10} {'speedup':>10}   check")

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
    main(sys.argv[1:] or ["lif", "ops", "neurons"])
