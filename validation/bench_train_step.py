"""Seconds per training step of refssm against the PyTorch + SpikingJelly anchor, in one run.

The anchor (../shared/bench/torch_anchor.py) trains the canonical spiking S4D model: encoder, LayerNorm
pre-norm, S4D-Lin ZOH kernel, FFT convolution + D skip, multi-step LIF, GLU mixing, residual, mean pool,
decoder, AdamW. refssm runs the same network (model "spikingssm", prenorm LayerNorm, LIF with BPTT and
detached reset as SpikingJelly's detach_reset=True) with the numpy and numba backends. The lower bound is
the step's matrix products and FFTs alone, timed in numpy.

usage: python validation/bench_train_step.py [B H N L LAYERS STEPS] [--anchor PYTHON]
  --anchor: a Python with torch and spikingjelly installed (a separate virtualenv; never a refssm
  dependency), e.g. python3 -m venv /tmp/anchor && /tmp/anchor/bin/pip install torch==2.13.0 spikingjelly
"""

import argparse
import os
import statistics
import subprocess
import time

import numpy as np

from refssm import models, optim

ANCHOR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bench", "torch_anchor.py")


def refssm_step_seconds(B, H, N, L, layers, steps, backend):
    rng = np.random.default_rng(0)
    cfg = models.make_config("spikingssm", d_input=1, n_classes=10, H=H, N=N, n_layers=layers, prenorm=True,
                             norm="layer", lif_gradient="bptt_detach_reset", backend=backend)
    params, state = models.init_params(cfg, rng)
    opt = optim.adamw_init(params)
    x, y, mask = rng.standard_normal((B, L, 1)), rng.integers(0, 10, B), np.ones((B, L), bool)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        _, grads, state, _, _ = models.loss_and_grads(params, state, cfg, x, y, mask, rng)
        params, opt = optim.adamw_step(params, grads, opt, lr=1e-3, weight_decay=0.0)
        if i:                                                                  # step 0 compiles (numba)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def lower_bound_seconds(B, H, L, layers, steps):
    """The step's matrix products and FFTs alone: per layer the mixing matmul (forward and its two
    backward products) and the FFT convolution (forward and its two backward correlations)."""
    rng = np.random.default_rng(0)
    s, W = rng.standard_normal((B, L, H)), rng.standard_normal((H, 2 * H))
    z, K = rng.standard_normal((B, H, L)), rng.standard_normal((H, L))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        for _ in range(layers):
            g = s @ W
            _ = g @ W.T, np.tensordot(s, g, axes=((0, 1), (0, 1)))
            Z, Kf = np.fft.rfft(z, 2 * L), np.fft.rfft(K, 2 * L)
            _ = np.fft.irfft(Z * Kf, 2 * L), np.fft.irfft(Z * Kf.conj(), 2 * L), np.fft.irfft(Z.conj() * Z, 2 * L)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[16, 128, 64, 1024, 4, 5])
    ap.add_argument("--anchor", help="python interpreter with torch and spikingjelly")
    args = ap.parse_args()
    B, H, N, L, layers, steps = args.sizes
    print(f"B={B} H={H} N={N} L={L} layers={layers}, median of {steps} steps, threads: "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    rows = {"refssm numpy": refssm_step_seconds(B, H, N, L, layers, steps, "numpy"),
            "refssm numba": refssm_step_seconds(B, H, N, L, layers, steps, "numba"),
            "lower bound (matmul + FFT)": lower_bound_seconds(B, H, L, layers, steps)}
    if args.anchor:
        out = subprocess.run([args.anchor, ANCHOR, *map(str, args.sizes)], check=True, capture_output=True,
                             text=True).stdout.split()
        rows["torch + spikingjelly anchor"] = float(out[-1])
    base = rows.get("torch + spikingjelly anchor")
    for name, t in rows.items():
        ratio = f"  {base / t:6.2f}x the anchor's speed" if base else ""
        print(f"{name:30s} {t:8.4f} s/step{ratio}")


if __name__ == "__main__":
    main()
