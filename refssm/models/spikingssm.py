"""SpikingSSM (Shen et al. 2025; reference notes spikingssm_and_spike_ssm.md A1-A4).

    y = K * z + D z              S4D-Lin, ZOH kernel
    x = y / exp(ln_vth)          learnable per-channel threshold as an input scaling (Property 2)
    s = LIF(x)                   tau = 0.125, v_th = 1, hard reset to 0; neuron="sdn": the SDN-parallel LIF
    o = GLU(W dropout(s) + b)    (B, H, L) -> (B, 2H, L) -> (B, H, L)

Backward through the spike: the triangle surrogate on the input current only, membrane detached
(lif_gradient="output", A2.1); "bptt" and "bptt_detach_reset" are the BPTT baselines. `reset`,
`tau` and `surrogate` can be changed, e.g. to run SpikingJelly's LIFNode(tau=2, v_reset=None) network
(reset="soft", tau=0.5, surrogate="atan", lif_gradient="bptt_detach_reset") in the benchmark.
"""

from refssm import surrogate
from refssm._checks import choice, in_range
from refssm.models import layers
from refssm.spiking import LIF_GRADIENTS

DEFAULTS = dict(init="lin", method="zoh", tau=0.125, neuron="lif", lif_gradient="output", reset="hard",
                surrogate="triangle")
SURROGATE_PARAMS = {"triangle": {}, "atan": {"alpha": 2.0}, "fast_sigmoid": {}, "sigmoid": {}, "rectangle": {}}


def check(cfg):
    choice("neuron", cfg["neuron"], ("lif", "sdn"))
    choice("lif_gradient", cfg["lif_gradient"], LIF_GRADIENTS)
    choice("reset", cfg["reset"], ("hard", "soft"))
    choice("surrogate", cfg["surrogate"], tuple(SURROGATE_PARAMS))
    in_range("tau", cfg["tau"], 0, 1, hi_open=True)
    if cfg["neuron"] == "sdn" and (cfg["lif_gradient"] != "output" or cfg["reset"] != "hard" or cfg["tau"] != 0.125):
        raise ValueError("neuron 'sdn' is SpikingSSM's trained network for tau = 0.125, hard reset, "
                         "lif_gradient 'output'; got other options")


def spike_function(cfg):
    return surrogate.get(cfg["surrogate"])


def layer_params(cfg):
    H = cfg["H"]
    return {**layers.ssm_params(cfg), "ln_vth": layers.const((H,), 0.0),
            **layers.linear("mix.", H, 2 * H)}


def lif_neuron(t, cfg, pre, y, env):
    """x = y / exp(ln_vth); s = LIF(x) (exact scan, or the SDN's parallel prediction)."""
    x = t.op("threshold_scale", y, t.param(pre + "ln_vth"))
    sg = spike_function(cfg)
    if cfg["neuron"] == "sdn":
        return t.op("sdn_lif", x, env["aux"]["sdn"], sg)
    return t.op("lif", x, cfg["tau"], 1.0, sg, cfg["lif_gradient"], cfg["reset"])


def glu_mixing(t, cfg, pre, s, env):
    """o = GLU(W dropout(s) + b)."""
    sd = layers.dropout(t, cfg, pre + "core_dropout", s, env)
    return t.op("glu", t.op("linear", sd, t.param(pre + "mix.W"), t.param(pre + "mix.b")))


def core(t, cfg, pre, z, env):
    B, H, L = z.shape
    y = layers.ssm_layer(t, cfg, pre, z)
    s = lif_neuron(t, cfg, pre, y, env)
    stats = layers.spike_stats(s.value, 2 * H, layers.ssm_macs(cfg, B, L) + B * L * H)
    return glu_mixing(t, cfg, pre, s, env), stats
