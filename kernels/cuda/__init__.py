"""Fast paths for backend "cupy": Numba CUDA kernels (refssm.kernels.cuda.*), each to be registered in
refssm.backend against the oracle it must match (tests/test_kernels_cuda*.py).

On a GPU the kernels are launched on CuPy arrays (Numba takes any array with `__cuda_array_interface__`)
and write their outputs into CuPy arrays allocated by the glue, so results stay on the device. Under
Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, set by tests/conftest.py) every CUDA thread runs as a
Python thread on numpy arrays: the "device" is the host and the device module is numpy.

This module holds what the kernel modules share: the device array module, the launches and their
layout, rows of an array on its own module, the cooperative tile loads and stores of the time loops,
and `mul_rn`, a product that is never contracted into a fused multiply-add. (Inputs are checked by refssm._checks, which
checks a CuPy array on its device.)
"""

import importlib
import math

import numpy as np
from numba import cuda
from numba.core import config

from refssm import backend
from refssm.kernels import rows as host_rows

SIMULATED = bool(config.ENABLE_CUDASIM)     # kernels run in Numba's CUDA simulator, on numpy arrays

THREADS = 128          # threads per block of the flat launches (one thread per output element)
TILE_ROWS = 32         # time loops: one thread per row, a block of TILE_ROWS rows (one warp)
TILE_STEPS = 32        # steps per tile staged through shared memory
TILE_PAD = TILE_STEPS + 1   # padded tile rows: thread j walking row j hits its own bank (4-byte words)


def device_module():
    """The array module of device arrays: cupy where it imports, else numpy (on a GPU without CuPy, Numba
    copies host arrays to the GPU and back at every launch: correct, but slow). The simulator runs kernels
    on numpy arrays only (subclasses included, such as the CuPy test double of tests/fake_cupy.py): under
    it a CuPy whose arrays are not numpy arrays gives way to numpy."""
    try:
        cupy = importlib.import_module("cupy")
    except ImportError:
        return np
    return np if SIMULATED and not issubclass(cupy.ndarray, np.ndarray) else cupy


def stream(xp):
    """The stream to launch on: CuPy's current stream for CuPy arrays on a GPU (kernels are then ordered
    with the CuPy operations around them), else the default stream 0 (the simulator has no streams)."""
    if xp is np or SIMULATED:
        return 0
    return cuda.external_stream(xp.cuda.get_current_stream().ptr)


def launch(kernel, blocks, threads, xp, *args):
    """kernel[blocks, threads](*args) on xp's stream (`stream`). On a GPU, CuPy arrays go in as Numba views
    without the wait Numba otherwise does, on the host, for the stream each array exports: that stream is
    CuPy's current one, the launch's own, so the work that wrote them is ordered before the kernel already."""
    if xp is not np and not SIMULATED:
        args = [cuda.as_cuda_array(a, sync=False) if cuda.is_cuda_array(a) else a for a in args]
    kernel[blocks, threads, stream(xp)](*args)


def flat_blocks(n, threads=THREADS):
    """Blocks of `threads` threads covering n items, one thread each (at least one block)."""
    return max(1, -(-n // threads))


def rows(*arrays):
    """Arrays (..., n) as C-contiguous rows (R, n) on their own module: refssm.kernels.rows for numpy
    arrays, the same reshape on the device for CuPy arrays."""
    xp = backend.array_module(*arrays)
    if xp is np:
        return host_rows(*arrays)
    return [xp.ascontiguousarray(a.reshape(math.prod(a.shape[:-1]), a.shape[-1])) for a in arrays]


def per_row(xp, dtype, *params):
    """Parameters broadcast to a signal's leading dims (host arrays, already checked) as contiguous rows
    (R,) of `dtype` on the device of module xp: copies, so never a read-only broadcast view (which the
    simulator, copying kernel arguments back to the host, could not write)."""
    return [xp.asarray(np.array(p, dtype).reshape(-1)) for p in params]


def mul_rn(a, b):
    """a * b rounded once to the operands' type and never fused with a following addition: the product
    numpy computes, so recurrences like v = tau u + x equal the oracles' bit for bit. (CUDA compilers
    contract a * b + c into one FMA by default, which rounds once instead of twice.) In the simulator
    this plain Python product runs; on a GPU the overload below (libdevice __fmul_rn / __dmul_rn)."""
    return a * b


if not SIMULATED:
    from numba import types
    from numba.core.extending import overload
    from numba.cuda import libdevice

    @overload(mul_rn, target="cuda")
    def _mul_rn_cuda(a, b):
        if a == types.float32 and b == types.float32:
            return lambda a, b: libdevice.fmul_rn(a, b)
        return lambda a, b: libdevice.dmul_rn(a, b)


@cuda.jit(device=True)
def tile_length(t0, L):
    """Steps in the tile that starts at step t0: TILE_STEPS, or the L - t0 left. (The kernels avoid the
    builtins min and max, which Numba 0.68's CUDA target does not compile for integers.)"""
    return L - t0 if L - t0 < TILE_STEPS else TILE_STEPS


@cuda.jit(device=True)
def load_tile(src, tile, r0, t0, nt):
    """tile[j, k] = src[r0 + j, t0 + k] for j < TILE_ROWS (rows below R) and k < nt, by all threads of the
    block together: consecutive threads read consecutive steps of a row, so the reads of the rows
    (R, L), time contiguous, coalesce."""
    R = src.shape[0]
    for idx in range(cuda.threadIdx.x, TILE_ROWS * TILE_STEPS, cuda.blockDim.x):
        j = idx // TILE_STEPS
        k = idx - j * TILE_STEPS
        if r0 + j < R and k < nt:
            tile[j, k] = src[r0 + j, t0 + k]


@cuda.jit(device=True)
def store_tile(dst, tile, r0, t0, nt):
    """dst[r0 + j, t0 + k] = tile[j, k]: the coalesced store matching `load_tile`."""
    R = dst.shape[0]
    for idx in range(cuda.threadIdx.x, TILE_ROWS * TILE_STEPS, cuda.blockDim.x):
        j = idx // TILE_STEPS
        k = idx - j * TILE_STEPS
        if r0 + j < R and k < nt:
            dst[r0 + j, t0 + k] = tile[j, k]
