"""The one door for backends: which implementation of each differentiable operation runs, and in what dtype.

Every operation the models use is a pair of pure functions, `y, ctx = fwd(...)` and
`grads = vjp(ctx, g)` (the ctx carries what the forward computed, so the VJP recomputes nothing).
The table OPS below names, for each operation, its oracle (the numpy reference, checked against
closed forms and autograd) and its fast paths, one per backend, each tested against that oracle
(`tests/test_kernels_*.py`). A fast path's ctx is its own: pass it only to its own VJP.

    backend  fast paths
    numpy    none: every operation runs its oracle
    numba    refssm.kernels.* (Numba, CPU); operations without one run the oracle
    auto     numba if it imports, else numpy (the default for training)

An operation is *generic* when its oracle is written against the array module alone (matrix products,
FFTs, pointwise maps): it is the implementation on every backend and needs no fast path. A
non-generic operation (a loop in time, or a memory-bound chain that wants fusing) without a fast path
on the chosen backend falls back to its oracle with a one-time warning naming it. The CuPy issue adds
a "cupy" column to OPS (and an array module for the generic operations); nothing else in the models knows which backend runs.
"""

import importlib
import warnings

import numpy as np

BACKENDS = ("auto", "numpy", "numba")
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
    # memory-bound ops fused into one pass
    "layer_norm": ("refssm.ops:layer_norm", {"numba": "refssm.kernels.ops:layer_norm"}, False),
    "glu": ("refssm.ops:glu", {"numba": "refssm.kernels.ops:glu"}, False),
    # SSM kernel and convolutions (refssm.ssm)
    "ssm_kernel": ("refssm.ssm:kernel_fwd", {"numba": "refssm.kernels.ssm:kernel_fwd"}, False),
    "fssm_kernel": ("refssm.fractional:fssm_conv_kernel_fwd",
                    {"numba": "refssm.kernels.fractional:fssm_conv_kernel_fwd"}, False),
    "causal_conv": ("refssm.ssm:causal_conv_fwd", {}, True),
    "bidirectional_conv": ("refssm.ssm:bidirectional_conv_fwd", {}, True),
    # spiking nonlinearities (refssm.spiking)
    "spike": ("refssm.spiking:spike", {}, True),
    "gsu": ("refssm.spiking:gsu", {}, True),
    "lif": ("refssm.spiking:lif", {"numba": "refssm.kernels.spiking:lif"}, False),
    "refractory": ("refssm.spiking:refractory", {"numba": "refssm.kernels.spiking:refractory"}, False),
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


def resolve(backend):
    """The concrete backend for `backend` ("auto" -> "numba" when Numba imports, else "numpy")."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if backend == "auto":
        return "numba" if _numba_available() else "numpy"
    return backend


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
                warnings.warn(f"refssm: op {name!r} has no {concrete} fast path; running its numpy oracle",
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
