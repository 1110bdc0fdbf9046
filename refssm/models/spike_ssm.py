"""SPikE-SSM (Zhong et al. 2024; reference notes spikingssm_and_spike_ssm.md B2-B5).

    y = K * z + D z              S4D-Lin, ZOH kernel
    s = refractory(y)            soft reset + refractory trace, solved exactly in parallel by PMBC:
                                 m_t = tau v_{t-1} + y_t - theta_r r_{t-1}, s_t = 1[m_t >= v_th],
                                 v_th = exp(ln_vth), theta_r = exp(log_theta_r) trainable per channel
    o = GLU(W dropout(s) + b)

Backward: triangle surrogate at m - v_th, the reset path detached (B3). tau, beta and the initial
theta_r are not published (B5): 0.125, 0.5 and 0.1 are refssm's choices.
"""

import numpy as np

from refssm import surrogate
from refssm._checks import in_range
from refssm.models import layers, spikingssm

DEFAULTS = dict(init="lin", method="zoh", tau=0.125, beta=0.5, theta_r=0.1)


def check(cfg):
    in_range("tau", cfg["tau"], 0, 1, hi_open=True)
    in_range("beta", cfg["beta"], 0, 1, hi_open=True)
    in_range("theta_r", cfg["theta_r"], 0, None, lo_open=True)


def spike_function(cfg):
    return surrogate.get("triangle")


def layer_params(cfg):
    H = cfg["H"]
    return {**layers.ssm_params(cfg), "ln_vth": layers.const((H,), 0.0),
            "log_theta_r": layers.const((H,), np.log(cfg["theta_r"])), **layers.linear("mix.", H, 2 * H)}


def core(t, cfg, pre, z, env):
    B, H, L = z.shape
    y = layers.ssm_layer(t, cfg, pre, z)
    s = t.op("refractory", y, t.param(pre + "ln_vth"), t.param(pre + "log_theta_r"), cfg["tau"], cfg["beta"],
             spike_function(cfg))
    stats = layers.spike_stats(s.value, 2 * H, layers.ssm_macs(cfg, B, L) + B * L * H)
    return spikingssm.glu_mixing(t, cfg, pre, s, env), stats
