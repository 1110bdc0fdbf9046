"""The five seed models: one residual network, five choices of SSM kernel, neuron and mixing.

    encoder -> n_layers x [norm? -> core -> dropout -> + residual -> norm?] -> final norm? -> masked
    mean over time -> linear decoder -> logits

Each model is one file in this package that declares its layer's parameters (refssm.models.layers.Param:
shape, initialiser, optimizer group, weight decay) and writes its core z -> o forward on a tape
(refssm.tape); the backward follows from the operations' VJPs. The table (reference notes):

    model        core (z -> o), z (B, H, L)                                                   file
    binary_s4d   y = K*z + D z (S4D-Inv, bilinear); s = H(y); o = GLU(W s) or GSU(y)           binary_s4d.py
    spikingssm   y = K*z + D z (S4D-Lin, ZOH); s = LIF(y / exp(ln_vth)); o = GLU(W s)           spikingssm.py
    spike_ssm    y = K*z + D z (S4D-Lin, ZOH); s = refractory neuron by PMBC; o = GLU(W s)      spike_ssm.py
    pspikessm    s_in ~ Bern(z); v = GELU(K*s_in + D s_in); s_out ~ Bern(alpha v + beta);
                 o = GELU(W s_out + b)                                                          pspikessm.py
    longspike    y = K_frac*z + D z (fractional-order SSM); LIF and GLU as SpikingSSM          longspike.py

Parameters are a flat dict name -> array ("layers.0.log_dt", ...) in the training dtype (cfg["dtype"],
float32 by default; float64 for gradient checks); complex SSM parameters are stored as real and
imaginary parts. Batch-norm running statistics live in a separate `state` dict. cfg["backend"] picks
the implementation of every operation (refssm.backend; "auto" by default) and the device the arrays live
on: `forward` moves inputs, parameters and state there (host numpy arrays for numpy, numba and auto; CuPy
arrays on the GPU for cupy; a no-op where they are there already), and everything computed follows the
parameters' device. Outputs and gradients stay on that device (backend.to_host brings them back).

Energy convention (the papers'): real x real multiply-accumulates cost 4.6 pJ (MAC), spike (or
ternary) x real accumulates 0.9 pJ (AC, counted as non-zero inputs x fan-out). The SSM is counted
as its recurrence, N real MACs per channel per step (N/2 complex modes), whatever its input.
"""

import numpy as np

from refssm import backend, ops
from refssm._checks import as_array, choice, in_range, positive_int, trusted
from refssm.models import binary_s4d, layers, longspike, pspikessm, spike_ssm, spikingssm
from refssm.tape import Tape

MODULES = {"binary_s4d": binary_s4d, "spikingssm": spikingssm, "spike_ssm": spike_ssm, "pspikessm": pspikessm,
           "longspike": longspike}
MODELS = tuple(MODULES)
E_MAC_PJ, E_AC_PJ = 4.6, 0.9

COMMON = dict(H=64, N=64, n_layers=2, dropout=0.0, prenorm=False, norm="batch", postnorm_bug=False,
              bidirectional=False, dt_min=1e-3, dt_max=1e-1, init="lin", method="zoh", backend="auto",
              dtype="float32", head="class", n_targets=1)
# head -> what the network outputs and the loss it trains with (the task's target decides the head):
#   class      (B, n_classes) logits of the masked mean over time; cross-entropy
#   retrieval  (B, n_classes) logits of LRA's dual encoder: both sequences through the same network,
#              pooled to u, v, then MLP([u, v, u * v, u - v]) (Linear 4H -> H, GELU, Linear); cross-entropy
#   sequence   (B, n_classes, n_targets) logits at the last n_targets valid steps (copy task); cross-entropy
#   value      (B,) a real number read out at the last valid step (adding problem); mean squared error
#   lm         (B, vocab_size, L) next-token logits at every step (causal kernels only); cross-entropy over
#              the valid steps; perplexity exp(loss), bits per token loss / ln 2
HEADS = ("class", "retrieval", "sequence", "value", "lm")
MODEL_DEFAULTS = {name: module.DEFAULTS for name, module in MODULES.items()}


def make_config(model, d_input=None, n_classes=10, vocab_size=None, **overrides):
    """The model's configuration: COMMON, then MODEL_DEFAULTS[model], then `overrides`.

    Exactly one of d_input (float inputs (B, L, d_input)) and vocab_size (tokens (B, L)) is given.
    """
    choice("model", model, MODELS)
    if (d_input is None) == (vocab_size is None):
        raise ValueError("give exactly one of d_input (float inputs) and vocab_size (token inputs)")
    cfg = dict(COMMON, **MODEL_DEFAULTS[model], model=model, d_input=d_input, vocab_size=vocab_size,
               n_classes=n_classes)
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ValueError(f"unknown configuration keys for model {model!r}: {sorted(unknown)}; "
                         f"allowed: {sorted(set(cfg) - {'model', 'd_input', 'vocab_size', 'n_classes'})}")
    cfg.update(overrides)
    positive_int("H", cfg["H"])
    positive_int("N", cfg["N"], minimum=2)
    if cfg["N"] % 2:
        raise ValueError(f"N must be even (N/2 conjugate-pair modes), got {cfg['N']}")
    positive_int("n_layers", cfg["n_layers"])
    choice("head", cfg["head"], HEADS)
    positive_int("n_targets", cfg["n_targets"])
    if cfg["head"] == "value":
        cfg["n_classes"] = 1                                                   # one real output
    elif cfg["head"] == "lm":
        if vocab_size is None:
            raise ValueError("head 'lm' predicts tokens: give vocab_size (token inputs), not d_input")
        if cfg["bidirectional"]:
            raise ValueError("head 'lm' needs a causal kernel: bidirectional must be False (a two-sided kernel "
                             "sees the tokens it is asked to predict)")
        if cfg["norm"] == "batch":
            raise ValueError("head 'lm' cannot use norm 'batch': its training statistics over time leak later "
                             "tokens into each step's prediction; use norm 'layer' (the papers' LM setting) or None")
        cfg["n_classes"] = vocab_size
    else:
        positive_int("n_classes", cfg["n_classes"], minimum=2)
    if d_input is not None:
        positive_int("d_input", d_input)
    else:
        positive_int("vocab_size", vocab_size)
    in_range("dropout", cfg["dropout"], 0, 1, hi_open=True)
    in_range("dt_min", cfg["dt_min"], 0, None, lo_open=True)
    in_range("dt_max", cfg["dt_max"], cfg["dt_min"], None)
    choice("norm", cfg["norm"], ("batch", "layer", None))
    choice("backend", cfg["backend"], backend.BACKENDS)
    cfg["dtype"] = backend.check_dtype(cfg["dtype"]).name
    choice("init", cfg["init"], ("lin", "inv", "real", "legs"))
    choice("method", cfg["method"], ("zoh", "bilinear", "euler"))
    MODULES[model].check(cfg)
    return cfg


def upgrade_config(cfg):
    """A configuration saved by an earlier refssm (before dtype, reset, surrogate existed), completed with
    the values those versions used: float64, and the model's defaults for the other new keys."""
    cfg = dict(cfg)
    cfg.setdefault("dtype", "float64")
    for k, v in dict(COMMON, **MODEL_DEFAULTS[cfg["model"]]).items():
        cfg.setdefault(k, v)
    return cfg


def surrogate_of(cfg):
    """The spike function of the model (its forward Heaviside convention and surrogate derivative)."""
    return MODULES[cfg["model"]].spike_function(cfg)


# --------------------------------------------------------------------------------------------------
# Parameters: declared once
# --------------------------------------------------------------------------------------------------

def declare(cfg):
    """{name: Param} of every parameter of the network, in initialisation order."""
    H = cfg["H"]
    decl = (layers.linear("enc.", cfg["d_input"], H) if cfg["vocab_size"] is None else
            {"enc.E": layers.Param((cfg["vocab_size"], H), lambda rng: rng.standard_normal((cfg["vocab_size"], H)))})
    for i in range(cfg["n_layers"]):
        pre = f"layers.{i}."
        if cfg["norm"] is not None:
            decl.update(layers.norm(pre + "norm.", H))
        decl.update({pre + k: v for k, v in MODULES[cfg["model"]].layer_params(cfg).items()})
    if cfg["prenorm"] and cfg["norm"] is not None:
        decl.update(layers.norm("final_norm.", H))
    if cfg["head"] == "retrieval":
        decl.update(layers.linear("mlp.", 4 * H, H))
    decl.update(layers.linear("dec.", H, cfg["n_classes"]))
    return decl


def init_params(cfg, rng):
    """Parameters (flat dict) and batch-norm state (flat dict) for `cfg`, drawn from `rng` in the
    declaration order, in cfg["dtype"]."""
    dtype = np.dtype(cfg["dtype"])
    params = {}
    for name, d in declare(cfg).items():
        value = np.asarray(d.init(rng), dtype=np.float64)
        if value.shape != tuple(d.shape):
            raise AssertionError(f"{name}: initialiser gave shape {value.shape}, declared {d.shape}")
        params[name] = value.astype(dtype)
    state = {}
    if cfg["norm"] is not None:
        for i in range(cfg["n_layers"]):
            state.update(layers.norm_state(f"layers.{i}.norm.", cfg))
        if cfg["prenorm"]:
            state.update(layers.norm_state("final_norm.", cfg))
    return params, {k: v.astype(dtype) for k, v in state.items()}


def optimizer_groups(cfg):
    """{name: (group, weight_decay_on)} from the declarations: group "ssm" (lr min(lr, ssm_lr)) or "default"."""
    return {name: (d.group, d.decay) for name, d in declare(cfg).items()}


# --------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------

def _check_inputs(p, state, cfg, x, mask):
    """Validation at the public boundary: inputs, mask and every declared parameter's shape (on the host);
    then everything on the device of cfg["backend"], parameters and state in the training dtype."""
    dtype = np.dtype(cfg["dtype"])
    x = backend.to_host(x)
    mask = None if mask is None else backend.to_host(mask)
    lead = 2 if cfg["head"] == "retrieval" else 1                             # (B, 2, L...) for pairs
    if cfg["vocab_size"] is None:
        x = as_array("x", x, ndim=lead + 2).astype(dtype, copy=False)
        if x.shape[-1] != cfg["d_input"]:
            raise ValueError(f"x must have shape ({'B, 2' if lead == 2 else 'B'}, L, d_input = {cfg['d_input']}), "
                             f"got {x.shape}")
    else:
        x = np.asarray(x)
        if x.ndim != lead + 1 or not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"x must be an integer token array ({'B, 2' if lead == 2 else 'B'}, L), "
                             f"got {x.dtype} of shape {x.shape}")
        if x.size:
            in_range("x", x, 0, cfg["vocab_size"] - 1)
    if lead == 2 and x.shape[1] != 2:
        raise ValueError(f"x must hold two sequences per example for head 'retrieval', got shape {x.shape}")
    steps = x.shape[:lead + 1]
    if min(steps) < 1:
        raise ValueError(f"x must hold B >= 1 sequences of L >= 1 steps, got shape {x.shape}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != steps:
            raise ValueError(f"mask must be a boolean array of shape {steps}, got {mask.dtype} {mask.shape}")
        if not mask.any(axis=-1).all():
            raise ValueError("mask must mark at least 1 valid step in every row, got a row with none")
    if cfg["head"] == "sequence" and (mask if mask is not None else np.ones(steps, bool)).sum(-1).min() < cfg["n_targets"]:
        raise ValueError(f"every sequence must have at least n_targets = {cfg['n_targets']} valid steps")
    for name, d in declare(cfg).items():
        if name not in p:
            raise ValueError(f"params is missing {name!r} (declared for model {cfg['model']!r})")
        if np.shape(p[name]) != tuple(d.shape):
            raise ValueError(f"params[{name!r}] must have shape {tuple(d.shape)}, got {np.shape(p[name])}")
    where = backend.resolve(cfg["backend"])
    p = {k: backend.to_device(v, where).astype(dtype, copy=False) for k, v in p.items()}
    state = {k: backend.to_device(v, where).astype(dtype, copy=False) for k, v in state.items()}
    return p, state, backend.to_device(x, where), None if mask is None else backend.to_device(mask, where)


def _embed(E, tokens):
    """ops.embedding with the table first, the tape's order (differentiable arguments first)."""
    return ops.embedding(tokens, E)


def _pair_features(pooled):
    """(2B, H) pooled encodings of both sequences -> (B, 4H) [u, v, u * v, u - v] (LRA retrieval)."""
    xp = backend.array_module(pooled)
    u, v = xp.split(pooled, 2)
    return xp.concatenate([u, v, u * v, u - v], axis=1), (u, v)


def _pair_features_vjp(ctx, g):
    u, v = ctx
    xp = backend.array_module(g)
    gu_, gv_, guv, gd = xp.split(g, 4, axis=1)
    return xp.concatenate([gu_ + guv * v + gd, gv_ + guv * u - gd])


def _squeeze(y):
    """(B, 1, 1) -> (B,): the value head's single output."""
    return y[:, 0, 0], y.shape


def _squeeze_vjp(shape, g):
    return g.reshape(shape)


def _readout_steps(cfg, mask, B, L, xp):
    """(B, K) indices of the steps a head reads: the last valid step (value), the last n_targets (sequence)."""
    last = (mask.sum(axis=1) if mask is not None else xp.full(B, L)) - 1           # (B,)
    K = 1 if cfg["head"] == "value" else cfg["n_targets"]
    return last[:, None] - xp.arange(K - 1, -1, -1)[None, :]


def network(t, cfg, x, mask, env):
    """Encoder and residual blocks on the tape: x -> h (Var (B, H, L)) and per-layer stats."""
    core = MODULES[cfg["model"]].core
    if cfg["vocab_size"] is None:
        h = t.op("linear", t.input(x.transpose(0, 2, 1)), t.param("enc.W"), t.param("enc.b"))  # (B, H, L)
    else:
        h = t.call(_embed, ops.embedding_vjp, t.param("enc.E"), x)
    stats = []
    for i in range(cfg["n_layers"]):
        pre = f"layers.{i}."
        z = h
        if cfg["prenorm"] and cfg["norm"] is not None:
            z = layers.norm_layer(t, cfg, pre + "norm.", z, env)
        o, st = core(t, cfg, pre, z, env)
        h = t.op("add", h, layers.dropout(t, cfg, pre + "dropout", o, env))
        if not cfg["prenorm"] and cfg["norm"] is not None and not cfg["postnorm_bug"]:
            h = layers.norm_layer(t, cfg, pre + "norm.", h, env)
        stats.append(st)
    if cfg["prenorm"] and cfg["norm"] is not None:
        h = layers.norm_layer(t, cfg, "final_norm.", h, env)
    return h, stats


def head(t, cfg, h, mask):
    """The task's head on the tape (see HEADS): h (B, H, L) -> outputs."""
    dec = (t.param("dec.W"), t.param("dec.b"))
    B, _, L = h.shape
    if cfg["head"] in ("class", "retrieval"):
        pooled = t.op("masked_mean", h, mask)                                  # (B, H)
        if cfg["head"] == "retrieval":
            pair = t.call(_pair_features, _pair_features_vjp, pooled)          # (B/2, 4H)
            pooled = t.op("gelu", t.op("linear", pair, t.param("mlp.W"), t.param("mlp.b")))
        return t.op("linear", pooled, *dec)
    if cfg["head"] == "lm":
        return t.op("linear", h, *dec)                                         # (B, V, L)
    read = t.op("take_steps", h, _readout_steps(cfg, mask, B, L, backend.array_module(h.value)))  # (B, H, K)
    out = t.op("linear", read, *dec)                                           # (B, C, K)
    return t.call(_squeeze, _squeeze_vjp, out) if cfg["head"] == "value" else out


def _environment(cfg, state, x, rng, train, aux, example_ids):
    """What the layers read besides their parameters: mode, BatchNorm statistics, extras, and the noise
    of one forward call (one key drawn from rng, streams per example: layers.Noise)."""
    choice("train", train, (True, False))
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    ids = np.arange(x.shape[0]) if example_ids is None else np.asarray(example_ids)
    if ids.shape != (x.shape[0],) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"example_ids must be ({x.shape[0]},) integers, one per example, got {ids.dtype} {ids.shape}")
    if cfg["head"] == "retrieval":                                             # second documents: other noise
        ids = np.concatenate([2 * ids, 2 * ids + 1])
    aux = aux or {}
    return dict(train=train, state=state, new_state=dict(state), aux=aux, noise=layers.Noise(rng.integers(2**63), ids),
                allreduce=aux.get("allreduce"))                                # data parallel: layers.norm_layer


def forward(p, state, cfg, x, mask, rng, train, aux=None, example_ids=None):
    """The network's outputs (see HEADS), e.g. logits (B, n_classes) for classification.

    x: (B, L, d_input) float or (B, L) int tokens ((B, 2, L, ...) for head "retrieval"); mask (B, L)
    bool (valid steps; (B, 2, L) for pairs), or None. rng: numpy Generator; one key is drawn from it per
    call for the noise of dropout and stochastic spikes, which is then derived per example from
    example_ids ((B,) integers, default 0..B-1; layers.Noise). train: batch statistics and dropout on.
    aux: optional fixed extras: {"sdn": SDN weights} for neuron "sdn"; {"allreduce": f}, f summing an array
    over processes, for BatchNorm statistics synchronised across data-parallel ranks (refssm.distributed).
    Returns (outputs, cache, new_state, stats): cache is what `backward` needs (the tape), stats a list,
    per layer, of dict(spikes, sites, ac, mac) and a last entry for encoder + decoder MACs.
    """
    p, state, x, mask = _check_inputs(p, state, cfg, x, mask)
    env = _environment(cfg, state, x, rng, train, aux, example_ids)
    if cfg["head"] == "retrieval":                                             # both sequences, one batch
        xp = backend.array_module(x)
        x = xp.concatenate([x[:, 0], x[:, 1]])
        mask = None if mask is None else xp.concatenate([mask[:, 0], mask[:, 1]])
    with trusted():
        t = Tape(p, cfg["backend"])
        h, stats = network(t, cfg, x, mask, env)
        out = head(t, cfg, h, mask)
    B, H, L = h.shape
    enc_macs = 0 if cfg["vocab_size"] is not None else B * L * H * cfg["d_input"]
    dec_macs = {"lm": L, "sequence": cfg["n_targets"]}.get(cfg["head"], 1) * B * H * cfg["n_classes"]
    if cfg["head"] == "retrieval":
        dec_macs = B // 2 * (4 * H * H + H * cfg["n_classes"])
    stats.append(dict(spikes=0.0, sites=0.0, ac=0.0, mac=float(enc_macs + dec_macs)))
    return out.value, (t, out, p), env["new_state"], stats


def hidden(p, state, cfg, x, mask, rng, aux=None, example_ids=None):
    """The hidden states h (B, H, L) after the final norm, in evaluation mode, by the parallel forward:
    what models.stream.step computes one step at a time."""
    p, state, x, mask = _check_inputs(p, state, cfg, x, mask)
    env = _environment(cfg, state, x, rng, False, aux, example_ids)
    with trusted():
        h, _ = network(Tape(p, cfg["backend"]), cfg, x, mask, env)
    return h.value


def backward(p, cfg, cache, g_out):
    """Gradients of all parameters (dict like p, in the training dtype) given dL/d(outputs). Consumes the cache."""
    t, out, p_used = cache
    g_out = as_array("g_out", g_out)
    if g_out.shape != out.shape:
        raise ValueError(f"g_out must have the outputs' shape {out.shape}, got {g_out.shape}")
    g_out = backend.array_module(out.value).asarray(g_out).astype(out.value.dtype, copy=False)  # outputs' device
    with trusted():
        grads = t.backward(out, g_out)
    # parameters the output does not depend on (the discarded post-norm of postnorm_bug) get zeros
    return {name: grads[name] if name in grads else backend.array_module(p_used[name]).zeros_like(p_used[name])
            for name in declare(cfg)}


def loss(cfg, outputs, y, mask=None):
    """The head's training loss (see HEADS) -> (loss float, ctx for loss_vjp). mask: for "lm", the
    valid steps (B, L) of the targets y (B, L). Targets and mask are moved to the outputs' device."""
    xp = backend.array_module(outputs)
    y, mask = xp.asarray(y), None if mask is None else xp.asarray(mask)
    if cfg["head"] == "value":
        return ops.mse(outputs, y)
    return ops.cross_entropy(outputs, y, mask if cfg["head"] == "lm" else None)


def loss_vjp(cfg, ctx):
    """dL/d(outputs) of `loss`."""
    return ops.mse_vjp(ctx) if cfg["head"] == "value" else ops.cross_entropy_vjp(ctx)


def loss_and_grads(p, state, cfg, x, y, mask, rng, train=True, aux=None, example_ids=None):
    """The head's loss, gradients, new BN state, outputs and per-layer stats for one batch."""
    outputs, cache, new_state, stats = forward(p, state, cfg, x, mask, rng, train, aux, example_ids)
    value, ctx = loss(cfg, outputs, y, mask)
    grads = backward(p, cfg, cache, loss_vjp(cfg, ctx))
    return value, grads, new_state, outputs, stats


def energy_uJ(stats):
    """Energy estimate in microjoules of the operations counted in `stats` (all layers summed)."""
    ac = sum(s["ac"] for s in stats)
    mac = sum(s["mac"] for s in stats)
    return (E_AC_PJ * ac + E_MAC_PJ * mac) * 1e-6
