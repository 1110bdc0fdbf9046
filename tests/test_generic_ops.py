"""The generic operations on CuPy arrays, through the CuPy test double (tests/fake_cupy.py): every generic op's
forward and VJP (refssm.backend.OPS entries flagged generic, plus layer_norm and glu), the surrogates, AdamW and
gradient clipping give on device arrays exactly what they give on numpy arrays (the double computes with
numpy), in the same dtype, as device arrays; none of them mixes host and device arrays or copies a device
array to the host implicitly (the double raises TypeError for both, as CuPy does).
"""

import contextlib

import numba
import numpy as np
from numba import cuda          # the CUDA simulator under pytest (tests/conftest.py sets NUMBA_ENABLE_CUDASIM)
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refssm import backend, ops, optim, sdn, spiking, ssm, surrogate
from refssm._checks import trusted

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = (np.float32, np.float64)
SG = surrogate.get("fast_sigmoid", fire_at_equality=False)


def on_device(cupy, obj):
    """obj with every numpy array (ndim >= 1) copied to the (fake) device."""
    if isinstance(obj, np.ndarray):
        return cupy.asarray(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(on_device(cupy, x) for x in obj)
    return obj


def assert_same(host, dev, where="output"):
    """dev (device arrays) holds exactly host (numpy arrays): same values, dtypes and shapes."""
    if isinstance(host, (tuple, list)):
        assert isinstance(dev, (tuple, list)) and len(dev) == len(host), where
        for i, (h, d) in enumerate(zip(host, dev)):
            assert_same(h, d, f"{where}[{i}]")
    elif isinstance(host, dict):
        assert host.keys() == dev.keys(), where
        for k in host:
            assert_same(host[k], dev[k], f"{where}[{k!r}]")
    elif isinstance(host, np.ndarray) and host.ndim:
        assert type(dev).__module__.startswith("cupy"), f"{where} is {type(dev)}, not a device array"
        d = dev.get()
        assert (d.dtype, d.shape) == (host.dtype, host.shape), f"{where}: {d.dtype}{d.shape} != {host.dtype}{host.shape}"
        np.testing.assert_array_equal(d, host, err_msg=where, strict=True)
    elif isinstance(host, (float, int, bool)) or host is None:
        assert type(dev) is type(host) and (dev == host or dev != dev and host != host), f"{where}: {dev!r} != {host!r}"
    else:                                                                    # numpy scalars and 0-d arrays
        d = dev.get() if type(dev).__module__.startswith("cupy") else np.asarray(dev)
        np.testing.assert_array_equal(d, np.asarray(host), err_msg=where)


# --------------------------------------------------------------------------------------------------
# Cases: name -> (forward, vjp, args) for numpy inputs drawn from rng
# --------------------------------------------------------------------------------------------------

def _normal(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _cases(rng, dtype, B, H, L):
    x, n = _normal(rng, (B, H, L), dtype), lambda *s: _normal(rng, s, dtype)
    mask = rng.random((B, L)) < 0.6
    mask[:, 0] = True
    return {
        "linear": (ops.linear, ops.linear_vjp, (x, n(H + 1, H), n(H + 1))),
        "linear_2d": (ops.linear, ops.linear_vjp, (x[..., 0], n(H + 1, H), n(H + 1))),
        "channel_affine": (ops.channel_affine, ops.channel_affine_vjp, (x, n(H), n(H))),
        "threshold_scale": (ops.threshold_scale, ops.threshold_scale_vjp, (x, n(H))),
        "skip": (ops.skip, ops.skip_vjp, (x, n(B, H, L), n(H))),
        "add": (ops.add, ops.add_vjp, (x, n(B, H, L))),
        "gelu": (ops.gelu, ops.gelu_vjp, (x,)),
        "glu": (ops.glu, ops.glu_vjp, (n(B, 2 * H, L), 1)),
        "layer_norm": (ops.layer_norm, ops.layer_norm_vjp, (x, n(H), n(H))),
        "batch_norm": (ops.batch_norm, ops.batch_norm_vjp,
                       (n(B, H, L + 1), n(H), n(H), n(H), np.abs(n(H)) + 0.5, True, 0.1)),
        "batch_norm_eval": (ops.batch_norm, ops.batch_norm_vjp, (x, n(H), n(H), n(H), np.abs(n(H)) + 0.5, False)),
        "dropout": (ops.dropout, ops.dropout_vjp, (x, 0.3, rng.random((B, H)), True)),
        "embedding": (ops.embedding, ops.embedding_vjp, (rng.integers(0, 3, (B, L)), n(3, H))),
        "masked_mean": (ops.masked_mean, ops.masked_mean_vjp, (x, mask)),
        "cross_entropy": (ops.cross_entropy, ops.cross_entropy_vjp, (x[..., 0], rng.integers(0, H, B))),
        "cross_entropy_seq": (ops.cross_entropy, ops.cross_entropy_vjp, (x, rng.integers(0, H, (B, L)), mask)),
        "mse": (ops.mse, ops.mse_vjp, (x[:, 0, 0], n(B))),
        "take_steps": (ops.take_steps, ops.take_steps_vjp, (x, rng.integers(0, L, (B, 3)))),
        "causal_conv": (ssm.causal_conv_fwd, ssm.causal_conv_vjp, (x, n(H, L))),
        "bidirectional_conv": (ssm.bidirectional_conv_fwd, ssm.bidirectional_conv_vjp, (x, n(H, L), n(1, L))),
        "spike": (spiking.spike, spiking.spike_vjp, (x, SG)),
        "gsu": (spiking.gsu, spiking.gsu_vjp, (x, n(H, H), n(H), n(H), n(H), SG)),
        "sample": (spiking.sample, spiking.sample_vjp,
                   (1.4 * x.clip(-1, 1) + 0.5, rng.random((B, H, L)).astype(dtype))),
        "sdn_lif": (spiking.sdn_lif, spiking.sdn_lif_vjp, (x, sdn.load(), SG)),
    }


def _run(fwd, vjp, args, gy=None):
    """(outputs, grads): the forward's outputs other than its ctx, and the VJP of cotangent gy (drawn from the
    first output when None) -> also returns gy."""
    out = fwd(*args)
    y, ctx, extra = out[0], out[1], out[2:]
    if gy is None:
        gy = 0.7 if isinstance(y, float) else np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype)
    return (y,) + tuple(extra), vjp(ctx, gy), gy


def test_every_generic_op_has_a_case():
    names = {k.removesuffix("_2d").removesuffix("_eval").removesuffix("_seq")
             for k in _cases(np.random.default_rng(0), np.float64, 2, 2, 2)}
    generic = {name for name, (_, _, is_generic) in backend.OPS.items() if is_generic} | {"layer_norm", "glu"}
    assert generic <= names, f"generic ops without a device test: {sorted(generic - names)}"


@pytest.mark.parametrize("name", sorted(_cases(np.random.default_rng(0), np.float64, 2, 2, 2)))
@pytest.mark.parametrize("validated", [False, True])
@SETTINGS
@given(dtype=st.sampled_from(DTYPES), B=st.integers(1, 3), H=st.integers(1, 4), L=st.integers(1, 9),
       seed=st.integers(0, 2**16))
def test_op_on_device_equals_op_on_host(fake_cupy, name, validated, dtype, B, H, L, seed):
    """validated: called as a user would (inputs checked at the boundary), else as the models call it
    (inside trusted(), inputs passed through)."""
    fwd, vjp, args = _cases(np.random.default_rng(seed), dtype, B, H, L)[name]
    with contextlib.nullcontext() if validated else trusted():
        host_out, host_grads, gy = _run(fwd, vjp, args)
        dev_out, dev_grads, _ = _run(fwd, vjp, on_device(fake_cupy, args), on_device(fake_cupy, gy))
    assert_same(host_out, dev_out, f"{name} forward")
    assert_same(host_grads, dev_grads, f"{name} vjp")


@pytest.mark.parametrize("name", ["dropout", "embedding", "masked_mean", "cross_entropy_seq", "take_steps"])
@pytest.mark.parametrize("validated", [False, True])
def test_host_side_inputs_move_to_the_device(fake_cupy, name, validated):
    """Integer and boolean inputs (tokens, labels, masks, indices) and dropout's uniforms may stay on the host
    with device activations: the op moves them to the device (an explicit transfer)."""
    fwd, vjp, args = _cases(np.random.default_rng(5), np.float32, 3, 4, 6)[name]
    floats = {i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.dtype.kind == "f"}
    floats -= {2} if name == "dropout" else set()                            # dropout's uniforms stay on the host
    with contextlib.nullcontext() if validated else trusted():
        host_out, host_grads, gy = _run(fwd, vjp, args)
        dev_args = [fake_cupy.asarray(a) if i in floats else a for i, a in enumerate(args)]
        dev_out, dev_grads, _ = _run(fwd, vjp, dev_args, on_device(fake_cupy, gy))
    assert_same(host_out, dev_out, f"{name} forward")
    assert_same(host_grads, dev_grads, f"{name} vjp")


@pytest.mark.parametrize("name", sorted(surrogate.SURROGATES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fire_at_equality", [True, False])
def test_surrogates_on_device(fake_cupy, name, dtype, fire_at_equality):
    sg = surrogate.get(name, fire_at_equality=fire_at_equality)
    z = np.concatenate([np.linspace(-2, 2, 41), [0.0, 1.0, -0.5, 0.5]]).astype(dtype).reshape(5, 9)
    for f in (sg.forward, sg.grad, sg.primitive):
        for mode in (trusted, contextlib.nullcontext):
            with mode():
                assert_same(f(z), f(fake_cupy.asarray(z)), f"{name}.{f.__name__}")


@pytest.mark.parametrize("shape", [(2, 3, 4), (3, 4), (1, 4), (3, 1), (4,), (1,), ()])
def test_two_sided_kernel_and_sum_to_shape_on_device(fake_cupy, shape):
    rng = np.random.default_rng(0)
    K_f, K_b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((1, 4)).astype(np.float32)
    assert_same(ssm.two_sided_kernel(K_f, K_b, 8), ssm.two_sided_kernel(*on_device(fake_cupy, (K_f, K_b)), 8))
    g = rng.standard_normal((2, 3, 4))
    host, dev = ssm.sum_to_shape(g, shape), ssm.sum_to_shape(fake_cupy.asarray(g), shape)
    assert dev.shape == shape and type(dev).__module__ == "cupy"
    np.testing.assert_array_equal(dev.get(), host)


def test_adamw_and_clipping_on_device(fake_cupy):
    rng = np.random.default_rng(3)
    params = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": rng.standard_normal(5)}
    grads = [{k: rng.standard_normal(p.shape).astype(p.dtype) for k, p in params.items()} for _ in range(2)]
    kw = dict(lr={"a": 1e-2, "b": 1e-3}, weight_decay=0.01)
    results = []
    for move in (lambda d: d, lambda d: {k: fake_cupy.asarray(v) for k, v in d.items()}):
        p, state = move(params), optim.adamw_init(move(params))
        for g in grads:
            g, total = optim.clip_grad_norm(move(g), 1.5)
            p, state = optim.adamw_step(p, g, state, **kw)
        results.append((p, state["m"], state["v"], state["step"], total))
    assert_same(*results)


# --------------------------------------------------------------------------------------------------
# The double itself: strict where CuPy is
# --------------------------------------------------------------------------------------------------

def test_fake_cupy_refuses_what_cupy_refuses(fake_cupy):
    d, h = fake_cupy.asarray(np.arange(6.0).reshape(2, 3)), np.ones(3)
    assert backend.array_module(d) is fake_cupy and backend.array_module(h) is np
    assert backend.resolve("cupy") == "cupy"                                 # getDeviceCount() == 1
    for mixing in (lambda: d + h, lambda: np.exp(d) * h, lambda: fake_cupy.exp(h), lambda: np.concatenate([d[0], h]),
                   lambda: fake_cupy.stack([d[0], h]), lambda: np.asarray(d), lambda: np.array(d),
                   lambda: np.put_along_axis(d, fake_cupy.zeros((2, 1), int), 0.0, axis=1),
                   lambda: np.multiply.at(d, 0, 2.0)):
        with pytest.raises(TypeError):
            mixing()
    with pytest.raises(TypeError, match="workers"):
        backend.fft_module(fake_cupy).rfft(d, 8, axis=-1, workers=2)
    assert not hasattr(fake_cupy, "put_along_axis") and not hasattr(fake_cupy.multiply, "at")
    for allowed in (d + 1.0, d * np.float32(2), d - np.array(1.0), np.sqrt(d), d.sum(), fake_cupy.zeros(3) + d[0]):
        assert type(allowed).__module__ == "cupy"
    host = d.get()
    assert type(host) is np.ndarray and np.shares_memory(host, d) is False and host.tolist() == d.tolist()


def test_fake_cupy_arrays_run_in_numbas_cuda_simulator(fake_cupy):
    if not numba.config.ENABLE_CUDASIM:
        pytest.skip("Numba's CUDA simulator is off (a real GPU run): the double is for the simulator")

    @cuda.jit
    def twice(a, out):
        i = cuda.grid(1)
        if i < a.size:
            out[i] = 2 * a[i]

    a, out = fake_cupy.arange(5.0), fake_cupy.empty(5)
    twice[1, 8](a, out)
    assert type(out).__module__ == "cupy" and out.get().tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_the_double_has_only_what_the_real_cupy_has():
    """Every name the double offers (module functions, ufunc.at, cupyx.scipy.fft / special) exists in the real
    CuPy, where one imports (the `gpu` extra; it imports without a GPU). The double allows less than CuPy 14
    (no put_along_axis, as in CuPy 13), never more."""
    import fake_cupy
    real = {name: pytest.importorskip(name) for name in fake_cupy.MODULES}
    for name, module in fake_cupy.MODULES.items():
        offered = [k for k in vars(module) if not k.startswith("_") and not isinstance(vars(module)[k],
                                                                                      type(fake_cupy))]
        missing = [k for k in offered if not hasattr(real[name], k)]
        assert missing == [], f"{name} lacks {missing}"
    assert all(hasattr(getattr(real["cupy"], k), "at") for k in fake_cupy.AT_UFUNCS)
