"""Streaming inference (refssm.models.stream): step by step equals the parallel forward at every step,
for every model and option that has a causal form; spikes exactly, float64 states to 1e-10."""

import numpy as np
import pytest

from refssm import models, sdn
from refssm.models import stream

CASES = [("spikingssm", {}), ("spikingssm", {"reset": "soft", "tau": 0.5, "surrogate": "atan"}),
         ("spikingssm", {"neuron": "sdn"}), ("spikingssm", {"prenorm": True, "norm": "layer"}),
         ("spike_ssm", {}), ("pspikessm", {}), ("pspikessm", {"norm": "layer", "prenorm": False}),
         ("binary_s4d", {"bidirectional": False}), ("binary_s4d", {"bidirectional": False, "mixing": "gsu"}),
         ("binary_s4d", {"bidirectional": False, "postnorm_bug": True}),
         ("longspike", {}), ("longspike", {"frac_method": "gl_explicit"}), ("longspike", {"alpha": 1.3, "init": "real"}),
         ("longspike", {"frac_method": "soe_decoupled"}), ("spikingssm", {"method": "bilinear", "init": "inv"})]


def _spikes(p, st, cfg, x, aux):
    """Spike counts per layer of the parallel forward (evaluation mode)."""
    stats = models.forward(p, st, cfg, x, None, np.random.default_rng(4), False, aux)[3]
    return [(s["spikes"], s["sites"]) for s in stats[:-1]]


@pytest.mark.parametrize("model, opts", CASES, ids=[f"{m}-{o}" for m, o in CASES])
@pytest.mark.parametrize("tokens", [False, True])
def test_step_equals_parallel_forward(model, opts, tokens):
    kw = dict(vocab_size=7) if tokens else dict(d_input=2)
    cfg = models.make_config(model, H=6, N=6, n_layers=2, dtype="float64", backend="numpy", **kw, **opts)
    rng = np.random.default_rng(0)
    p, st = models.init_params(cfg, rng)
    p = {k: v + 0.05 * rng.standard_normal(v.shape) for k, v in p.items()}
    st = {k: v + 0.1 for k, v in st.items()}
    x = rng.integers(0, 7, (3, 40)) if tokens else 2 * rng.standard_normal((3, 40, 2))
    aux = {"sdn": sdn.load()} if opts.get("neuron") == "sdn" else None
    for n, sites in _spikes(p, st, cfg, x, aux):
        assert 0 < n < sites, "a silent or saturated layer would make the check vacuous"
    h = models.hidden(p, st, cfg, x, None, np.random.default_rng(4), aux)
    carry = stream.init_carry(cfg, 3, np.random.default_rng(4))
    for i in range(x.shape[1]):
        h_t, carry = stream.step(p, st, cfg, carry, x[:, i], aux)
        np.testing.assert_allclose(h_t, h[..., i], rtol=0, atol=1e-10 * np.abs(h).max(), err_msg=f"step {i}")
    assert carry["t"] == x.shape[1]


def test_step_carries_state():
    """A carry reset in the middle gives other outputs: the recurrence really holds the past."""
    cfg = models.make_config("spike_ssm", d_input=2, H=6, N=6, n_layers=1, dtype="float64", backend="numpy")
    p, st = models.init_params(cfg, np.random.default_rng(0))
    x = 2 * np.random.default_rng(1).standard_normal((2, 20, 2))
    h = stream.stream(p, st, cfg, x, np.random.default_rng(0))
    carry = stream.init_carry(cfg, 2, np.random.default_rng(0))
    late = [stream.step(p, st, cfg, carry, x[:, i])[0] for i in range(10, 20)]
    assert not np.allclose(np.stack(late, -1), h[..., 10:])


def test_lm_step_logits_equal_parallel_logits():
    cfg = models.make_config("spikingssm", vocab_size=9, head="lm", norm="layer", prenorm=True, H=6, N=6,
                             n_layers=2, dtype="float64", backend="numpy")
    p, st = models.init_params(cfg, np.random.default_rng(0))
    x = np.random.default_rng(1).integers(1, 9, (2, 15))
    logits = models.forward(p, st, cfg, x, None, np.random.default_rng(2), False)[0]      # (B, V, L)
    carry = stream.init_carry(cfg, 2, np.random.default_rng(2))
    for i in range(15):
        h_t, carry = stream.step(p, st, cfg, carry, x[:, i])
        np.testing.assert_allclose(stream.lm_logits(p, h_t), logits[..., i], rtol=1e-10, atol=1e-12)


def test_what_cannot_stream_is_refused():
    cfg = models.make_config("binary_s4d", d_input=2, H=4, N=4)
    with pytest.raises(ValueError, match="bidirectional must be False"):
        stream.init_carry(cfg, 2, np.random.default_rng(0))
    cfg = models.make_config("spikingssm", vocab_size=4, head="retrieval", H=4, N=4)
    with pytest.raises(ValueError, match="retrieval"):
        stream.init_carry(cfg, 2, np.random.default_rng(0))
