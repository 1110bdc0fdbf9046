"""refssm.backend (the registry of oracles and fast paths) and validation at the public boundary."""

import warnings

import numpy as np
import pytest

from refssm import _checks, backend, models


def test_auto_resolves_to_numba_when_it_imports():
    pytest.importorskip("numba")
    assert backend.resolve("auto") == "numba"
    assert backend.resolve("numpy") == "numpy"


def test_unknown_backend_op_and_dtype_are_value_errors():
    with pytest.raises(ValueError, match="backend must be one of"):
        backend.resolve("cuda")
    with pytest.raises(ValueError, match="op must be one of"):
        backend.op("nope")
    with pytest.raises(ValueError, match="dtype must be one of"):
        backend.check_dtype("float16")
    with pytest.raises(ValueError, match="backend must be one of"):
        models.make_config("spikingssm", d_input=1, backend="gpu")


def test_every_registered_operation_loads_with_its_vjp(fake_cupy):
    """(the CuPy double lets backend "cupy" resolve without a GPU: this loads the cupy fast paths' modules)"""
    for name, (oracle, fast, generic) in backend.OPS.items():
        fwd, vjp = backend.oracle(name)
        assert callable(fwd) and callable(vjp), name
        for b in fast:
            fwd_b, vjp_b = backend.op(name, b)
            assert fwd_b is not fwd, f"{name}: the {b} fast path is the oracle itself"


def test_numpy_backend_runs_every_oracle():
    for name in backend.OPS:
        assert backend.op(name, "numpy") == backend.oracle(name)


def test_missing_fast_path_falls_back_loudly_once(monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setitem(backend.OPS, "slow_op", ("refssm.ops:glu", {}, False))   # non-generic, no fast path
    monkeypatch.setattr(backend, "_resolved", {})
    monkeypatch.setattr(backend, "_warned", set())
    with pytest.warns(RuntimeWarning, match="'slow_op' has no numba fast path"):
        fwd, _ = backend.op("slow_op", "numba")
    assert (fwd, _) == backend.oracle("glu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend.op("slow_op", "auto")                                          # resolved already: silent


def test_generic_ops_need_no_fast_path(monkeypatch):
    monkeypatch.setattr(backend, "_resolved", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend.op("linear", "numba") == backend.oracle("linear")


def _checked_calls(monkeypatch, n_layers):
    """Number of validations (as_array calls outside trusted()) in one models.loss_and_grads."""
    count = [0]
    real = _checks.as_array

    def counting(*args, **kwargs):
        if not _checks._TRUSTED.get():
            count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(_checks, "as_array", counting)
    for mod in ("refssm.ops", "refssm.ssm", "refssm.neurons", "refssm.spiking", "refssm.models",
                "refssm.surrogate", "refssm.fractional", "refssm.optim"):
        module = __import__(mod, fromlist=["_"])
        if hasattr(module, "as_array"):
            monkeypatch.setattr(module, "as_array", counting)
    cfg = models.make_config("spike_ssm", d_input=2, H=4, N=4, n_layers=n_layers, prenorm=True, norm="layer",
                             backend="numpy")
    rng = np.random.default_rng(0)
    p, state = models.init_params(cfg, rng)
    models.loss_and_grads(p, state, cfg, rng.standard_normal((2, 5, 2)), np.array([0, 1]), None, rng)
    return count[0]


def test_validation_happens_once_at_the_boundary(monkeypatch):
    """The inner operations of a training step run inside trusted(): the number of validations does
    not grow with the number of layers (only the boundary's: inputs, labels, the loss's cotangent)."""
    one, four = _checked_calls(monkeypatch, 1), _checked_calls(monkeypatch, 4)
    assert one == four
    assert one <= 16                                  # measured 11: x, mask, the loss and its cotangents


def test_bad_model_input_names_the_argument():
    cfg = models.make_config("spikingssm", d_input=2, H=4, N=4, n_layers=1)
    p, state = models.init_params(cfg, np.random.default_rng(0))
    x = np.zeros((2, 5, 2))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="x must be finite"):
        models.forward(p, state, cfg, np.full((2, 5, 2), np.nan), None, rng, True)
    with pytest.raises(ValueError, match=r"x must have shape \(B, L, d_input = 2\)"):
        models.forward(p, state, cfg, np.zeros((2, 5, 3)), None, rng, True)
    with pytest.raises(ValueError, match=r"params\['dec.W'\] must have shape"):
        models.forward(dict(p, **{"dec.W": np.zeros((3, 3))}), state, cfg, x, None, rng, True)
    with pytest.raises(ValueError, match="mask must be a boolean array"):
        models.forward(p, state, cfg, x, np.ones((2, 4), bool), rng, True)
    with pytest.raises(ValueError, match="params is missing 'layers.0.D'"):
        models.forward({k: v for k, v in p.items() if k != "layers.0.D"}, state, cfg, x, None, rng, True)
