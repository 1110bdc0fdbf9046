"""P-SpikeSSM (Bal & Sengupta 2024; reference notes binary_s4d_and_pspikessm.md 3.2-3.4).

    s_in ~ Bernoulli(clamp(z, 0, 1))           stochastic spikes of the (BatchNorm pre-normed) stream
    v = GELU(K * s_in + D s_in)                S4D-LegS, bilinear; (A, B) shared by the layer's channels,
                                               B trainable
    s_out ~ Bernoulli(clamp(alpha dropout(v) + beta, 0, 1))
    o = GELU(W s_out + b)                      SpikeMixer

Backward through each sampler: the straight-through clamp 1[0 <= p <= 1], the gradient of
E[s] = clamp(p, 0, 1). The input affine of the public code is the norm's own affine here.
"""

from refssm import surrogate
from refssm.models import layers

DEFAULTS = dict(init="legs", method="bilinear", prenorm=True)


def check(cfg):
    pass


def spike_function(cfg):
    return surrogate.get("straight_through")


def layer_params(cfg):
    H = cfg["H"]
    return {**layers.ssm_params(cfg, shared_AB=True), "out.alpha": layers.const((H,), 1.0),
            "out.beta": layers.const((H,), 0.0), **layers.linear("mix.", H, H)}


def core(t, cfg, pre, z, env):
    B, H, L = z.shape
    s_in = layers.sample(t, pre + "sample_in", z, env)
    v = t.op("gelu", layers.ssm_layer(t, cfg, pre, s_in))
    r = t.op("channel_affine", layers.dropout(t, cfg, pre + "core_dropout", v, env), t.param(pre + "out.alpha"),
             t.param(pre + "out.beta"))
    s_out = layers.sample(t, pre + "sample_out", r, env)
    o = t.op("gelu", t.op("linear", s_out, t.param(pre + "mix.W"), t.param(pre + "mix.b")))
    stats = layers.spike_stats(s_in.value, 0, layers.ssm_macs(cfg, B, L) + B * L * H)
    out = layers.spike_stats(s_out.value, H, 0)
    stats = dict(spikes=stats["spikes"] + out["spikes"], sites=stats["sites"] + out["sites"],
                 ac=stats["spikes"] * cfg["N"] + out["ac"], mac=stats["mac"])
    return o, stats
