"""Binary S4D (Stan & Rhodes 2024; reference notes binary_s4d_and_pspikessm.md 2.2-2.5).

    y = K * z + D z              S4D-Inv, bilinear, two-sided kernel (all its configurations)
    s = H(y), H(0) = 0           Heaviside at 0, no reset, no state
    o = GLU(W dropout(s) + b)    or, mixing="gsu", the Gated Spiking Unit o = GSU(y)
                                 (ternary activations x real weights; refssm.spiking.gsu)

Backward through the spike: fast-sigmoid 1/(25|y| + 1)^2 (2.3).
"""


from refssm import backend, surrogate
from refssm._checks import choice
from refssm.models import layers, spikingssm

DEFAULTS = dict(init="inv", method="bilinear", mixing="glu", bidirectional=True)


def check(cfg):
    choice("mixing", cfg["mixing"], ("glu", "gsu"))


def spike_function(cfg):
    return surrogate.get("fast_sigmoid", fire_at_equality=False, slope=25.0)


def layer_params(cfg):
    H = cfg["H"]
    p = layers.ssm_params(cfg)
    if cfg["mixing"] == "gsu":
        p["gsu.W"] = layers.uniform(H, (H, H))
        p["gsu.b"] = layers.Param((H,), lambda rng: rng.standard_normal(H), decay=False)
        p.update(layers.norm("gsu.", H))
    else:
        p.update(layers.linear("mix.", H, 2 * H))
    return p


def core(t, cfg, pre, z, env):
    B, H, L = z.shape
    y = layers.ssm_layer(t, cfg, pre, z)
    sg = spike_function(cfg)
    macs = layers.ssm_macs(cfg, B, L)
    if cfg["mixing"] == "gsu":
        o = t.op("gsu", y, t.param(pre + "gsu.W"), t.param(pre + "gsu.b"), t.param(pre + "gsu.gamma"),
                 t.param(pre + "gsu.beta"), sg)
        y_hat, W_hat = t.context(o)[:2]                                        # the ternary operands
        stats = layers.spike_stats(y_hat, H, macs + 3 * B * L * H)             # + Hadamard, LayerNorm, GELU
        stats["ac"] += float(backend.array_module(W_hat).count_nonzero(W_hat)) * B * L                         # real y x ternary W_hat
        return o, stats
    s = t.op("spike", y, sg)
    return spikingssm.glu_mixing(t, cfg, pre, s, env), layers.spike_stats(s.value, 2 * H, macs + B * L * H)
