"""A CuPy test double, so that CI (no GPU) runs refssm's CuPy code paths. Tests only: never imported by refssm.

The fixture `fake_cupy` installs modules cupy, cupyx, cupyx.scipy, cupyx.scipy.fft and cupyx.scipy.special into
sys.modules and returns the fake cupy. Its `ndarray` is a numpy.ndarray subclass whose class lives in module
"cupy" (refssm.backend.array_module recognises it; Numba's CUDA simulator accepts it), computed by numpy, with
CuPy's rules where they catch GPU bugs:
  - a host numpy array of ndim >= 1 mixed with a device array, in a ufunc, a numpy function or a cupy function,
    raises TypeError (0-d arrays, numpy and Python scalars are allowed); so do np.asarray / np.array /
    np.ascontiguousarray of a device array (CuPy refuses implicit device -> host copies; `.get()` is explicit);
    cupy.asarray / cupy.array of a host array is the (explicit) transfer;
  - reductions return 0-d device arrays, not numpy scalars;
  - only names real CuPy 13 has exist (allowlists below), and np.f(device array) works only where cupy.f exists.
Facts relied on (CuPy docs and tracker):
  - cupy.put_along_axis is not in CuPy 13: added by https://github.com/cupy/cupy/pull/8199 (opened 2024-02,
    after v13.0.0); now in https://docs.cupy.dev/en/stable/reference/generated/cupy.put_along_axis.html
  - ufunc.at exists for add, maximum, minimum only (https://github.com/cupy/cupy/pull/7077, CuPy v12; np.add.at
    dispatches to it since v12.1, https://github.com/cupy/cupy/issues/7561); cupyx.scatter_add is add.at
    (https://docs.cupy.dev/en/stable/reference/generated/cupyx.scatter_add.html)
  - cupyx.scipy.fft.rfft/irfft(x, n=None, axis=-1, norm=None, overwrite_x=False, *, plan=None): no `workers`
    (https://docs.cupy.dev/en/v8.6.0/reference/generated/cupyx.scipy.fft.rfft.html); next_fast_len(target, real)
  - cupyx.scipy.special.erf, expit (ufuncs) and log_softmax(x, axis=None)
    (https://docs.cupy.dev/en/v13.2.0/reference/generated/cupyx.scipy.special.erf.html,
    https://docs.cupy.dev/en/stable/reference/generated/cupyx.scipy.special.expit.html,
    https://docs.cupy.dev/en/latest/reference/generated/cupyx.scipy.special.log_softmax.html)
  - module-level names: https://docs.cupy.dev/en/latest/reference/comparison.html
"""

import sys
import types

import numpy as np
import pytest
import scipy.fft
import scipy.special

_asarray, _array, _ascontiguousarray = np.asarray, np.array, np.ascontiguousarray
TO_HOST = []          # bytes of every device -> host copy (.get(), float(), bool(), int(), item()), for tests

UFUNCS = """add subtract multiply divide true_divide floor_divide negative power remainder mod absolute sign exp exp2
    expm1 log log2 log10 log1p sqrt square reciprocal sin cos tan arcsin arccos arctan arctan2 hypot sinh cosh tanh
    greater greater_equal less less_equal equal not_equal logical_and logical_or logical_xor logical_not maximum
    minimum fmax fmin isfinite isinf isnan floor ceil trunc rint conjugate matmul bitwise_and bitwise_or invert
    signbit copysign logaddexp""".split()
AT_UFUNCS = {"add", "maximum", "minimum"}                  # ufunc.at in CuPy (PR 7077)
FUNCTIONS = """asnumpy empty empty_like zeros zeros_like ones ones_like full full_like arange linspace eye identity
    reshape ravel transpose moveaxis swapaxes expand_dims squeeze broadcast_to broadcast_arrays concatenate stack
    split array_split append tile repeat flip roll atleast_1d atleast_2d where clip pad sum prod mean var std max
    min amax amin argmax argmin all any cumsum einsum dot tensordot inner outer take take_along_axis unravel_index
    ix_ nonzero count_nonzero sort argsort result_type iscomplexobj isrealobj real imag allclose array_equal
    isclose shape ndim size copy copyto abs conj around nan_to_num""".split()
TRANSFERS = "array asarray asanyarray ascontiguousarray".split()    # accept host arrays: the copy to the device
TYPES = """dtype float16 float32 float64 complex64 complex128 int8 int16 int32 int64 uint8 uint32 uint64 intp bool_
    newaxis pi e inf nan""".split()


class ndarray(np.ndarray):
    """A device array (numpy memory, CuPy's rules)."""

    __module__ = "cupy"

    def get(self, stream=None):
        TO_HOST.append(self.nbytes)
        return _array(self.view(np.ndarray))            # a host copy

    def _scalar(self, kind):
        TO_HOST.append(self.nbytes)                      # CuPy copies the value to the host (a sync)
        return kind(self.view(np.ndarray))

    def __float__(self):
        return self._scalar(float)

    def __int__(self):
        return self._scalar(int)

    def __bool__(self):
        return self._scalar(bool)

    def item(self, *args):
        TO_HOST.append(self.itemsize)
        return self.view(np.ndarray).item(*args)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if ufunc.__name__ not in UFUNCS or (method == "at" and ufunc.__name__ not in AT_UFUNCS):
            return NotImplemented
        _reject_host((inputs, out))
        if out is not None:
            kwargs["out"] = _unwrap(out)
        return _wrap(getattr(ufunc, method)(*_unwrap(inputs), **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        name = func.__name__
        if getattr(np, name, None) is not func or name not in FUNCTIONS + TRANSFERS:
            return NotImplemented                        # numpy raises TypeError: cupy has no such function
        return getattr(cupy, name)(*args, **kwargs)


def _is_host(a):
    return isinstance(a, np.ndarray) and not isinstance(a, ndarray) and a.ndim >= 1


def _reject_host(args):
    for a in args if isinstance(args, (tuple, list)) else (args,):
        if isinstance(a, (tuple, list)):
            _reject_host(a)
        elif _is_host(a):
            raise TypeError(f"Unsupported type {type(a)} (a host numpy array mixed with cupy arrays)")


def _unwrap(a):
    if isinstance(a, (tuple, list)):
        return type(a)(_unwrap(x) for x in a)
    return a.view(np.ndarray) if isinstance(a, ndarray) else a


def _wrap(a):
    if isinstance(a, (tuple, list)):
        return type(a)(_wrap(x) for x in a)
    if isinstance(a, (np.ndarray, np.generic)):
        return _asarray(a).view(ndarray)                 # CuPy returns 0-d arrays, not scalars
    return a


def _device_function(f, transfer=False):
    def g(*args, **kwargs):
        if not transfer:
            _reject_host((args, tuple(kwargs.values())))
        return _wrap(f(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))
    g.__name__ = f.__name__
    return g


class _Ufunc:
    def __init__(self, f):
        self._f, self.__name__ = f, f.__name__

    def __call__(self, *args, **kwargs):
        return _device_function(self._f)(*args, **kwargs)

    def __getattr__(self, method):
        if method not in ("reduce", "accumulate", "outer", "reduceat", "at") or \
                method == "at" and self.__name__ not in AT_UFUNCS:
            raise AttributeError(f"cupy.ufunc {self.__name__!r} has no method {method!r}")
        return _device_function(getattr(self._f, method))


def _module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


def _fft(f):
    def g(x, n=None, axis=-1, norm=None, overwrite_x=False, *, plan=None):
        if not isinstance(x, ndarray):
            raise TypeError(f"cupyx.scipy.fft takes a cupy.ndarray, got {type(x)}")
        return _wrap(f(_unwrap(x), n, axis, norm, overwrite_x))
    return g


def _log_softmax(x, axis=None):
    return _device_function(scipy.special.log_softmax)(x, axis=axis)


cupy = _module("cupy", ndarray=ndarray, get_array_module=lambda *a: cupy if any(isinstance(x, ndarray) for x in a)
               else np,
               cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
                                          Device=lambda device=None: types.SimpleNamespace(synchronize=lambda: None)),
               get_default_memory_pool=lambda: types.SimpleNamespace(total_bytes=lambda: 0),
               **{k: _Ufunc(getattr(np, k)) for k in UFUNCS},
               **{k: _device_function(getattr(np, k)) for k in FUNCTIONS if k != "asnumpy"},
               **{k: _device_function(getattr(np, k), transfer=True) for k in TRANSFERS},
               **{k: getattr(np, k) for k in TYPES})
cupy.asnumpy = lambda a, stream=None: a.get() if isinstance(a, ndarray) else _asarray(a)
fft = _module("cupyx.scipy.fft", rfft=_fft(scipy.fft.rfft), irfft=_fft(scipy.fft.irfft),
              next_fast_len=lambda target, real=False: scipy.fft.next_fast_len(target, real))
special = _module("cupyx.scipy.special", erf=_Ufunc(scipy.special.erf), expit=_Ufunc(scipy.special.expit),
                  log_softmax=_log_softmax)
cupyx_scipy = _module("cupyx.scipy", fft=fft, special=special)
cupyx = _module("cupyx", scipy=cupyx_scipy, scatter_add=lambda a, slices, value: cupy.add.at(a, slices, value))
MODULES = {"cupy": cupy, "cupyx": cupyx, "cupyx.scipy": cupyx_scipy, "cupyx.scipy.fft": fft,
           "cupyx.scipy.special": special}


def _no_implicit_copy(f):
    def g(a, *args, **kwargs):
        if (isinstance(a, ndarray) or isinstance(a, (list, tuple)) and any(isinstance(x, ndarray) for x in a)) \
                and not kwargs.get("subok"):
            raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct "
                            "a NumPy array explicitly.")
        return f(a, *args, **kwargs)
    return g


@pytest.fixture
def fake_cupy(monkeypatch):
    """Install the fake CuPy (and make numpy refuse implicit device -> host copies); -> the fake cupy module."""
    for name, module in MODULES.items():
        monkeypatch.setitem(sys.modules, name, module)
    for name, f in (("asarray", _asarray), ("array", _array), ("ascontiguousarray", _ascontiguousarray)):
        monkeypatch.setattr(np, name, _no_implicit_copy(f))
    return cupy
