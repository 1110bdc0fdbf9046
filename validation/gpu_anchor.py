"""The GPU anchor: one training step of the canonical spiking S4D network in PyTorch + SpikingJelly on CUDA.

    python validation/gpu_anchor.py B H N L LAYERS STEPS [--lif-backend cupy|triton|torch]

The network of ../shared/bench/torch_anchor.py (the CPU anchor) moved to the GPU: encoder, per block a
LayerNorm, the S4D-Lin ZOH kernel by its Vandermonde sum, the FFT convolution (length 2L) with the D skip,
SpikingJelly's multi-step LIFNode(tau=2, v_reset=None, ATan, detach_reset=True) on the chosen SpikingJelly
backend (its fused CuPy kernel by default), the GLU mixing and the residual; mean pool and decoder; AdamW.
It is what refssm's `python -m refssm.bench train-step --backend cupy` runs (refssm/bench.py: same neuron,
same shapes, float32). Runs in a Python with torch (CUDA build) and spikingjelly, never refssm's own.

Prints a header, then `seconds_per_step=<median of STEPS after a warm-up step>` and
`peak_gpu_mb=<torch.cuda.max_memory_allocated>`.
"""

import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
from spikingjelly.activation_based import neuron, surrogate


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
    def __init__(self, H, N, lif_backend):
        super().__init__()
        self.norm, self.kernel, self.D = nn.LayerNorm(H), S4DKernel(H, N), nn.Parameter(torch.randn(H))
        self.lif = neuron.LIFNode(tau=2.0, v_reset=None, surrogate_function=surrogate.ATan(), detach_reset=True,
                                  step_mode="m", backend=lif_backend)
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
    def __init__(self, H, N, layers, lif_backend):
        super().__init__()
        self.enc, self.dec = nn.Linear(1, H), nn.Linear(H, 10)
        self.blocks = nn.ModuleList(Block(H, N, lif_backend) for _ in range(layers))

    def forward(self, u):
        x = self.enc(u)
        for b in self.blocks:
            x = b(x)
        return self.dec(x.mean(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs=6, type=int, metavar="B H N L LAYERS STEPS")
    ap.add_argument("--lif-backend", choices=("cupy", "triton", "torch"), default="cupy")
    args = ap.parse_args()
    B, H, N, L, layers, steps = args.sizes
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = Model(H, N, layers, args.lif_backend).to(dev)
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
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()} lif_backend={args.lif_backend} "
          f"B={B} H={H} N={N} L={L} layers={layers}")
    print(f"peak_gpu_mb={torch.cuda.max_memory_allocated() / 2**20:.0f}")
    print(f"seconds_per_step={statistics.median(times):.4f}")


if __name__ == "__main__":
    main()
