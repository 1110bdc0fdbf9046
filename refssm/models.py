"""The five seed models: one residual block shape, five choices of kernel, neuron and mixing.

    encoder -> n_layers x [norm? -> core -> dropout -> + residual -> norm?] -> final norm? -> masked
    mean over time -> linear decoder -> logits

    model        core (z -> o), z (B, H, L)                                                 reference notes
    binary_s4d   y = K*z + D z (S4D-Inv, bilinear); s = H(y) (H(0) = 0); o = GLU(W s)         binary_s4d 2.2-2.5
                 or, mixing="gsu", o = GSU(y)
    spikingssm   y = K*z + D z (S4D-Lin, ZOH); s = LIF(y / exp(ln_vth)); o = GLU(W s)         spikingssm A1-A3
    spike_ssm    y = K*z + D z (S4D-Lin, ZOH); s = PMBC refractory(y); o = GLU(W s)           spike_ssm B2-B4
    pspikessm    s_in ~ Bern(z); v = GELU(K*s_in + D s_in) (LegS shared per layer, bilinear);
                 s_out ~ Bern(alpha_out v + beta_out); o = GELU(W s_out + b)                  pspikessm 3.2-3.3
    longspike    y = K_frac*z + D z (fractional-order SSM); s = LIF(y / exp(ln_vth)); GLU     longspike 2, 4

Parameters are a flat dict name -> float64 array ("layers.0.log_dt", ...); complex SSM parameters are
stored as real and imaginary parts. Batch-norm running statistics live in a separate `state` dict.
Forward and backward are written out by hand, block by block, from the VJPs of refssm.ops,
refssm.ssm, refssm.spiking and refssm.fractional: `forward` returns a cache, `backward` consumes it.

Energy convention (the papers'): real x real multiply-accumulates cost 4.6 pJ (MAC), spike (or
ternary) x real accumulates 0.9 pJ (AC, counted as non-zero inputs x fan-out). The SSM is counted
as its recurrence, N real MACs per channel per step (N/2 complex modes), whatever its input.
"""

import numpy as np

from refssm import fractional, ops, spiking, ssm, surrogate
from refssm._checks import choice, in_range, positive_int

MODELS = ("binary_s4d", "spikingssm", "spike_ssm", "pspikessm", "longspike")
E_MAC_PJ, E_AC_PJ = 4.6, 0.9

COMMON = dict(H=64, N=64, n_layers=2, dropout=0.0, prenorm=False, norm="batch", postnorm_bug=False,
              bidirectional=False, dt_min=1e-3, dt_max=1e-1, backend="numpy")
MODEL_DEFAULTS = {
    # Binary S4D: S4D-Inv, bilinear, two-sided kernel (all its configs), Heaviside at 0 (fires only
    # for y > 0), fast-sigmoid slope 25
    "binary_s4d": dict(init="inv", method="bilinear", mixing="glu", bidirectional=True),
    # SpikingSSM: S4D-Lin, ZOH, LIF tau = 0.125, hard reset, triangle surrogate on y only (A2.1)
    "spikingssm": dict(init="lin", method="zoh", tau=0.125, neuron="lif", lif_gradient="output"),
    # SPikE-SSM: refractory soft-reset neuron by PMBC; tau, beta, theta_r not published (B5): our choice
    "spike_ssm": dict(init="lin", method="zoh", tau=0.125, beta=0.5, theta_r=0.1),
    # P-SpikeSSM: LegS shared per layer, trainable B, bilinear, BatchNorm pre-norm, two samplers
    "pspikessm": dict(init="legs", method="bilinear", prenorm=True),
    # LongSpike: fractional-order SSM kernel, the exact GL scheme by default; frac_method="soe_decoupled"
    # is the public code's sum of M = 2 decoupled exponentials with learnable (omega, eta); LIF as SpikingSSM
    "longspike": dict(init="lin", method="zoh", tau=0.125, neuron="lif", lif_gradient="output",
                      alpha=0.8, frac_method="gl"),
}


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
        raise ValueError(f"unknown configuration keys for model {model!r}: {sorted(unknown)}")
    cfg.update(overrides)
    positive_int("H", cfg["H"])
    positive_int("N", cfg["N"], minimum=2)
    positive_int("n_layers", cfg["n_layers"])
    positive_int("n_classes", cfg["n_classes"], minimum=2)
    in_range("dropout", cfg["dropout"], 0, 1, hi_open=True)
    choice("norm", cfg["norm"], ("batch", "layer", None))
    choice("backend", cfg["backend"], spiking.BACKENDS)
    choice("init", cfg["init"], ssm.INITS)
    choice("method", cfg["method"], ssm.METHODS)
    if model == "binary_s4d":
        choice("mixing", cfg["mixing"], ("glu", "gsu"))
    if model == "longspike":
        choice("frac_method", cfg["frac_method"], ("gl", "gl_explicit", "soe_decoupled"))
    if model in ("spikingssm", "longspike"):
        choice("neuron", cfg["neuron"], ("lif", "sdn"))
        choice("lif_gradient", cfg["lif_gradient"], spiking.LIF_GRADIENTS)
    return cfg


def surrogate_of(cfg):
    """The spike function of each model (reference notes: 2.3, A4, B5, 3.4, longspike 3.2)."""
    return {"binary_s4d": surrogate.get("fast_sigmoid", fire_at_equality=False, slope=25.0),
            "pspikessm": surrogate.get("straight_through")}.get(cfg["model"], surrogate.get("triangle"))


# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------

def _uniform(rng, fan_in, shape):
    """PyTorch's default Linear/Conv1d init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return rng.uniform(-1, 1, shape) / np.sqrt(fan_in)


def init_params(cfg, rng):
    """Parameters (flat dict) and batch-norm state (flat dict) for `cfg`, drawn from `rng`."""
    H, N, model = cfg["H"], cfg["N"], cfg["model"]
    p, state = {}, {}
    if cfg["vocab_size"] is None:
        p["enc.W"], p["enc.b"] = _uniform(rng, cfg["d_input"], (H, cfg["d_input"])), _uniform(rng, cfg["d_input"], H)
    else:
        p["enc.E"] = rng.standard_normal((cfg["vocab_size"], H))

    def norm(prefix):
        p[prefix + "gamma"], p[prefix + "beta"] = np.ones(H), np.zeros(H)
        if cfg["norm"] == "batch":
            state[prefix + "mean"], state[prefix + "var"] = np.zeros(H), np.ones(H)

    for i in range(cfg["n_layers"]):
        pre = f"layers.{i}."
        if cfg["norm"] is not None:
            norm(pre + "norm.")
        shared = model == "pspikessm"                    # (A, B) shared by the layer's channels, B trainable
        s = ssm.init_diag(1 if shared else H, N, cfg["init"], cfg["dt_min"], cfg["dt_max"], rng)
        p[pre + "log_A_real"], p[pre + "A_imag"] = np.log(-s["A"].real), s["A"].imag
        if shared:
            p[pre + "B_re"], p[pre + "B_im"] = s["B"].real, s["B"].imag
            s = ssm.init_diag(H, N, cfg["init"], cfg["dt_min"], cfg["dt_max"], rng)   # per channel C, dt
        p[pre + "log_dt"], p[pre + "C_re"], p[pre + "C_im"] = s["log_dt"], s["C"].real, s["C"].imag
        if cfg["bidirectional"]:
            Cb = ssm.init_diag(H, N, cfg["init"], rng=rng)["C"]
            p[pre + "Cb_re"], p[pre + "Cb_im"] = Cb.real, Cb.imag
        p[pre + "D"] = rng.standard_normal(H)
        if model in ("spikingssm", "longspike"):
            p[pre + "ln_vth"] = np.zeros(H)
        if model == "longspike" and cfg["frac_method"] == "soe_decoupled":
            # main branch defaults omega = [0, 0.1], eta = [1, 0.1] (longspike.md 2.3)
            p[pre + "omega_logit"], p[pre + "eta_logit"] = fractional.longspike_logits([0.0, 0.1], [1.0, 0.1])
        if model == "spike_ssm":
            p[pre + "ln_vth"], p[pre + "log_theta_r"] = np.zeros(H), np.full(H, np.log(cfg["theta_r"]))
        if model == "pspikessm":
            p[pre + "out.alpha"], p[pre + "out.beta"] = np.ones(H), np.zeros(H)
            p[pre + "mix.W"], p[pre + "mix.b"] = _uniform(rng, H, (H, H)), _uniform(rng, H, H)
        elif model == "binary_s4d" and cfg["mixing"] == "gsu":
            p[pre + "gsu.W"], p[pre + "gsu.b"] = _uniform(rng, H, (H, H)), rng.standard_normal(H)
            p[pre + "gsu.gamma"], p[pre + "gsu.beta"] = np.ones(H), np.zeros(H)
        else:
            p[pre + "mix.W"], p[pre + "mix.b"] = _uniform(rng, H, (2 * H, H)), _uniform(rng, H, 2 * H)
    if cfg["prenorm"] and cfg["norm"] is not None:
        norm("final_norm.")
    p["dec.W"], p["dec.b"] = _uniform(rng, H, (cfg["n_classes"], H)), _uniform(rng, H, cfg["n_classes"])
    return p, state


def optimizer_groups(params):
    """(lr_scale, weight_decay_on) per parameter, following the S4 convention (reference notes A3.4):
    SSM dynamics (log_dt, A, B) at lr min(lr, 1e-3) and no weight decay; norms, biases and
    thresholds without weight decay; everything else at the global lr and weight decay."""
    groups = {}
    for name in params:
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("log_dt", "log_A_real", "A_imag", "B_re", "B_im"):
            groups[name] = ("ssm", False)
        elif leaf in ("b", "beta", "gamma", "D", "ln_vth", "log_theta_r", "alpha"):
            groups[name] = ("global", False)
        else:
            groups[name] = ("global", True)
    return groups


# --------------------------------------------------------------------------------------------------
# Pieces: norm, SSM kernels
# --------------------------------------------------------------------------------------------------

def _norm(p, state, cfg, prefix, x, train):
    if cfg["norm"] == "layer":
        y, ctx = ops.layer_norm(x, p[prefix + "gamma"], p[prefix + "beta"])
        return y, ctx, {}
    y, ctx, mean, var = ops.batch_norm(x, p[prefix + "gamma"], p[prefix + "beta"],
                                       state[prefix + "mean"], state[prefix + "var"], train)
    return y, ctx, {prefix + "mean": mean, prefix + "var": var}


def _norm_vjp(cfg, prefix, ctx, gy, grads):
    vjp = ops.layer_norm_vjp if cfg["norm"] == "layer" else ops.batch_norm_vjp
    gx, grads[prefix + "gamma"], grads[prefix + "beta"] = vjp(ctx, gy)
    return gx


def _directions(cfg):
    return ("C", "Cb") if cfg["bidirectional"] else ("C",)


def _ssm_tensors(p, pre):
    A = -np.exp(p[pre + "log_A_real"]) + 1j * p[pre + "A_imag"]
    B = p[pre + "B_re"] + 1j * p[pre + "B_im"] if pre + "B_re" in p else np.ones_like(A)
    return A, B, np.exp(p[pre + "log_dt"])


def _soe_terms(p, cfg, pre):
    """LongSpike's decoupled-SOE (omega, eta), one set of M per layer (longspike.md 2.3), as kwargs."""
    if cfg["model"] != "longspike" or cfg["frac_method"] != "soe_decoupled":
        return {}
    omega, eta = fractional.longspike_omega_eta(p[pre + "omega_logit"], p[pre + "eta_logit"])
    return dict(omega=omega, eta=eta)


def _kernel_module(cfg):
    """refssm.ssm, or its Numba fast path refssm.kernels.ssm (no Vandermonde matrix) for backend numba."""
    if cfg["backend"] == "numba":
        from refssm.kernels import ssm as fast
        return fast
    return ssm


def ssm_kernels(p, cfg, pre, L):
    """The layer's kernels, one per direction: list of (H, L) arrays."""
    A, B, dt = _ssm_tensors(p, pre)
    Cs = [p[pre + d + "_re"] + 1j * p[pre + d + "_im"] for d in _directions(cfg)]
    if cfg["model"] == "longspike":
        soe = _soe_terms(p, cfg, pre)
        return [fractional.fssm_conv_kernel(A, B, C, dt, L, cfg["alpha"], cfg["frac_method"], **soe) for C in Cs]
    return [_kernel_module(cfg).kernel(A, B, C, dt, L, cfg["method"]) for C in Cs]


def ssm_kernels_vjp(p, cfg, pre, L, gKs, grads):
    """Accumulate the gradients of the layer's SSM parameters from the kernels' gradients gKs."""
    A, B, dt = _ssm_tensors(p, pre)
    soe = _soe_terms(p, cfg, pre)
    gA = gB = gdt = g_omega = g_eta = 0.0
    for d, gK in zip(_directions(cfg), gKs):
        C = p[pre + d + "_re"] + 1j * p[pre + d + "_im"]
        if cfg["model"] == "longspike":
            gA_d, gB_d, gC, gdt_d, *g_soe = fractional.fssm_conv_kernel_vjp(gK, A, B, C, dt, L, cfg["alpha"],
                                                                            cfg["frac_method"], **soe)
            if soe:
                g_omega, g_eta = g_omega + g_soe[0], g_eta + g_soe[1]
        else:
            gA_d, gB_d, gC, gdt_d = _kernel_module(cfg).kernel_vjp(gK, A, B, C, dt, L, cfg["method"])
        gA, gB, gdt = gA + gA_d, gB + gB_d, gdt + gdt_d
        grads[pre + d + "_re"], grads[pre + d + "_im"] = gC.real, gC.imag
    grads[pre + "log_A_real"] = gA.real * A.real                               # d(-exp(a))/da = A.real
    grads[pre + "A_imag"] = gA.imag
    if pre + "B_re" in p:
        grads[pre + "B_re"], grads[pre + "B_im"] = gB.real, gB.imag
    grads[pre + "log_dt"] = gdt * dt
    if soe:
        grads[pre + "omega_logit"], grads[pre + "eta_logit"] = fractional.longspike_omega_eta_vjp(
            g_omega, g_eta, p[pre + "omega_logit"], p[pre + "eta_logit"])


def _conv(z, Ks):
    return ssm.bidirectional_conv(z, *Ks) if len(Ks) == 2 else ssm.causal_conv(z, Ks[0])


def _conv_vjp(gy, z, Ks):
    out = ssm.bidirectional_conv_vjp(gy, z, *Ks) if len(Ks) == 2 else ssm.causal_conv_vjp(gy, z, Ks[0])
    return out[0], list(out[1:])


def _ssm_forward(p, cfg, pre, z):
    """y = K * z + D z. z (B, H, L) -> y (B, H, L)."""
    Ks = ssm_kernels(p, cfg, pre, z.shape[-1])
    return _conv(z, Ks) + p[pre + "D"][:, None] * z, (z, Ks)


def _ssm_backward(p, cfg, pre, ctx, gy, grads):
    z, Ks = ctx
    gz, gKs = _conv_vjp(gy, z, Ks)
    ssm_kernels_vjp(p, cfg, pre, z.shape[-1], gKs, grads)
    grads[pre + "D"] = np.sum(gy * z, axis=(0, 2))
    return gz + p[pre + "D"][:, None] * gy


# --------------------------------------------------------------------------------------------------
# Cores: z (normalised residual stream) -> o (block output before dropout and residual)
# --------------------------------------------------------------------------------------------------

def _stats(spikes, fan_out, macs):
    """Spike count, sites, accumulates (non-zero spikes x fan-out) and multiply-accumulates."""
    nnz = float(np.count_nonzero(spikes))
    return dict(spikes=nnz, sites=float(spikes.size), ac=nnz * fan_out, mac=float(macs))


def _core_spiking(p, cfg, pre, z, rng, train, aux):
    """binary_s4d, spikingssm, spike_ssm, longspike: SSM -> spiking neuron -> dropout -> GLU / GSU."""
    B, H, L = z.shape
    sg = surrogate_of(cfg)
    y, c_ssm = _ssm_forward(p, cfg, pre, z)
    ssm_macs = B * L * H * (cfg["N"] * len(_directions(cfg)) + 1)
    if cfg["model"] == "binary_s4d" and cfg["mixing"] == "gsu":
        o, c_gsu = spiking.gsu(y, p[pre + "gsu.W"], p[pre + "gsu.b"], p[pre + "gsu.gamma"], p[pre + "gsu.beta"], sg)
        y_hat, W_hat = c_gsu[:2]
        st = _stats(y_hat, H, ssm_macs + 3 * B * L * H)       # + Hadamard product, LayerNorm, GELU
        st["ac"] += np.count_nonzero(W_hat) * B * L           # real y x ternary W_hat
        return o, ("gsu", c_ssm, c_gsu), st
    if cfg["model"] == "binary_s4d":
        s, c_act = spiking.spike(y, sg)
    elif cfg["model"] == "spike_ssm":
        s, c_act = spiking.refractory_spike(y, p[pre + "ln_vth"], p[pre + "log_theta_r"], cfg["tau"], cfg["beta"],
                                            sg, cfg["backend"])
    else:
        s, c_act = spiking.lif_spike(y, p[pre + "ln_vth"], cfg["tau"], sg, cfg["lif_gradient"], cfg["backend"],
                                     aux.get("sdn"))
    sd, c_drop = ops.dropout(s, cfg["dropout"], rng, train)
    u, c_lin = ops.linear(sd, p[pre + "mix.W"], p[pre + "mix.b"])
    o, c_glu = ops.glu(u)
    return o, ("spike", c_ssm, c_act, c_drop, c_lin, c_glu), _stats(s, 2 * H, ssm_macs + B * L * H)


def _core_spiking_vjp(p, cfg, pre, ctx, go, grads):
    if ctx[0] == "gsu":
        _, c_ssm, c_gsu = ctx
        gy, grads[pre + "gsu.W"], grads[pre + "gsu.b"], grads[pre + "gsu.gamma"], grads[pre + "gsu.beta"] = \
            spiking.gsu_vjp(c_gsu, go)
        return _ssm_backward(p, cfg, pre, c_ssm, gy, grads)
    _, c_ssm, c_act, c_drop, c_lin, c_glu = ctx
    gsd, grads[pre + "mix.W"], grads[pre + "mix.b"] = ops.linear_vjp(c_lin, ops.glu_vjp(c_glu, go))
    gs = ops.dropout_vjp(c_drop, gsd)
    if cfg["model"] == "binary_s4d":
        gy = spiking.spike_vjp(c_act, gs)
    elif cfg["model"] == "spike_ssm":
        gy, grads[pre + "ln_vth"], grads[pre + "log_theta_r"] = spiking.refractory_spike_vjp(c_act, gs)
    else:
        gy, grads[pre + "ln_vth"] = spiking.lif_spike_vjp(c_act, gs)
    return _ssm_backward(p, cfg, pre, c_ssm, gy, grads)


def _core_pspikessm(p, cfg, pre, z, rng, train, aux):
    """P-SpikeSSM (reference notes 3.3): sampler -> SSM -> GELU -> dropout -> affine -> sampler ->
    SpikeMixer (Linear + GELU). The input affine of the public code is the norm's own affine here
    (BatchNorm's gamma, beta); without a norm the sampler reads the residual stream directly."""
    B, H, L = z.shape
    s_in, c_in = spiking.sample_spike(z, rng)
    y, c_ssm = _ssm_forward(p, cfg, pre, s_in)
    v, c_gelu = ops.gelu(y)
    vd, c_drop = ops.dropout(v, cfg["dropout"], rng, train)
    r, c_aff = ops.channel_affine(vd, p[pre + "out.alpha"], p[pre + "out.beta"])
    s_out, c_out = spiking.sample_spike(r, rng)
    u, c_lin = ops.linear(s_out, p[pre + "mix.W"], p[pre + "mix.b"])
    o, c_mix = ops.gelu(u)
    stats = _stats(np.concatenate([s_in.ravel(), s_out.ravel()]), 0, B * L * H * (cfg["N"] * len(_directions(cfg)) + 2))
    stats["ac"] = float(np.count_nonzero(s_in)) * cfg["N"] + float(np.count_nonzero(s_out)) * H
    return o, (c_in, c_ssm, c_gelu, c_drop, c_aff, c_out, c_lin, c_mix), stats


def _core_pspikessm_vjp(p, cfg, pre, ctx, go, grads):
    c_in, c_ssm, c_gelu, c_drop, c_aff, c_out, c_lin, c_mix = ctx
    gs_out, grads[pre + "mix.W"], grads[pre + "mix.b"] = ops.linear_vjp(c_lin, ops.gelu_vjp(c_mix, go))
    gvd, grads[pre + "out.alpha"], grads[pre + "out.beta"] = ops.channel_affine_vjp(
        c_aff, spiking.sample_spike_vjp(c_out, gs_out))
    gy = ops.gelu_vjp(c_gelu, ops.dropout_vjp(c_drop, gvd))
    return spiking.sample_spike_vjp(c_in, _ssm_backward(p, cfg, pre, c_ssm, gy, grads))


CORES = {m: (_core_spiking, _core_spiking_vjp) for m in MODELS}
CORES["pspikessm"] = (_core_pspikessm, _core_pspikessm_vjp)


# --------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------

def forward(p, state, cfg, x, mask, rng, train, aux=None):
    """Logits of the network.

    x: (B, L, d_input) float or (B, L) int tokens; mask (B, L) bool (valid steps), or None.
    rng: numpy Generator for dropout and stochastic spikes. train: batch statistics and dropout on.
    aux: optional fixed extras, e.g. {"sdn": SDN weights} for neuron="sdn".
    Returns (logits (B, n_classes), cache, new_state, stats) with stats a list, per layer, of
    dict(spikes, sites, ac, mac) and a last entry for encoder + decoder MACs.
    """
    aux = aux or {}
    new_state = dict(state)
    if cfg["vocab_size"] is None:
        h, c_enc = ops.linear(np.moveaxis(np.asarray(x, float), -1, 1), p["enc.W"], p["enc.b"])   # (B, H, L)
    else:
        h, c_enc = ops.embedding(x, p["enc.E"])
    B, H, L = h.shape
    caches, stats = [], []
    core = CORES[cfg["model"]][0]
    for i in range(cfg["n_layers"]):
        pre = f"layers.{i}."
        c_pre = c_post = None
        z = h
        if cfg["prenorm"] and cfg["norm"] is not None:
            z, c_pre, upd = _norm(p, state, cfg, pre + "norm.", z, train)
            new_state.update(upd)
        o, c_core, st = core(p, cfg, pre, z, rng, train, aux)
        od, c_drop = ops.dropout(o, cfg["dropout"], rng, train)
        h = h + od
        if not cfg["prenorm"] and cfg["norm"] is not None and not cfg["postnorm_bug"]:
            h, c_post, upd = _norm(p, state, cfg, pre + "norm.", h, train)
            new_state.update(upd)
        caches.append((c_pre, c_core, c_drop, c_post))
        stats.append(st)
    c_final = None
    if cfg["prenorm"] and cfg["norm"] is not None:
        h, c_final, upd = _norm(p, state, cfg, "final_norm.", h, train)
        new_state.update(upd)
    pooled, c_pool = ops.masked_mean(h, mask)
    logits, c_dec = ops.linear(pooled, p["dec.W"], p["dec.b"])
    enc_macs = 0 if cfg["vocab_size"] is not None else B * L * H * cfg["d_input"]
    stats.append(dict(spikes=0.0, sites=0.0, ac=0.0, mac=float(enc_macs + B * H * cfg["n_classes"])))
    return logits, (c_enc, caches, c_final, c_pool, c_dec), new_state, stats


def backward(p, cfg, cache, glogits):
    """Gradients of all parameters (dict like p) given dL/dlogits."""
    c_enc, caches, c_final, c_pool, c_dec = cache
    grads = {}
    gpooled, grads["dec.W"], grads["dec.b"] = ops.linear_vjp(c_dec, glogits)
    gh = ops.masked_mean_vjp(c_pool, gpooled)
    if c_final is not None:
        gh = _norm_vjp(cfg, "final_norm.", c_final, gh, grads)
    core_vjp = CORES[cfg["model"]][1]
    for i in reversed(range(cfg["n_layers"])):
        pre = f"layers.{i}."
        c_pre, c_core, c_drop, c_post = caches[i]
        if c_post is not None:
            gh = _norm_vjp(cfg, pre + "norm.", c_post, gh, grads)
        gz = core_vjp(p, cfg, pre, c_core, ops.dropout_vjp(c_drop, gh), grads)
        if c_pre is not None:
            gz = _norm_vjp(cfg, pre + "norm.", c_pre, gz, grads)
        gh = gh + gz
    if cfg["vocab_size"] is None:
        _, grads["enc.W"], grads["enc.b"] = ops.linear_vjp(c_enc, gh)
    else:
        grads["enc.E"] = ops.embedding_vjp(c_enc, gh)
    if cfg["postnorm_bug"]:
        for name in p:
            grads.setdefault(name, np.zeros_like(p[name]))                    # unused norm parameters
    return grads


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
