"""The five models give the same loss and gradients on every backend, and float32 training follows
float64 to a stated tolerance.

Backends: the numba backend swaps in the fast paths of refssm.backend.OPS (LIF, refractory/PMBC,
LayerNorm, GLU, the SSM and fractional kernels); each fast path matches its oracle (tests/test_kernels_*),
and here the whole network does: loss to 1e-10 relative, every gradient to 1e-8 relative (of that
parameter's largest gradient; the kernels sum in another order than the oracles), spikes exactly.

dtype: the same parameters cast to float32 give the float64 loss to 1e-5 relative and every gradient to
2e-3 of that parameter's largest float64 gradient, provided no spike flips between the two precisions
(a flip moves the loss by a step: the test asserts that the spike counts agree, so it compares like
with like). Measured on these cases the largest deviation is ~1e-5; 2e-3 leaves room for the
accumulated float32 roundings of deeper or longer runs.
"""

import numpy as np
import pytest

from refssm import models, sdn

B, L, D_IN, N_CLASSES = 3, 11, 2, 3

CASES = [
    ("binary_s4d", {}), ("binary_s4d", {"mixing": "gsu"}), ("binary_s4d", {"prenorm": True, "norm": "layer"}),
    ("spikingssm", {}), ("spikingssm", {"lif_gradient": "bptt", "prenorm": True, "norm": "layer"}),
    ("spikingssm", {"lif_gradient": "bptt_detach_reset", "reset": "soft", "tau": 0.5, "surrogate": "atan"}),
    ("spikingssm", {"neuron": "sdn"}),
    ("spike_ssm", {}), ("spike_ssm", {"bidirectional": True, "prenorm": True, "norm": "layer"}),
    ("pspikessm", {}), ("pspikessm", {"norm": None}),
    ("longspike", {}), ("longspike", {"frac_method": "gl_explicit"}), ("longspike", {"frac_method": "soe_decoupled"}),
    ("longspike", {"alpha": 1.3, "init": "real", "prenorm": True, "norm": "layer"}),
]


def _run(model, opts, backend, dtype, seed=0):
    rng = np.random.default_rng(seed)
    cfg = models.make_config(model, d_input=D_IN, n_classes=N_CLASSES, H=5, N=6, n_layers=2, backend=backend,
                             dtype=dtype, **opts)
    p, state = models.init_params(models.make_config(model, d_input=D_IN, n_classes=N_CLASSES, H=5, N=6,
                                                     n_layers=2, dtype="float64", **opts), rng)
    p = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in p.items()}
    x = 2.0 * rng.standard_normal((B, L, D_IN))
    y = rng.integers(0, N_CLASSES, B)
    mask = np.ones((B, L), bool)
    mask[0, -3:] = False
    aux = {"sdn": sdn.load()} if opts.get("neuron") == "sdn" else None
    loss, grads, _, logits, stats = models.loss_and_grads(p, state, cfg, x, y, mask, np.random.default_rng(7),
                                                          aux=aux)
    return loss, grads, logits, [s["spikes"] for s in stats[:-1]]


@pytest.mark.parametrize("model, opts", CASES, ids=[f"{m}-{o}" for m, o in CASES])
def test_numba_backend_equals_numpy(model, opts):
    loss_np, g_np, logits_np, spikes_np = _run(model, opts, "numpy", "float64")
    loss_nb, g_nb, logits_nb, spikes_nb = _run(model, opts, "numba", "float64")
    assert spikes_nb == spikes_np and sum(spikes_np) > 0
    np.testing.assert_allclose(loss_nb, loss_np, rtol=1e-10)
    np.testing.assert_allclose(logits_nb, logits_np, rtol=1e-9, atol=1e-12)
    assert set(g_nb) == set(g_np)
    for k in g_np:
        np.testing.assert_allclose(g_nb[k], g_np[k], rtol=1e-8, atol=1e-8 * _scale(g_np, k), err_msg=k)


@pytest.mark.parametrize("model, opts", CASES, ids=[f"{m}-{o}" for m, o in CASES])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_float32_follows_float64(model, opts, backend):
    loss64, g64, _, spikes64 = _run(model, opts, backend, "float64")
    loss32, g32, logits32, spikes32 = _run(model, opts, backend, "float32")
    assert logits32.dtype == np.float32
    assert spikes32 == spikes64, "a spike flipped between precisions: the comparison would not be like with like"
    np.testing.assert_allclose(loss32, loss64, rtol=1e-5)
    for k in g64:
        assert g32[k].dtype == np.float32, k
        np.testing.assert_allclose(g32[k], g64[k], rtol=0, atol=2e-3 * _scale(g64, k), err_msg=k)


def _scale(grads, k):
    """The scale of parameter k's gradient: its largest entry, but at least 1e-4 of the largest gradient of
    any parameter (some gradients are exactly zero in exact arithmetic, e.g. the encoder bias under a
    following BatchNorm, and hold only rounding noise)."""
    return max(np.abs(grads[k]).max(), 1e-4 * max(np.abs(g).max() for g in grads.values()))
