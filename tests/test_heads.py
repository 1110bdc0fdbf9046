"""The task heads of refssm.models (class, retrieval, sequence, value, lm): gradients against central
differences downstream of the spikes, the LM's causality, the retrieval features, and the refusals."""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from refssm import models
from refssm.models import _pair_features, _pair_features_vjp

B, L = 3, 9


def _setup(model, head, seed=0, **opts):
    rng = np.random.default_rng(seed)
    kw = dict(vocab_size=6) if head in ("lm", "retrieval", "sequence") else dict(d_input=2)
    opts = dict(dict(backend="numpy", dtype="float64", H=4, N=4, n_layers=2, head=head), **opts)
    if head == "lm":
        opts.setdefault("norm", "layer")
        opts.setdefault("bidirectional", False)
    if head == "sequence":
        opts["n_targets"] = 3
    cfg = models.make_config(model, n_classes=4, **kw, **opts)
    p, state = models.init_params(cfg, rng)
    p = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in p.items()}
    lead = (B, 2) if head == "retrieval" else (B,)
    x = rng.integers(1, 6, lead + (L,)) if "vocab_size" in kw else rng.standard_normal(lead + (L, 2))
    mask = np.ones(lead + (L,), bool)
    mask[0, ..., -2:] = False
    y = {"class": rng.integers(0, 4, B), "retrieval": rng.integers(0, 4, B), "sequence": rng.integers(0, 4, (B, 3)),
         "value": rng.standard_normal(B), "lm": rng.integers(0, 6, (B, L))}[head]
    return cfg, p, state, x, y, mask


def _loss(p, state, cfg, x, y, mask):
    return models.loss_and_grads(p, state, cfg, x, y, mask, np.random.default_rng(3))


DOWNSTREAM = {"class": ["dec.W", "dec.b"], "retrieval": ["dec.W", "dec.b", "mlp.W", "mlp.b"],
              "sequence": ["dec.W", "dec.b"], "value": ["dec.W", "dec.b"], "lm": ["dec.W", "dec.b"]}


@pytest.mark.parametrize("head", models.HEADS)
@pytest.mark.parametrize("model", models.MODELS)
def test_head_gradient_matches_central_differences(model, head, eps=1e-6):
    """Parameters downstream of every spike (the decoder, the retrieval MLP, the last layer's norm when it
    follows the block) are smooth parameters of the loss: central differences give their gradient."""
    opts = {"bidirectional": False} if model == "binary_s4d" and head == "lm" else {}
    cfg, p, state, x, y, mask = _setup(model, head, **opts)
    value, grads, _, out, _ = _loss(p, state, cfg, x, y, mask)
    expected_shape = {"class": (B, 4), "retrieval": (B, 4), "sequence": (B, 4, 3), "value": (B,),
                      "lm": (B, 6, L)}[head]
    assert out.shape == expected_shape
    for name in DOWNSTREAM[head]:
        fd = np.zeros_like(p[name])
        for idx in np.ndindex(p[name].shape):
            for sign in (1, -1):
                q = dict(p, **{name: p[name].copy()})
                q[name][idx] += sign * eps
                fd[idx] += sign * _loss(q, state, cfg, x, y, mask)[0] / (2 * eps)
        assert np.abs(fd).max() > 1e-6, f"{name}: zero gradient, the check would be vacuous"
        np.testing.assert_allclose(grads[name], fd, rtol=1e-6, atol=1e-9 * max(1.0, np.abs(fd).max()), err_msg=name)


@pytest.mark.parametrize("model", models.MODELS)
def test_lm_is_causal(model):
    """Changing the tokens after step t leaves the next-token logits at steps <= t unchanged."""
    cfg, p, state, x, y, mask = _setup(model, "lm", bidirectional=False)
    mask = np.ones_like(mask)
    out = models.forward(p, state, cfg, x, mask, np.random.default_rng(1), False)[0]
    x2 = x.copy()
    x2[:, 5:] = (x2[:, 5:] % 5) + 1                                              # other tokens from step 5 on
    out2 = models.forward(p, state, cfg, x2, mask, np.random.default_rng(1), False)[0]
    np.testing.assert_array_equal(out2[..., :5], out[..., :5])
    assert not np.allclose(out2[..., 5:], out[..., 5:])


def test_pair_features_and_vjp():
    rng = np.random.default_rng(0)
    pooled = rng.standard_normal((4, 3))                                         # u: rows 0-1, v: rows 2-3
    f, ctx = _pair_features(pooled)
    u, v = pooled[:2], pooled[2:]
    np.testing.assert_array_equal(f, np.concatenate([u, v, u * v, u - v], axis=1))
    g = rng.standard_normal(f.shape)
    ref = autograd.grad(lambda q: anp.sum(g * anp.concatenate([q[:2], q[2:], q[:2] * q[2:], q[:2] - q[2:]], axis=1)))
    np.testing.assert_allclose(_pair_features_vjp(ctx, g), ref(pooled), rtol=1e-14)


def test_retrieval_encodes_both_sequences_with_shared_weights():
    """Swapping the two documents swaps u and v: [u, v, u v, u - v] -> [v, u, u v, v - u]."""
    cfg, p, state, x, y, mask = _setup("spikingssm", "retrieval", norm="layer")
    t_out = models.forward(p, state, cfg, x, mask, np.random.default_rng(1), False)
    swapped = models.forward(p, state, cfg, x[:, ::-1], mask[:, ::-1], np.random.default_rng(1), False)
    assert not np.allclose(t_out[0], swapped[0])
    same = models.forward(p, state, cfg, x[:, [0, 0]], mask[:, [0, 0]], np.random.default_rng(1), False)[0]
    same_swapped = models.forward(p, state, cfg, x[:, [0, 0]][:, ::-1], mask[:, [0, 0]], np.random.default_rng(1),
                                  False)[0]
    np.testing.assert_array_equal(same, same_swapped)


def test_lm_refuses_what_would_see_the_future():
    with pytest.raises(ValueError, match="head 'lm' needs a causal kernel"):
        models.make_config("binary_s4d", vocab_size=5, head="lm", norm="layer")
    with pytest.raises(ValueError, match="head 'lm' cannot use norm 'batch'"):
        models.make_config("spikingssm", vocab_size=5, head="lm")
    with pytest.raises(ValueError, match="give vocab_size"):
        models.make_config("spikingssm", d_input=2, head="lm", norm="layer")
