"""refssm's training step on a GPU (backend "cupy") against PyTorch + SpikingJelly on the same GPU, ratios
measured in one run, the two sides alternating (A B A B ...).

    python validation/bench_gpu.py                       # both configurations below, 3 rounds
    python validation/bench_gpu.py --anchor /path/to/python --lif-backend torch --rounds 2

Configurations: canonical B=16 H=128 N=64 L=1024, 4 layers; long B=4 H=128 N=64 L=16384, 2 layers (as
validation/bench_train_step.py on the CPU). Each measurement is a fresh process timing the median of STEPS
steps after a warm-up step: refssm by `python -m refssm.bench train-step --backend cupy`, the anchor by
validation/gpu_anchor.py (the same network and neuron, SpikingJelly's fused LIF kernel by default), both in
float32. Targets (the CuPy issue): refssm at least as fast as the anchor at L=1024, at least 2x at L=16384.

--anchor: a Python with torch (CUDA) and spikingjelly; default this one.
"""

import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {"canonical": (16, 128, 64, 1024, 4, 5), "long": (4, 128, 64, 16384, 2, 3)}


def _values(out):
    return {k: float(v) for k, v in (line.split("=", 1) for line in out.splitlines()
                                     if line.count("=") == 1 and " " not in line)}


def _run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"bench_gpu: {' '.join(cmd[:4])} ... failed:\n{done.stderr[-2000:]}")
    return done.stdout


def refssm_step(B, H, N, L, layers, steps):
    out = _run([sys.executable, "-m", "refssm.bench", "train-step", "--backend", "cupy", "--batch", str(B),
                "--channels", str(H), "--state", str(N), "--length", str(L), "--layers", str(layers),
                "--steps", str(steps)])
    v = _values(out)
    return v["seconds_per_step"], v["peak_gpu_mb"]


def anchor_step(python, lif_backend, *sizes):
    out = _run([python, os.path.join(HERE, "gpu_anchor.py"), *map(str, sizes), "--lif-backend", lif_backend])
    v = _values(out)
    return v["seconds_per_step"], v["peak_gpu_mb"], out.splitlines()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anchor", default=sys.executable, help="python with torch (CUDA) and spikingjelly")
    ap.add_argument("--lif-backend", choices=("auto", "cuda", "cupy", "triton", "torch"), default="auto",
                    help="SpikingJelly's LIF implementation on the anchor side (validation/gpu_anchor.py; default "
                         "auto, its fused kernel)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--configs", nargs="+", choices=tuple(CONFIGS), default=list(CONFIGS))
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error(f"--rounds must be an integer >= 1, got {args.rounds}")
    import cupy
    print(f"GPU: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}, CuPy {cupy.__version__}, "
          f"anchor LIF backend {args.lif_backend}, {args.rounds} alternating rounds, float32")
    for name in args.configs:
        sizes = CONFIGS[name]
        ours, theirs = [], []
        for r in range(args.rounds):
            t, m = refssm_step(*sizes)
            a, am, header = anchor_step(args.anchor, args.lif_backend, *sizes)
            if r == 0:
                print(f"  anchor: {header}")
            ours.append(t)
            theirs.append(a)
            print(f"  {name} round {r + 1}: refssm {t:.4f} s/step ({m:.0f} MB)  anchor {a:.4f} s/step ({am:.0f} MB)  "
                  f"anchor/refssm {a / t:.2f}", flush=True)
        ratios = [a / t for a, t in zip(theirs, ours)]
        print(f"{name} B,H,N,L,layers={sizes[:5]}: refssm median {statistics.median(ours):.4f} s/step, anchor "
              f"{statistics.median(theirs):.4f}; anchor/refssm = {statistics.median(ratios):.2f} (median of per-round "
              f"ratios; > 1 means refssm is faster)")


if __name__ == "__main__":
    main()
