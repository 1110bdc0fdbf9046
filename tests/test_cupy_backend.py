"""backend "cupy" end to end, on a GPU or without one.

Under pytest's default NUMBA_ENABLE_CUDASIM=1 (tests/conftest.py; CI) the CuPy test double (tests/fake_cupy.py)
stands in for CuPy and Numba's CUDA simulator runs the CUDA kernels (refssm.kernels.cuda) on the CPU. On a GPU
machine, `NUMBA_ENABLE_CUDASIM=0 pytest tests/test_cupy_backend.py` runs the same tests on real CuPy arrays
and the real kernels (they skip, saying why, where CuPy or a GPU is missing).

What this checks: every model's loss, gradients, outputs and BatchNorm state on backend "cupy" equal the
numpy oracle's (float64; the CUDA kernels sum in another order, so to 1e-9 relative, not bit for bit); the
results stay on the device (no silent copy to the host, no host array mixed into device arithmetic: the
double refuses both, as CuPy does); a training run on cupy checkpoints host arrays, and a run saved on
cupy resumes on numpy (and the reverse) to the same parameters as a run that never changed backend. What
the double cannot check: CuPy's own kernels, the CUDA compiler, the GPU (the same tests on a GPU do).
"""

import numpy as np
import pytest

import fake_cupy

from refssm import backend, bench, checkpoint, cli, models, train
from refssm.kernels.cuda import SIMULATED



@pytest.fixture
def cupy_module(request):
    """The fake CuPy under the simulator; real CuPy on a GPU (NUMBA_ENABLE_CUDASIM=0), else a skip saying why."""
    if SIMULATED:
        return request.getfixturevalue("fake_cupy")
    why = backend.cupy_unavailable()
    if why is not None:
        pytest.skip(f"backend 'cupy' cannot run here: {why}")
    import cupy
    return cupy

B, L, D_IN = 2, 12, 3
CASES = [("spikingssm", {}), ("spikingssm", dict(reset="soft", lif_gradient="bptt", surrogate="atan", norm="layer")),
         ("spikingssm", dict(lif_gradient="bptt_detach_reset", dropout=0.2)),
         ("binary_s4d", {}), ("binary_s4d", dict(mixing="gsu", bidirectional=False)),
         ("spike_ssm", {}), ("pspikessm", {}), ("longspike", {}), ("longspike", dict(frac_method="soe_decoupled")),
         ("spikingssm", dict(neuron="sdn"))]


def _on_device(a):
    return type(a).__module__.partition(".")[0] == "cupy"


def _setup(model, opts, seed=0):
    rng = np.random.default_rng(seed)
    cfg = models.make_config(model, d_input=D_IN, n_classes=3, H=4, N=4, n_layers=2, dtype="float64",
                             backend="numpy", **opts)
    p, state = models.init_params(cfg, rng)
    p = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in p.items()}
    x, y = rng.standard_normal((B, L, D_IN)), rng.integers(0, 3, B)
    mask = np.ones((B, L), bool)
    mask[1, -3:] = False
    aux = train._aux(cfg) or None
    return cfg, p, state, x, y, mask, aux


@pytest.mark.parametrize("model, opts", CASES)
def test_loss_and_gradients_on_cupy_equal_the_oracle(model, opts, cupy_module):
    cfg, p, state, x, y, mask, aux = _setup(model, opts)
    ref = models.loss_and_grads(p, state, cfg, x, y, mask, np.random.default_rng(7), aux=aux)
    loss, grads, new_state, out, stats = models.loss_and_grads(p, state, dict(cfg, backend="cupy"), x, y, mask,
                                                               np.random.default_rng(7), aux=aux)
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, ref[0], rtol=1e-9)
    assert _on_device(out)
    np.testing.assert_allclose(out.get(), ref[3], rtol=1e-9, atol=1e-12)
    for name, g in grads.items():
        assert _on_device(g) and g.dtype == np.float64, name
        scale = max(np.abs(ref[1][name]).max(), 1e-6)
        np.testing.assert_allclose(g.get(), ref[1][name], rtol=1e-7, atol=1e-9 * scale, err_msg=name)
    for name, v in new_state.items():
        assert _on_device(v), name
        np.testing.assert_allclose(v.get(), ref[2][name], rtol=1e-9, err_msg=name)
    assert [s["spikes"] for s in stats] == [s["spikes"] for s in ref[4]]      # the same spikes, counted


def test_float32_on_cupy_follows_float64(cupy_module):
    cfg, p, state, x, y, mask, aux = _setup("spikingssm", {})
    ref = models.loss_and_grads(p, state, cfg, x, y, mask, np.random.default_rng(7))
    cfg32 = dict(cfg, backend="cupy", dtype="float32")
    loss, grads, _, out, _ = models.loss_and_grads(p, state, cfg32, x, y, mask, np.random.default_rng(7))
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())
    np.testing.assert_allclose(loss, ref[0], rtol=1e-5)
    for name, g in grads.items():
        scale = np.abs(ref[1][name]).max()
        np.testing.assert_allclose(g.get(), ref[1][name], atol=2e-3 * scale + 1e-7, err_msg=name)


def _run(tmp_path, name, backend_name, **kw):
    return train.run("spikingssm", str(tmp_path / name), log=lambda *a: None, progress=_Quiet(),
                     model_overrides=dict(H=4, N=4, n_layers=1, dtype="float64", backend=backend_name),
                     task="digits", epochs=1, batch_size=256, seed=3, **kw)


def _resume(tmp_path, name, backend_name, **kw):
    return train.run(None, str(tmp_path / name), resume=True, log=lambda *a: None, progress=_Quiet(),
                     model_overrides=dict(backend=backend_name), **kw)


class _Quiet:
    def update(self, *a):
        pass

    def clear(self):
        pass


def test_training_saves_on_cupy_and_resumes_on_numpy_and_back(tmp_path, cupy_module):
    """Checkpoints hold host arrays whatever the backend; a run moves between backends with --resume --backend
    and ends (validation, best.h5, test evaluation on cupy) where a run that never moved ends."""
    ref = _run(tmp_path, "numpy", "numpy")                                          # 5 steps, then evaluation
    _run(tmp_path, "mixed", "cupy", stop_after=2)                                  # 2 steps on the "GPU"
    saved = checkpoint.load(tmp_path / "mixed" / train.CKPT_NAME)
    assert all(type(v) is np.ndarray for v in saved.params.values())
    assert all(type(v) is np.ndarray for v in saved.opt_state["m"].values())
    _resume(tmp_path, "mixed", "numpy", stop_after=3)                              # step 3 on the host
    mixed = _resume(tmp_path, "mixed", "cupy")                                     # the rest back on the "GPU"
    assert mixed["steps"] == ref["steps"] == 5
    for key in ("test_acc", "test_loss", "spike_rate"):
        np.testing.assert_allclose(mixed[key], ref[key], rtol=1e-8, err_msg=key)
    last, ref_last = (checkpoint.load(tmp_path / n / train.CKPT_NAME) for n in ("mixed", "numpy"))
    for name, v in ref_last.params.items():
        np.testing.assert_allclose(last.params[name], v, rtol=1e-8, atol=1e-12, err_msg=name)


def test_cupy_refuses_data_parallel_runs(tmp_path, cupy_module):
    class TwoRanks(train.distributed.Local):
        size = 2
    with pytest.raises(ValueError, match="one GPU"):
        train.run("spikingssm", str(tmp_path / "r"), log=lambda *a: None, progress=_Quiet(), comm=TwoRanks(),
                  model_overrides=dict(H=4, N=4, n_layers=1, backend="cupy"), task="digits", epochs=1)


def test_cupy_without_cupy_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)                    # import cupy -> ImportError
    with pytest.raises(ValueError, match=r"backend 'cupy' cannot run here: CuPy does not import.*refssm\[gpu\]"):
        backend.resolve("cupy")
    cfg, p, state, x, y, mask, _ = _setup("spikingssm", {})
    with pytest.raises(ValueError, match="backend 'cupy' cannot run here"):
        models.forward(p, state, dict(cfg, backend="cupy"), x, mask, np.random.default_rng(0), False)


def test_auto_never_picks_the_gpu(cupy_module):
    """The CuPy path has not run on a GPU yet: auto stays on the host even where CuPy sees one."""
    assert backend.resolve("auto") in ("numba", "numpy")


def test_every_non_generic_op_has_a_cupy_fast_path():
    """On cupy a non-generic oracle would run on the host: each one that sees device activations has a kernel."""
    missing = [name for name, (_, fast, generic) in backend.OPS.items() if not generic and "cupy" not in fast]
    assert missing == []


def test_the_gpu_benchmark_step_runs_on_cupy(cupy_module):
    """python -m refssm.bench train-step --backend cupy (what validation/bench_gpu.py times), at a tiny size."""
    peak = []
    seconds = bench.train_step_seconds(2, 4, 4, 16, 1, 1, backend="cupy", peak=peak)
    assert seconds > 0 and len(peak) == 1 and peak[0] >= 0


def test_a_gpu_checkpoint_evaluates_on_the_cpu(tmp_path, cupy_module, capsys):
    _run(tmp_path, "gpu", "cupy", stop_after=1)
    assert cli.main(["eval", str(tmp_path / "gpu" / train.CKPT_NAME), "--backend", "numpy"]) == 0
    assert "split=test" in capsys.readouterr().out


HEAD_CASES = [("spikingssm", "sequence"), ("pspikessm", "value"), ("binary_s4d", "retrieval"), ("longspike", "lm"),
              ("spike_ssm", "lm")]


@pytest.mark.parametrize("model, head", HEAD_CASES)
def test_every_head_on_cupy_equals_the_oracle(model, head, cupy_module):
    """Token inputs (embedding's scatter-add), LRA's dual encoder, per-step readouts, regression, LM."""
    rng = np.random.default_rng(1)
    kw = dict(vocab_size=6) if head in ("lm", "retrieval") else dict(d_input=2)
    opts = dict(norm="layer", bidirectional=False) if head == "lm" else {}
    cfg = models.make_config(model, n_classes=4, H=4, N=4, n_layers=2, dtype="float64", backend="numpy", head=head,
                             n_targets=3 if head == "sequence" else 1, **kw, **opts)
    p, state = models.init_params(cfg, rng)
    # off the symmetric init: with P-SpikeSSM's out.beta = 0, the sampler's input is GELU(0) = 0 up to rounding
    # wherever no spike has arrived yet, and its straight-through gradient 1[0 <= p <= 1] flips with that
    # rounding (the FFT's noise differs between the two backends' kernels)
    p = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in p.items()}
    lead = (3, 2) if head == "retrieval" else (3,)
    x = rng.integers(1, 6, lead + (L,)) if "vocab_size" in kw else rng.standard_normal(lead + (L, 2))
    mask = np.ones(lead + (L,), bool)
    mask[0, ..., -2:] = False
    y = {"retrieval": rng.integers(0, 4, 3), "sequence": rng.integers(0, 4, (3, 3)), "value": rng.standard_normal(3),
         "lm": rng.integers(0, 6, (3, L))}[head]
    ref = models.loss_and_grads(p, state, cfg, x, y, mask, np.random.default_rng(2))
    loss, grads, _, out, _ = models.loss_and_grads(p, state, dict(cfg, backend="cupy"), x, y, mask,
                                                   np.random.default_rng(2))
    np.testing.assert_allclose(loss, ref[0], rtol=1e-9)
    np.testing.assert_allclose(out.get(), ref[3], rtol=1e-9, atol=1e-12)
    for name, g in grads.items():
        scale = max(np.abs(ref[1][name]).max(), 1e-6)
        np.testing.assert_allclose(g.get(), ref[1][name], rtol=1e-7, atol=1e-9 * scale, err_msg=name)


@pytest.mark.skipif(not SIMULATED, reason="counts the CuPy test double's device -> host copies")
@pytest.mark.parametrize("model", models.MODELS)
def test_a_training_step_copies_no_activations_to_the_host(model, cupy_module):
    """What a GPU step brings back to the host (the loss, spike counts, the SSM parameters for the kernel's
    discretisation, per-channel neuron parameters; for LongSpike's GL kernel with alpha <= 1, whose VJP runs
    on the host, dL/dK (H, L)) does not grow with the batch: no activation (B, H, L) makes the trip."""
    copied = {}
    for batch in (2, 8):
        rng = np.random.default_rng(0)
        cfg = models.make_config(model, d_input=2, n_classes=3, H=4, N=4, n_layers=2, backend="cupy")
        p, state = (train._on(t, "cupy") for t in models.init_params(cfg, rng))
        x, y = rng.standard_normal((batch, L, 2)), rng.integers(0, 3, batch)
        fake_cupy.TO_HOST.clear()
        models.loss_and_grads(p, state, cfg, x, y, None, rng)
        copied[batch] = sum(fake_cupy.TO_HOST)
    assert 0 < copied[2] == copied[8]
