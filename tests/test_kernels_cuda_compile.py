"""The CUDA kernels of refssm.kernels.cuda compile for a real GPU (PTX for compute capability 9.0), not only
run in the simulator, which executes them as Python and checks no types: a construct that the CUDA target
cannot compile (Numba 0.68 fails on the builtin min of two integers, for one) passes the simulator.

A subprocess with NUMBA_ENABLE_CUDASIM=0 runs the public functions on small host arrays with every launch
replaced by a compilation to PTX for the launch's argument types (no GPU and no driver needed), and checks
that the forward recurrences multiply with mul.rn (refssm.kernels.cuda.mul_rn: never contracted into an FMA).
It needs NVVM and libdevice from a CUDA toolkit, found as Numba finds them (the system's, e.g. /usr/local/cuda,
or CUDA_HOME, e.g. <site-packages>/nvidia/cuda_nvcc of `pip install nvidia-cuda-nvcc-cu12`); without them the
test is skipped.
"""

import os
import subprocess
import sys

import pytest

SKIP = 77
SCRIPT = r"""
import sys
sys.modules["cupy"] = None                       # host arrays throughout, even where a CuPy without a GPU imports
import numpy as np
from numba import cuda, typeof
from numba.cuda.cudadrv.error import NvvmSupportError
from numba.cuda.cudadrv import nvvm
import numba.cuda.dispatcher as dispatcher
try:
    nvvm.NVVM()
except NvvmSupportError:
    sys.exit(%d)

class Device:                                    # no GPU: device functions compile for cc 9.0
    compute_capability = (9, 0)

dispatcher.get_current_device = lambda: Device()
ptx = {}                                         # (kernel name, argument types) -> PTX

class Compile:
    def __init__(self, kernel):
        self.kernel = kernel
    def __call__(self, *args):
        key = (self.kernel.py_func.__name__, tuple(typeof(a) for a in args))
        if key not in ptx:
            ptx[key] = cuda.compile_ptx(self.kernel.py_func, key[1], cc=(9, 0))[0]

dispatcher.CUDADispatcher.__getitem__ = lambda self, config: Compile(self)

from refssm import spiking, ssm, surrogate
from refssm.kernels.cuda import fractional as fast_fractional, spiking as fast, ssm as fast_ssm

np.seterr(all="ignore")                          # nothing runs: every output stays uninitialised
rng = np.random.default_rng(0)
for dtype in (np.float32, np.float64):
    x = rng.standard_normal((2, 3, 40)).astype(dtype)
    for name in surrogate.SURROGATES:
        sg = surrogate.get(name)
        for gradient in spiking.LIF_GRADIENTS:
            for reset in ("hard", "soft"):
                fast.lif_vjp(fast.lif(x, 0.5, 1.0, sg, gradient, reset)[1], x)
        fast.refractory_vjp(fast.refractory(x, np.zeros(3), np.zeros(3), 0.5, 0.5, sg)[1], x)
p = ssm.init_diag(3, 4, rng=rng)
K, ctx = fast_ssm.kernel_fwd(p["A"], p["B"], p["C"], 0.1, 40)
fast_ssm.kernel_vjp(ctx, np.zeros((3, 40)))
fast_fractional.fssm_conv_kernel_fwd(p["A"], p["B"], p["C"], np.full(3, 0.1), 40, 1.5, "gl")
for (name, _), code in ptx.items():
    assert "mul.rn" in code or name not in ("lif_forward", "refractory_forward"), name
print(sorted(name for name, _ in ptx))
""" % SKIP


def test_kernels_compile_for_a_gpu():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    if run.returncode == SKIP:
        pytest.skip("NVVM not found: set CUDA_HOME to a CUDA toolkit (see the module docstring)")
    assert run.returncode == 0, run.stderr[-3000:]
    for kernel in ("lif_forward", "lif_backward", "refractory_forward", "refractory_backward", "_exp_sum",
                   "_power_moments", "_gl_impulse"):
        assert kernel in run.stdout
