"""refssm's training step against the PyTorch + SpikingJelly anchor and against its own lower bound,
ratios measured in one run, the three alternating (A B C A B C ...) so that machine load hits all alike.

    python validation/bench_train_step.py 16 128 64 1024 4 5 --anchor /tmp/anchor/bin/python
    python validation/bench_train_step.py 4 128 64 16384 2 3 --anchor /tmp/anchor/bin/python --rounds 2

Sizes: B H N L LAYERS STEPS. Each measurement is a fresh process (`python -m refssm.bench ...`, and the
anchor ../shared/bench/torch_anchor.py in its own virtualenv), timing the median of STEPS steps after a
warm-up step, and reporting its peak resident memory. The same network runs on both sides (the
anchor's neuron: decay 0.5, soft reset, ATan, BPTT with the reset detached; see refssm/bench.py), in
float32, with the same thread settings (whatever OMP_NUM_THREADS / NUMBA_NUM_THREADS the environment
gives all three). The lower bound is the step's float32 GEMMs and FFTs alone.

--anchor: a Python with torch and spikingjelly (never a refssm dependency), e.g.
    python3 -m venv /tmp/anchor && /tmp/anchor/bin/pip install torch==2.13.0 spikingjelly
"""

import argparse
import os
import statistics
import subprocess
import sys

ANCHOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench", "torch_anchor.py")
# runs the anchor script unchanged and adds its peak memory
ANCHOR_WRAPPER = ("import resource, runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
                  "print(f'peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}')")


def _parse(out):
    values = dict(line.split("=", 1) for line in out.splitlines() if line.count("=") == 1 and " " not in line)
    return float(values["seconds_per_step"]), float(values["peak_rss_mb"])


def run_refssm(what, B, H, N, L, layers, steps, extra=()):
    cmd = [sys.executable, "-m", "refssm.bench", what, "--batch", str(B), "--channels", str(H), "--state", str(N),
           "--length", str(L), "--layers", str(layers), "--steps", str(steps), *extra]
    return _parse(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def run_anchor(python, B, H, N, L, layers, steps):
    out = subprocess.run([python, "-c", ANCHOR_WRAPPER, ANCHOR, *map(str, (B, H, N, L, layers, steps))], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    return float(out[-2]), float(out[-1].split("=")[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[16, 128, 64, 1024, 4, 5])
    ap.add_argument("--anchor", help="python interpreter with torch and spikingjelly")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = ap.parse_args()
    if len(args.sizes) != 6 or min(args.sizes) < 1:
        ap.error("sizes must be six integers >= 1: B H N L LAYERS STEPS")
    B, H, N, L, layers, steps = args.sizes
    print(f"B={B} H={H} N={N} L={L} layers={layers}, median of {steps} steps per run, {args.rounds} alternating "
          f"rounds, float32, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    rows = {"refssm (auto)": [], "lower bound (GEMM + FFT)": [], "torch + spikingjelly anchor": []}
    mem = {k: [] for k in rows}
    for r in range(args.rounds):
        for name in rows:
            if name.startswith("torch"):
                if not args.anchor:
                    continue
                t, m = run_anchor(args.anchor, *args.sizes)
            elif name.startswith("refssm"):
                t, m = run_refssm("train-step", *args.sizes)
            else:
                t, m = run_refssm("lower-bound", *args.sizes)
            rows[name].append(t)
            mem[name].append(m)
            print(f"  round {r + 1}: {name:30s} {t:8.4f} s/step  peak {m:7.0f} MB", flush=True)
    ours, bound = rows["refssm (auto)"], rows["lower bound (GEMM + FFT)"]
    print("per round: " + "  ".join(f"refssm/bound={a / b:.2f}" for a, b in zip(ours, bound)))
    print(f"refssm     median {statistics.median(ours):.4f} s/step, peak {max(mem['refssm (auto)']):.0f} MB")
    print(f"lower bnd  median {statistics.median(bound):.4f} s/step;  refssm / bound = "
          f"{statistics.median([a / b for a, b in zip(ours, bound)]):.2f} (median of per-round ratios)")
    if args.anchor:
        anchor = rows["torch + spikingjelly anchor"]
        ratios = [a / b for a, b in zip(anchor, ours)]
        print(f"anchor     median {statistics.median(anchor):.4f} s/step, peak {max(mem['torch + spikingjelly anchor']):.0f} MB")
        print("speed-up over the anchor per round: " + " ".join(f"{x:.2f}x" for x in ratios)
              + f"; median {statistics.median(ratios):.2f}x; memory refssm/anchor "
              f"{max(mem['refssm (auto)']) / max(mem['torch + spikingjelly anchor']):.2f}")


if __name__ == "__main__":
    main()
