"""The GPU anchor: one training step of the canonical spiking S4D network in PyTorch + SpikingJelly on CUDA.

    python validation/gpu_anchor.py B H N L LAYERS STEPS [--lif-backend auto|cuda|cupy|triton|torch]

The network of ../shared/bench/torch_anchor.py (the CPU anchor) moved to the GPU: encoder, per block a
LayerNorm, the S4D-Lin ZOH kernel by its Vandermonde sum, the FFT convolution (length 2L) with the D skip,
SpikingJelly's multi-step LIFNode(tau=2, v_reset=None, ATan, detach_reset=True) on the chosen LIF
implementation, the GLU mixing and the residual; mean pool and decoder; AdamW. It is what refssm's
`python -m refssm.bench train-step --backend cupy` runs (refssm/bench.py: same neuron, same shapes, float32).
Runs in a Python with torch (CUDA build) and spikingjelly, never refssm's own.

SpikingJelly chooses its LIF implementation in two ways, by release:
  - 0.0.0.0.14 up to the 2.0.0 development tree: LIFNode(backend=...), "torch", "cupy" (its fused CuPy
    kernel) and, in the development tree, "triton";
  - 2.0.0 (PyPI, 2026-10): no backend argument; the environment variable SJ_LIF_CUDA_IMPLEMENTATION, read
    when spikingjelly is imported, "auto" (its native CUDA kernel, else Triton, else torch), "cuda",
    "triton" or "torch".
--lif-backend auto (the default) takes the fused kernel either way: "cupy" on the old API, SpikingJelly's
own choice on 2.0. Any other value is passed on as it is, and refused in one line where that release lacks it.

Prints a header (torch and SpikingJelly versions, GPU, the LIF implementation that ran, where SpikingJelly
says), then `seconds_per_step=<median of STEPS after a warm-up step>` and
`peak_gpu_mb=<torch.cuda.max_memory_allocated>`.
"""

import argparse
import importlib
import inspect
import math
import os
import statistics
import time

import torch
import torch.nn as nn

LIF_BACKENDS = ("auto", "cuda", "cupy", "triton", "torch")
NEW_API = ("auto", "cuda", "triton", "torch")   # SJ_LIF_CUDA_IMPLEMENTATION (2.0.0)


def lif_factory(lif_backend):
    """A function () -> SpikingJelly multi-step LIFNode(tau=2, v_reset=None, ATan, detach_reset=True) on
    `lif_backend`, and a description of the implementation chosen; SystemExit (one line) where the installed
    SpikingJelly lacks it. Sets SJ_LIF_CUDA_IMPLEMENTATION before importing spikingjelly (2.0.0 reads it then)."""
    os.environ.setdefault("SJ_LIF_CUDA_IMPLEMENTATION", lif_backend if lif_backend in NEW_API else "auto")
    neuron = importlib.import_module("spikingjelly.activation_based.neuron")
    surrogate = importlib.import_module("spikingjelly.activation_based.surrogate")
    kw = dict(tau=2.0, v_reset=None, surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m")
    if "backend" in inspect.signature(neuron.LIFNode.__init__).parameters:
        backend = "cupy" if lif_backend == "auto" else lif_backend
        probe = neuron.LIFNode(**kw)
        if backend not in probe.supported_backends:
            raise SystemExit(f"gpu_anchor: --lif-backend {lif_backend}: this SpikingJelly's LIFNode supports "
                             f"{', '.join(probe.supported_backends)}")
        return (lambda: neuron.LIFNode(**kw, backend=backend)), f"LIFNode(backend={backend!r})"
    requested = os.environ["SJ_LIF_CUDA_IMPLEMENTATION"]
    if lif_backend not in NEW_API or requested != lif_backend:
        raise SystemExit(f"gpu_anchor: --lif-backend {lif_backend}: this SpikingJelly chooses its LIF implementation "
                         f"by SJ_LIF_CUDA_IMPLEMENTATION ({requested!r} in the environment), one of "
                         f"{', '.join(NEW_API)}")
    return (lambda: neuron.LIFNode(**kw)), f"SJ_LIF_CUDA_IMPLEMENTATION={requested}"


def chosen_lif_implementation():
    """What SpikingJelly 2.0 selected for the LIF on the GPU ("cuda", "triton" or "torch"), read from its
    selection cache after a step; "not reported" for releases without one."""
    try:
        selections = importlib.import_module("spikingjelly._ops.lif")._selection._selections.values()
        return ", ".join(sorted({s.name for s in selections if s is not None})) or "not reported"
    except (ImportError, AttributeError):
        return "not reported"


class S4DKernel(nn.Module):
    """K[h, l] = 2 Re sum_n C_n (exp(dt A_n) - 1) / A_n exp(dt A_n l): S4D-Lin, ZOH, B = 1."""

    def __init__(self, H, N):
        super().__init__()
        self.log_dt = nn.Parameter(torch.rand(H) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
        self.C = nn.Parameter(torch.view_as_real(torch.randn(H, N // 2, dtype=torch.cfloat)))
        self.log_A_real = nn.Parameter(torch.log(0.5 * torch.ones(H, N // 2)))
        self.A_imag = nn.Parameter(math.pi * torch.arange(N // 2).float().repeat(H, 1))

    def forward(self, L):
        dtA = (-torch.exp(self.log_A_real) + 1j * self.A_imag) * torch.exp(self.log_dt)[:, None]    # (H, N/2)
        W = torch.view_as_complex(self.C) * (torch.exp(dtA) - 1.0) / (dtA / torch.exp(self.log_dt)[:, None])
        powers = torch.exp(dtA[..., None] * torch.arange(L, device=dtA.device))                   # (H, N/2, L)
        return 2 * torch.einsum("hn,hnl->hl", W, powers).real                                     # (H, L)


class Block(nn.Module):
    def __init__(self, H, N, make_lif):
        super().__init__()
        self.norm, self.kernel, self.D = nn.LayerNorm(H), S4DKernel(H, N), nn.Parameter(torch.randn(H))
        self.lif = make_lif()
        self.mix = nn.Linear(H, 2 * H)

    def forward(self, x):                                          # x (B, L, H)
        z = self.norm(x).transpose(1, 2)                           # (B, H, L)
        L = z.shape[-1]
        y = torch.fft.irfft(torch.fft.rfft(z, n=2 * L) * torch.fft.rfft(self.kernel(L), n=2 * L), n=2 * L)[..., :L]
        y = y + z * self.D[:, None]
        s = self.lif(y.permute(2, 0, 1).contiguous())              # (L, B, H): SpikingJelly is time-major
        self.lif.reset()
        return x + nn.functional.glu(self.mix(s.permute(1, 0, 2)), dim=-1)


class Model(nn.Module):
    def __init__(self, H, N, layers, make_lif):
        super().__init__()
        self.enc, self.dec = nn.Linear(1, H), nn.Linear(H, 10)
        self.blocks = nn.ModuleList(Block(H, N, make_lif) for _ in range(layers))

    def forward(self, u):
        x = self.enc(u)
        for b in self.blocks:
            x = b(x)
        return self.dec(x.mean(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs=6, type=int, metavar="B H N L LAYERS STEPS")
    ap.add_argument("--lif-backend", choices=LIF_BACKENDS, default="auto",
                    help="SpikingJelly's LIF implementation (see above; default auto: its fused kernel)")
    args = ap.parse_args()
    B, H, N, L, layers, steps = args.sizes
    make_lif, how = lif_factory(args.lif_backend)
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = Model(H, N, layers, make_lif).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    u, t = torch.randn(B, L, 1, device=dev), torch.randint(0, 10, (B,), device=dev)
    times = []
    for i in range(steps + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = nn.functional.cross_entropy(model(u), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    sj = importlib.import_module("spikingjelly")
    print(f"torch {torch.__version__}, spikingjelly {getattr(sj, '__version__', '?')} "
          f"on {torch.cuda.get_device_name()}: "
          f"LIF {how} ran {chosen_lif_implementation()}; B={B} H={H} N={N} L={L} layers={layers}")
    print(f"peak_gpu_mb={torch.cuda.max_memory_allocated() / 2**20:.0f}")
    print(f"seconds_per_step={statistics.median(times):.4f}")


if __name__ == "__main__":
    main()
