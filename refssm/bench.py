"""Benchmarks that outside scripts call: `python -m refssm.bench train-step ...`.

    python -m refssm.bench train-step --batch 16 --channels 128 --state 64 --length 1024 --layers 4 --steps 5
    python -m refssm.bench lower-bound --batch 16 --channels 128 --length 1024 --layers 4 --steps 5

train-step times one training step (forward, backward, AdamW) of the canonical spiking S4D network
(refssm's "spikingssm" model: encoder, LayerNorm pre-norm, S4D-Lin ZOH kernel, FFT convolution + D
skip, LIF, GLU, residual, mean pool, decoder) with the neuron of the PyTorch + SpikingJelly anchor
(../shared/bench/torch_anchor.py: LIFNode(tau=2.0, v_reset=None, ATan, detach_reset=True), i.e. decay
1 - 1/tau = 0.5, soft reset, ATan surrogate alpha = 2, BPTT with the reset detached) unless
--neuron spikingssm asks for SpikingSSM's own (tau = 0.125, hard reset, triangle, output gradient).
SpikingJelly's decay_input also scales the input by 1/tau = 0.5: refssm's learnable threshold
exp(ln_vth) plays that role (same operations, another initial value), so the work per step is equal.

lower-bound times the step's matrix products and FFTs alone in the same dtype and thread settings:
per layer the mixing GEMM and its two backward GEMMs, and the FFT convolution (rfft of the input and
kernel, the product's irfft; backward: rfft of the gradient and two irffts).

Both print a header line and, last, `seconds_per_step=<median>` and `peak_rss_mb=<process peak>`
lines (the last line is seconds_per_step, which outside scripts parse). With --backend cupy the step runs
on the GPU (inputs moved there once, the clock read after the device has finished the step) and a
`peak_gpu_mb=` line gives the most memory CuPy's pool held after any step.
"""

import argparse
import os
import resource
import statistics
import sys
import time

import numpy as np

ANCHOR_NEURON = dict(tau=0.5, reset="soft", surrogate="atan", lif_gradient="bptt_detach_reset")
SPIKINGSSM_NEURON = dict(tau=0.125, reset="hard", surrogate="triangle", lif_gradient="output")


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0                # Linux: KiB


def train_step_seconds(B, H, N, L, layers, steps, backend="auto", dtype="float32", neuron="anchor", peak=None):
    """Median seconds of `steps` training steps (after one warm-up step that compiles and allocates).
    peak: a list that receives the GPU pool's largest size in bytes (backend cupy)."""
    from refssm import backend as backends, models, optim
    from refssm._memory import reuse_freed_memory

    reuse_freed_memory()                                                       # as refssm train does
    rng = np.random.default_rng(0)
    cfg = models.make_config("spikingssm", d_input=1, n_classes=10, H=H, N=N, n_layers=layers, prenorm=True,
                             norm="layer", backend=backend, dtype=dtype,
                             **(ANCHOR_NEURON if neuron == "anchor" else SPIKINGSSM_NEURON))
    concrete = backends.resolve(backend)
    on = lambda tree: {k: backends.to_device(v, concrete) for k, v in tree.items()}
    params, state = (on(t) for t in models.init_params(cfg, rng))
    opt = optim.adamw_init(params)
    x = backends.to_device(rng.standard_normal((B, L, 1)).astype(dtype), concrete)
    y = backends.to_device(rng.integers(0, 10, B), concrete)
    pool = None
    if backends.device_of(concrete) == "gpu":
        import cupy
        pool = cupy.get_default_memory_pool()
    times, most = [], 0
    for i in range(steps + 1):
        backends.synchronize(concrete)
        t0 = time.perf_counter()
        _, grads, state, _, _ = models.loss_and_grads(params, state, cfg, x, y, None, rng)
        params, opt = optim.adamw_step(params, grads, opt, lr=1e-3, weight_decay=0.0)
        backends.synchronize(concrete)
        if i:
            times.append(time.perf_counter() - t0)
        most = max(most, pool.total_bytes()) if pool is not None else 0
    if peak is not None:
        peak.append(most)
    return statistics.median(times)


def lower_bound_seconds(B, H, L, layers, steps, dtype="float32"):
    """The step's GEMMs and FFTs alone (see the module doc), median over `steps`."""
    from scipy import fft

    rng = np.random.default_rng(0)
    dtype = np.dtype(dtype)
    s, W = rng.standard_normal((B, H, L)).astype(dtype), rng.standard_normal((2 * H, H)).astype(dtype)
    z, K = rng.standard_normal((B, H, L)).astype(dtype), rng.standard_normal((H, L)).astype(dtype)
    n = fft.next_fast_len(2 * L - 1, real=True)                             # linear, as refssm.ssm
    workers = os.cpu_count()
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        for _ in range(layers):
            u = np.matmul(W, s)                                                # (B, 2H, L)
            np.matmul(W.T, u)
            gW = np.zeros_like(W)
            for b in range(B):
                gW += u[b] @ s[b].T
            Z, Kf = fft.rfft(z, n, workers=workers), fft.rfft(K, n, workers=workers)
            fft.irfft(Z * Kf, n, workers=workers)
            G = fft.rfft(z, n, workers=workers)
            fft.irfft(G * Kf.conj(), n, workers=workers)
            fft.irfft((G * Z.conj()).sum(axis=0), n, workers=workers)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m refssm.bench", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    for name in ("train-step", "lower-bound"):
        p = sub.add_parser(name)
        p.add_argument("--batch", type=int, default=16)
        p.add_argument("--channels", type=int, default=128)
        p.add_argument("--state", type=int, default=64)
        p.add_argument("--length", type=int, default=1024)
        p.add_argument("--layers", type=int, default=4)
        p.add_argument("--steps", type=int, default=5)
        p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
        if name == "train-step":
            p.add_argument("--backend", choices=("auto", "numpy", "numba", "cupy"), default="auto")
            p.add_argument("--neuron", choices=("anchor", "spikingssm"), default="anchor")
    args = ap.parse_args(argv)
    for k in ("batch", "channels", "state", "length", "layers", "steps"):
        if getattr(args, k) < 1:
            ap.error(f"--{k} must be an integer >= 1, got {getattr(args, k)}")
    sizes = (args.batch, args.channels, args.state, args.length, args.layers, args.steps)
    print(f"{args.what} B={args.batch} H={args.channels} N={args.state} L={args.length} layers={args.layers} "
          f"dtype={args.dtype}" + (f" backend={args.backend} neuron={args.neuron}" if args.what == "train-step" else ""))
    peak = []
    if args.what == "train-step":
        t = train_step_seconds(*sizes, backend=args.backend, dtype=args.dtype, neuron=args.neuron, peak=peak)
    else:
        t = lower_bound_seconds(args.batch, args.channels, args.length, args.layers, args.steps, args.dtype)
    if peak and args.backend == "cupy":
        print(f"peak_gpu_mb={peak[0] / 2**20:.0f}")
    print(f"peak_rss_mb={_peak_rss_mb():.0f}")
    print(f"seconds_per_step={t:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
