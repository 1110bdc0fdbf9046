"""Data-parallel training on this machine, and on paper at cluster scale (refssm.distributed).

    python validation/bench_distributed.py                  # needs pip install '.[dist]' (mpiexec, mpi4py)
    python validation/bench_distributed.py --steps 2 --rounds 1

1. Throughput, measured in one run: the canonical model (refssm.bench's spiking S4D network: B=16, H=128,
   N=64, L=1024, 4 layers, float32) trained by refssm.train.global_batch_grads + AdamW, the step
   `refssm train` takes, as K = 2 MPI ranks with one thread each (`mpiexec -n 2`) against K = 1 with two
   threads (REFSSM_THREADS=2) and, as the serial reference, K = 1 with one thread, alternated (A B C A B C
   ...), examples/s from the median step of each run (after a warm-up step) and the share of the K = 2
   step spent in Comm.sum.
2. Communication on loopback (`mpiexec -n 2`): seconds per call and per byte of MPI Allreduce, MPI
   Allgather and refssm's Comm.sum (Iallgather + rank-order sum at K = 2) from 8 B to 32 MiB (best of 5
   batches of back-to-back calls); fitted latency alpha (the smallest message) and inverse bandwidth beta
   (least-squares slope over the messages >= 1 MiB).
3. Cost model (on paper): P nodes, each this machine (2 cores) with a shard of b examples, compute
   b * t_ex (t_ex: the K = 1 step time per example, measured here for the canonical model and a 4-layer
   H = 256 model), then the gradient sum, a ring allreduce of the float32 gradient buffer (Patarasuk &
   Yuan 2009; refssm's reduce-scatter + allgather moves the same volume) plus the metrics' small sum:
       T_comm(P) = 2 (P-1) alpha + 2 (P-1)/P * bytes * beta  +  (P-1) alpha
       efficiency E = b t_ex / (b t_ex + T_comm)            (no overlap: refssm sums after the backward)
   E at P = 8, 32, 128 with b = 16 per node, and the global batch G95 = P * b95 at which communication
   stops mattering, defined as E >= 0.95 (b95 = 19 T_comm / t_ex examples per node, at least 1), with
   the loopback alpha, beta measured here and, for comparison, an assumed 10 Gb/s Ethernet (alpha =
   30 us, beta = 0.8 ns/B).
   t_ex is the faster of K = 1 with one and with two threads (on shared cores two can be slower).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

CANONICAL = dict(B=16, H=128, N=64, L=1024, layers=4)
WIDE = dict(CANONICAL, H=256)
NODES = (8, 32, 128)
ETHERNET = dict(alpha=30e-6, beta=0.8e-9)                 # assumed 10 Gb/s Ethernet, for comparison


def _mpiexec():
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else "mpiexec"


def _worker(args, ranks, threads=None):
    """Run this script's worker mode (K = ranks) and return the JSON its rank 0 prints."""
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    if ranks > 1:
        cmd = [_mpiexec(), "-n", str(ranks)] + cmd
    env = dict(os.environ, **({"REFSSM_THREADS": str(threads)} if threads else {}))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(next(line for line in out.splitlines() if line[:1] in "[{"))


def worker_step(sizes, steps):
    """Median seconds of a training step of the canonical network on this rank's shard (module doc 1)."""
    from refssm import bench, distributed, models, optim, train

    comm = distributed.world()
    comm_seconds = [0.0]
    plain_sum = comm.sum

    def timed_sum(a):
        t0 = time.perf_counter()
        out = plain_sum(a)
        comm_seconds[0] += time.perf_counter() - t0
        return out
    comm.sum = timed_sum
    rng = np.random.default_rng(0)
    cfg = models.make_config("spikingssm", d_input=1, n_classes=10, H=sizes["H"], N=sizes["N"],
                             n_layers=sizes["layers"], prenorm=True, norm="layer", dtype="float32",
                             **bench.ANCHOR_NEURON)
    params, state = models.init_params(cfg, rng)
    opt = optim.adamw_init(params)
    x, y = rng.standard_normal((sizes["B"], sizes["L"], 1)), rng.integers(0, 10, sizes["B"])
    times, comm_times = [], []
    for i in range(steps + 1):
        comm.barrier()
        comm_seconds[0] = 0.0
        t0 = time.perf_counter()
        _, grads, state, *_ = train.global_batch_grads(params, state, cfg, x, y, None, rng, {}, comm)
        params, opt = optim.adamw_step(params, grads, opt, lr=1e-3, weight_decay=0.0)
        if i:
            times.append(time.perf_counter() - t0)
            comm_times.append(comm_seconds[0])
    t = statistics.median(times)
    if comm.rank == 0:
        print(json.dumps(dict(seconds=t, comm_seconds=statistics.median(comm_times), ranks=comm.size,
                              threads=comm.threads, params=int(sum(v.size for v in params.values())),
                              examples_per_s=sizes["B"] / t)), flush=True)


def worker_comm(repeats):
    """Seconds per call of Allreduce, Allgather and Comm.sum on float32 buffers, 8 B to 32 MiB: the best of 5
    batches of back-to-back calls (on shared cores the scheduler, not MPI, makes the slower batches)."""
    from refssm import distributed

    comm = distributed.world()
    mpi = comm.comm
    rows = []
    for nbytes in [8 * 4 ** k for k in range(12)]:
        a = np.ones(nbytes // 4, np.float32)
        out, gathered = np.empty_like(a), np.empty((comm.size, a.size), np.float32)
        result = dict(bytes=nbytes)
        for name, call in (("allreduce", lambda: mpi.Allreduce(a, out)), ("allgather", lambda: mpi.Allgather(a, gathered)),
                           ("comm_sum", lambda: comm.sum(a))):
            call()
            n, batches = max(3, min(repeats, int(2e8 // nbytes))), []
            for _ in range(5):
                comm.barrier()
                t0 = time.perf_counter()
                for _ in range(n):
                    call()
                batches.append((time.perf_counter() - t0) / n)
            result[name] = min(batches)
        rows.append(result)
    if comm.rank == 0:
        print(json.dumps(rows), flush=True)


def fit(rows, key):
    """(alpha, beta): the smallest message's time, and the least-squares slope over messages >= 1 MiB."""
    big = [r for r in rows if r["bytes"] >= 2 ** 20]
    beta = np.polyfit([r["bytes"] for r in big], [r[key] for r in big], 1)[0]
    return rows[0][key], float(beta)


def comm_seconds(P, nbytes, alpha, beta):
    """Ring allreduce of nbytes over P nodes plus one small sum (module doc 3)."""
    return 2 * (P - 1) * alpha + 2 * (P - 1) / P * nbytes * beta + (P - 1) * alpha


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per run (after a warm-up step; default 3)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating K=1 / K=2 rounds (default 2)")
    ap.add_argument("--worker", choices=("step", "comm"), help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default=json.dumps(CANONICAL), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps < 1 or args.rounds < 1:
        ap.error("--steps and --rounds must be integers >= 1")
    if args.worker == "step":
        return worker_step(json.loads(args.sizes), args.steps)
    if args.worker == "comm":
        return worker_comm(20)

    c = CANONICAL
    print(f"1. throughput: canonical model B={c['B']} H={c['H']} N={c['N']} L={c['L']} layers={c['layers']} float32, "
          f"median of {args.steps} steps per run, {args.rounds} alternating rounds, {os.cpu_count()} cores")
    step = ["--worker", "step", "--steps", str(args.steps), "--sizes", json.dumps(CANONICAL)]
    configs = {"K=1 x 2 threads": (1, 2), "K=2 x 1 thread": (2, None), "K=1 x 1 thread": (1, 1)}
    runs = {name: [] for name in configs}
    for r in range(args.rounds):
        for name, (K, threads) in configs.items():
            res = _worker(step, K, threads)
            runs[name].append(res)
            print(f"  round {r + 1}: {name:16s} {res['seconds']:.3f} s/step {res['examples_per_s']:6.2f} examples/s, "
                  f"in Comm.sum (waits included) {res['comm_seconds'] * 1e3:.2f} ms/step", flush=True)

    def ratio(a, b):
        per_round = [x["examples_per_s"] / y["examples_per_s"] for x, y in zip(runs[a], runs[b])]
        return f"{a} / {b} = {statistics.median(per_round):.2f} ({', '.join(f'{q:.2f}' for q in per_round)})"
    comm_share = statistics.median(r["comm_seconds"] / r["seconds"] for r in runs["K=2 x 1 thread"])
    print("  examples/s, median: " + "; ".join(f"{name} {statistics.median(r['examples_per_s'] for r in rs):.2f}"
                                             for name, rs in runs.items()))
    print(f"  {ratio('K=2 x 1 thread', 'K=1 x 2 threads')}; {ratio('K=2 x 1 thread', 'K=1 x 1 thread')}; "
          f"{ratio('K=1 x 2 threads', 'K=1 x 1 thread')} (median of per-round ratios); Comm.sum "
          f"{100 * comm_share:.1f}% of the K=2 step")

    print("2. communication on loopback, mpiexec -n 2, float32 buffers (seconds per call; ns per byte)")
    rows = _worker(["--worker", "comm"], 2)
    print(f"  {'bytes':>10s} {'Allreduce':>11s} {'Allgather':>11s} {'Comm.sum':>11s}   ns/B: "
          f"{'Allreduce':>9s} {'Allgather':>9s} {'Comm.sum':>9s}")
    for r in rows:
        print(f"  {r['bytes']:>10d} " + " ".join(f"{r[k]:11.3e}" for k in ("allreduce", "allgather", "comm_sum"))
              + "         " + " ".join(f"{r[k] / r['bytes'] * 1e9:9.3f}" for k in ("allreduce", "allgather", "comm_sum")))
    alpha, beta = fit(rows, "comm_sum")
    print(f"  fit (Comm.sum): alpha = {alpha * 1e6:.1f} us, beta = {beta * 1e9:.3f} ns/B "
          f"({1 / beta / 1e9:.1f} GB/s); Allreduce: alpha = {fit(rows, 'allreduce')[0] * 1e6:.1f} us, "
          f"beta = {fit(rows, 'allreduce')[1] * 1e9:.3f} ns/B")

    # a node's compute time per example: its faster K = 1 configuration (more threads may be slower when
    # the cores are shared)
    wide = [_worker(["--worker", "step", "--steps", str(args.steps), "--sizes", json.dumps(WIDE)], 1, threads)
            for threads in (1, 2)]
    t_ex = {"canonical H=128": min(statistics.median(r["seconds"] for r in runs[name])
                                   for name in ("K=1 x 1 thread", "K=1 x 2 threads")) / c["B"],
            "4-layer H=256": min(r["seconds"] for r in wide) / c["B"]}
    n_params = {"canonical H=128": runs["K=1 x 1 thread"][0]["params"], "4-layer H=256": wide[0]["params"]}
    print(f"3. cost model: nodes of {os.cpu_count()} cores, b = {c['B']} examples per node, float32 gradients, "
          "t_ex = the faster K=1 step / b; E = b t_ex / (b t_ex + T_comm); G95 = the global batch P b95 from which "
          "E >= 0.95, b95 = max(1, 19 T_comm / t_ex) examples per node")
    print(f"  {'model':16s} {'params':>8s} {'t_ex ms':>8s} {'network':20s} "
          + " ".join(f"{'Tcomm@' + str(P):>9s}" for P in NODES) + " " + " ".join(f"{'E@' + str(P):>6s}" for P in NODES)
          + " " + " ".join(f"{'G95@' + str(P):>8s}" for P in NODES))
    for name, t in t_ex.items():
        for net, (a, b) in (("loopback (measured)", (alpha, beta)),
                            ("10 GbE (assumed)", (ETHERNET["alpha"], ETHERNET["beta"]))):
            T = [comm_seconds(P, 4 * n_params[name], a, b) for P in NODES]
            print(f"  {name:16s} {n_params[name]:>8d} {t * 1e3:8.1f} {net:20s} "
                  + " ".join(f"{q * 1e3:7.2f}ms" for q in T) + " "
                  + " ".join(f"{c['B'] * t / (c['B'] * t + q):6.3f}" for q in T) + " "
                  + " ".join(f"{int(np.ceil(P * max(1.0, 19 * q / t))):>8d}" for P, q in zip(NODES, T)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
