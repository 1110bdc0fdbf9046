"""LongSpike (He et al. 2026; reference notes longspike.md 2-4): SpikingSSM with a fractional-order SSM.

    y = K_frac * z + D z         K_frac[h, l] = 2 Re sum_n C B k_n[l], k_n the fractional-order kernel
                                 of mode A_n with order alpha (refssm.fractional.fssm_conv_kernel)
    s = LIF(y / exp(ln_vth)), o = GLU(W s + b)       as SpikingSSM

frac_method: "gl" (default) the exact implicit Grünwald-Letnikov scheme; "gl_explicit"; or
"soe_decoupled", the public code's sum of M = 2 decoupled exponentials with learnable (omega, eta)
(which does not converge to the fractional SSM: refssm.fractional.fssm_gap).
"""

from refssm import fractional
from refssm._checks import choice, in_range
from refssm.models import layers, spikingssm

DEFAULTS = dict(spikingssm.DEFAULTS, alpha=0.8, frac_method="gl")
FRAC_METHODS = ("gl", "gl_explicit", "soe_decoupled")


def check(cfg):
    spikingssm.check(cfg)
    choice("frac_method", cfg["frac_method"], FRAC_METHODS)
    # A fractional mode D^a x = lam x is stable iff |arg lam| > a pi / 2 (Matignon 1996). S4D's complex modes
    # (Lin, Inv, LegS) have |arg lam| just above pi / 2, so a > 1 makes them grow without bound; real modes
    # (init "real", arg lam = pi) stay stable up to a < 2.
    if cfg["init"] == "real":
        in_range("alpha", cfg["alpha"], 0, 2, lo_open=True, hi_open=True)
    elif not 0 < cfg["alpha"] <= 1:
        raise ValueError(f"alpha must lie in (0, 1] for init {cfg['init']!r} (complex modes with |arg lam| near "
                         f"pi/2 are unstable for alpha > 1; init 'real' allows (0, 2)), got {cfg['alpha']!r}")


spike_function = spikingssm.spike_function


def layer_params(cfg):
    p = spikingssm.layer_params(cfg)
    if cfg["frac_method"] == "soe_decoupled":
        # the public code's defaults omega = [0, 0.1], eta = [1, 0.1] (longspike.md 2.3)
        omega, eta = fractional.longspike_logits([0.0, 0.1], [1.0, 0.1])
        p["omega_logit"] = layers.Param(omega.shape, lambda rng: omega.copy(), "ssm", False)
        p["eta_logit"] = layers.Param(eta.shape, lambda rng: eta.copy(), "ssm", False)
    return p


core = spikingssm.core
