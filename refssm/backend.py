"""The one door for backends: which implementation of each differentiable operation runs, and in what dtype.

Every operation the models use is a pair of pure functions, `y, ctx = fwd(...)` and
`grads = vjp(ctx, g)` (the ctx carries what the forward computed, so the VJP recomputes nothing).
The table OPS below names, for each operation, its oracle (the numpy reference, checked against
closed forms and autograd) and its fast paths, one per backend, each tested against that oracle
(`tests/test_kernels_*.py`). A fast path's ctx is its own: pass it only to its own VJP.

    backend  device  fast paths
    numpy    host    none: every operation runs its oracle
    numba    host    refssm.kernels.* (Numba, CPU); operations without one run the oracle
    cupy     GPU     refssm.kernels.cuda.* (Numba CUDA kernels launched on CuPy arrays); the generic
                     operations run their oracle code on CuPy arrays (`array_module`)
    auto     host    numba if it imports, else numpy (the default for training). auto never picks
                     cupy: the CuPy path has not yet been run on a GPU (README, "GPU").

An operation is *generic* when its oracle is written against the array module alone (matrix products,
FFTs, pointwise maps, reductions): it runs on every backend, on numpy or CuPy arrays, and a fast path is
optional (LayerNorm and GLU have fused Numba ones). A non-generic operation (a loop in time, or the SSM
kernel's sums) without a fast path on the chosen backend falls back to its oracle with a one-time
warning naming it; on cupy that oracle runs on the host (the SSM kernels take host parameters, and
refssm.models.layers moves K to the GPU), so every non-generic operation that sees device activations
has a cupy fast path. The models do not know
which backend runs: their arrays live on the backend's device (`to_device`, `to_host`), and code that
creates arrays asks `array_module(x)` for numpy or cupy.
"""

import importlib
import sys
import warnings

import numpy as np

BACKENDS = ("auto", "numpy", "numba", "cupy")
DTYPES = ("float32", "float64")

# op -> (oracle "module:forward", {backend: "module:forward"}, generic). The VJP of "module:f" is
# "module:f_vjp" (with a trailing "_fwd" dropped: ssm.kernel_fwd -> ssm.kernel_vjp).
OPS = {
    # dense ops (refssm.ops): BLAS, FFT and pointwise, the same code on every backend
    "linear": ("refssm.ops:linear", {}, True),
    "channel_affine": ("refssm.ops:channel_affine", {}, True),
    "threshold_scale": ("refssm.ops:threshold_scale", {}, True),
    "skip": ("refssm.ops:skip", {}, True),
    "add": ("refssm.ops:add", {}, True),
    "gelu": ("refssm.ops:gelu", {}, True),
    "batch_norm": ("refssm.ops:batch_norm", {}, True),
    "dropout": ("refssm.ops:dropout", {}, True),
    "embedding": ("refssm.ops:embedding", {}, True),
    "masked_mean": ("refssm.ops:masked_mean", {}, True),
    "cross_entropy": ("refssm.ops:cross_entropy", {}, True),
    "mse": ("refssm.ops:mse", {}, True),
    "take_steps": ("refssm.ops:take_steps", {}, True),
    # memory-bound ops fused into one pass (Numba); on cupy their generic oracles
    "layer_norm": ("refssm.ops:layer_norm", {"numba": "refssm.kernels.ops:layer_norm"}, True),
    "glu": ("refssm.ops:glu", {"numba": "refssm.kernels.ops:glu"}, True),
    # SSM kernel and convolutions (refssm.ssm)
    "ssm_kernel": ("refssm.ssm:kernel_fwd", {"numba": "refssm.kernels.ssm:kernel_fwd",
                                             "cupy": "refssm.kernels.cuda.ssm:kernel_fwd"}, False),
    "fssm_kernel": ("refssm.fractional:fssm_conv_kernel_fwd",
                    {"numba": "refssm.kernels.fractional:fssm_conv_kernel_fwd",
                     "cupy": "refssm.kernels.cuda.fractional:fssm_conv_kernel_fwd"}, False),
    "causal_conv": ("refssm.ssm:causal_conv_fwd", {}, True),
    "bidirectional_conv": ("refssm.ssm:bidirectional_conv_fwd", {}, True),
    # spiking nonlinearities (refssm.spiking)
    "spike": ("refssm.spiking:spike", {}, True),
    "gsu": ("refssm.spiking:gsu", {}, True),
    "lif": ("refssm.spiking:lif", {"numba": "refssm.kernels.spiking:lif",
                                   "cupy": "refssm.kernels.cuda.spiking:lif"}, False),
    "refractory": ("refssm.spiking:refractory", {"numba": "refssm.kernels.spiking:refractory",
                                                 "cupy": "refssm.kernels.cuda.spiking:refractory"}, False),
    "sample": ("refssm.spiking:sample", {}, True),
    "sdn_lif": ("refssm.spiking:sdn_lif", {}, True),
}

_resolved = {}
_warned = set()


def _numba_available():
    try:
        import numba  # noqa: F401
    except ImportError:                                                        # pragma: no cover
        return False
    return True


def cupy_unavailable():
    """Why backend "cupy" cannot run here (one line), or None when it can: CuPy imports and sees a GPU."""
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as e:
        return (f"CuPy does not import ({e}); install the build for your CUDA, e.g. pip install 'refssm[gpu]' "
                f"(cupy-cuda13x, CUDA 13)")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:                                                       # CUDA driver/runtime errors
        return f"CuPy sees no GPU ({type(e).__name__}: {e})"
    return None if count > 0 else "CuPy sees no GPU (0 CUDA devices)"


def resolve(backend):
    """The concrete backend for `backend` ("auto" -> "numba" when Numba imports, else "numpy"; "cupy" only
    where CuPy imports and sees a GPU, else a ValueError saying why)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if backend == "auto":
        return "numba" if _numba_available() else "numpy"
    if backend == "cupy":
        why = cupy_unavailable()
        if why is not None:
            raise ValueError(f"backend 'cupy' cannot run here: {why}")
    return backend


# --------------------------------------------------------------------------------------------------
# Devices: host (numpy) or GPU (cupy)
# --------------------------------------------------------------------------------------------------

def is_device_array(a):
    """Whether `a` is a CuPy array (recognised by its type's module, so that CuPy is never imported here
    for a host array)."""
    return type(a).__module__.partition(".")[0] == "cupy"


def array_module(*arrays):
    """The array module of `arrays`: cupy if any of them is a CuPy array, else numpy. Code that runs on
    every backend creates its arrays with it (xp.zeros, xp.empty, ...) and uses `fft_module` and
    `special_module` for what numpy leaves to scipy."""
    return sys.modules["cupy"] if any(is_device_array(a) for a in arrays) else np


def fft_module(xp):
    """scipy.fft for numpy, cupyx.scipy.fft for cupy (the same rfft/irfft/next_fast_len signatures)."""
    return importlib.import_module("scipy.fft" if xp is np else "cupyx.scipy.fft")


def special_module(xp):
    """scipy.special for numpy, cupyx.scipy.special for cupy (erf, expit, log_softmax)."""
    return importlib.import_module("scipy.special" if xp is np else "cupyx.scipy.special")


def device_of(backend):
    """"gpu" for backend "cupy", else "host"."""
    return "gpu" if backend == "cupy" else "host"


def synchronize(backend):
    """Wait until the device of the concrete `backend` has done the work queued on it (a no-op on the host):
    what a timer must do before reading the clock."""
    if device_of(backend) == "gpu":
        importlib.import_module("cupy").cuda.Device().synchronize()


def to_device(a, backend):
    """`a` on the device of the concrete `backend`: a CuPy array for "cupy" (copied from the host if needed),
    else `a` as a numpy array (copied to the host if it was a CuPy array)."""
    if backend == "cupy":
        return importlib.import_module("cupy").asarray(a)
    return to_host(a)


def to_host(a):
    """`a` as a numpy array (a CuPy array is copied from the GPU; a numpy array is returned as it is)."""
    return a.get() if is_device_array(a) else np.asarray(a)


def _load(target):
    module, name = target.split(":")
    mod = importlib.import_module(module)
    return getattr(mod, name), getattr(mod, name.removesuffix("_fwd") + "_vjp")


def op(name, backend="auto"):
    """(forward, vjp) of operation `name` on `backend`: its fast path there, else its oracle (with a
    one-time RuntimeWarning when a non-generic operation has no fast path on that backend)."""
    key = (name, backend)
    if key not in _resolved:
        if name not in OPS:
            raise ValueError(f"op must be one of {', '.join(map(repr, OPS))}; got {name!r}")
        oracle, fast, generic = OPS[name]
        concrete = resolve(backend)
        target = fast.get(concrete)
        if target is None:
            target = oracle
            if concrete != "numpy" and not generic and (name, concrete) not in _warned:
                _warned.add((name, concrete))
                warnings.warn(f"refssm: op {name!r} has no {concrete} fast path; running its oracle",
                              RuntimeWarning, stacklevel=2)
        _resolved[key] = _load(target)
    return _resolved[key]


def oracle(name):
    """(forward, vjp) of the oracle of operation `name`: what every fast path must match."""
    if name not in OPS:
        raise ValueError(f"op must be one of {', '.join(map(repr, OPS))}; got {name!r}")
    return _load(OPS[name][0])


def check_dtype(dtype):
    """The numpy dtype for `dtype` ("float32" or "float64"; a numpy dtype or type is accepted)."""
    name = np.dtype(dtype).name if isinstance(dtype, (np.dtype, type)) else dtype
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(repr, DTYPES))}; got {dtype!r}")
    return np.dtype(name)
