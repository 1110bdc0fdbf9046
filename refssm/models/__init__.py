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
the implementation of every operation (refssm.backend; "auto" by default).

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
              dtype="float32")
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
    """Validation at the public boundary: inputs, mask and every declared parameter's shape."""
    dtype = np.dtype(cfg["dtype"])
    if cfg["vocab_size"] is None:
        x = as_array("x", x, ndim=3).astype(dtype, copy=False)
        if x.shape[2] != cfg["d_input"]:
            raise ValueError(f"x must have shape (B, L, d_input = {cfg['d_input']}), got {x.shape}")
    else:
        x = np.asarray(x)
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"x must be a 2-D integer token array (B, L), got {x.dtype} of shape {x.shape}")
        if x.size:
            in_range("x", x, 0, cfg["vocab_size"] - 1)
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must hold B >= 1 sequences of L >= 1 steps, got shape {x.shape}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != x.shape[:2]:
            raise ValueError(f"mask must be a boolean array of shape {x.shape[:2]}, got {mask.dtype} {mask.shape}")
        if not mask.any(axis=1).all():
            raise ValueError("mask must mark at least 1 valid step in every row, got a row with none")
    for name, d in declare(cfg).items():
        if name not in p:
            raise ValueError(f"params is missing {name!r} (declared for model {cfg['model']!r})")
        if np.shape(p[name]) != tuple(d.shape):
            raise ValueError(f"params[{name!r}] must have shape {tuple(d.shape)}, got {np.shape(p[name])}")
    p = {k: np.asarray(v, dtype=dtype) for k, v in p.items()}
    state = {k: np.asarray(v, dtype=dtype) for k, v in state.items()}
    return p, state, x, mask


def _embed(E, tokens):
    """ops.embedding with the table first, the tape's order (differentiable arguments first)."""
    return ops.embedding(tokens, E)


def forward(p, state, cfg, x, mask, rng, train, aux=None):
    """Logits of the network.

    x: (B, L, d_input) float or (B, L) int tokens; mask (B, L) bool (valid steps), or None.
    rng: numpy Generator for dropout and stochastic spikes. train: batch statistics and dropout on.
    aux: optional fixed extras, e.g. {"sdn": SDN weights} for neuron="sdn".
    Returns (logits (B, n_classes), cache, new_state, stats): cache is what `backward` needs (the tape),
    stats a list, per layer, of dict(spikes, sites, ac, mac) and a last entry for encoder + decoder MACs.
    """
    p, state, x, mask = _check_inputs(p, state, cfg, x, mask)
    choice("train", train, (True, False))
    env = dict(rng=rng, train=train, state=state, new_state=dict(state), aux=aux or {})
    core = MODULES[cfg["model"]].core
    with trusted():
        t = Tape(p, cfg["backend"])
        if cfg["vocab_size"] is None:
            h = t.op("linear", t.input(np.moveaxis(x, -1, 1)), t.param("enc.W"), t.param("enc.b"))  # (B, H, L)
        else:
            h = t.call(_embed, ops.embedding_vjp, t.param("enc.E"), x)
        B, H, L = h.shape
        stats = []
        for i in range(cfg["n_layers"]):
            pre = f"layers.{i}."
            z = h
            if cfg["prenorm"] and cfg["norm"] is not None:
                z = layers.norm_layer(t, cfg, pre + "norm.", z, env)
            o, st = core(t, cfg, pre, z, env)
            h = t.op("add", h, t.op("dropout", o, cfg["dropout"], rng, train))
            if not cfg["prenorm"] and cfg["norm"] is not None and not cfg["postnorm_bug"]:
                h = layers.norm_layer(t, cfg, pre + "norm.", h, env)
            stats.append(st)
        if cfg["prenorm"] and cfg["norm"] is not None:
            h = layers.norm_layer(t, cfg, "final_norm.", h, env)
        pooled = t.op("masked_mean", h, mask)
        logits = t.op("linear", pooled, t.param("dec.W"), t.param("dec.b"))
    enc_macs = 0 if cfg["vocab_size"] is not None else B * L * H * cfg["d_input"]
    stats.append(dict(spikes=0.0, sites=0.0, ac=0.0, mac=float(enc_macs + B * H * cfg["n_classes"])))
    return logits.value, (t, logits, p), env["new_state"], stats


def backward(p, cfg, cache, glogits):
    """Gradients of all parameters (dict like p, in the training dtype) given dL/dlogits. Consumes the cache."""
    t, logits, p_used = cache
    glogits = as_array("glogits", glogits, ndim=2)
    if glogits.shape != logits.shape:
        raise ValueError(f"glogits must have the logits' shape {logits.shape}, got {glogits.shape}")
    with trusted():
        grads = t.backward(logits, glogits.astype(logits.value.dtype, copy=False))
    # parameters the output does not depend on (the discarded post-norm of postnorm_bug) get zeros
    return {name: grads[name] if name in grads else np.zeros_like(p_used[name]) for name in declare(cfg)}


def loss_and_grads(p, state, cfg, x, y, mask, rng, train=True, aux=None):
    """Cross-entropy loss, gradients, new BN state, logits and per-layer stats for one batch."""
    logits, cache, new_state, stats = forward(p, state, cfg, x, mask, rng, train, aux)
    loss, c_ce = ops.cross_entropy(logits, y)
    grads = backward(p, cfg, cache, ops.cross_entropy_vjp(c_ce))
    return loss, grads, new_state, logits, stats


def energy_uJ(stats):
    """Energy estimate in microjoules of the operations counted in `stats` (all layers summed)."""
    ac = sum(s["ac"] for s in stats)
    mac = sum(s["mac"] for s in stats)
    return (E_AC_PJ * ac + E_MAC_PJ * mac) * 1e-6
