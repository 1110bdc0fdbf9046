"""models.layers.layer_kernel(_vjp): the chain from each model's SSM parameterisation (log_dt, log_A_real,
A_imag, B, C, LongSpike's omega/eta logits) to its kernels, against central differences. The kernels
are smooth in every one of these parameters, so finite differences apply to all of them."""

import numpy as np
import pytest

from gradcheck import central_diff_grad
from refssm import models
from refssm.models import layers

CASES = [("binary_s4d", {}), ("spikingssm", {}), ("spikingssm", {"backend": "numba", "bidirectional": True}),
         ("spike_ssm", {"bidirectional": True}), ("pspikessm", {}), ("pspikessm", {"backend": "numba"}),
         ("longspike", {}), ("longspike", {"frac_method": "soe_decoupled", "bidirectional": True}),
         ("longspike", {"frac_method": "soe_decoupled", "backend": "numba"}),
         ("longspike", {"frac_method": "gl_explicit", "alpha": 0.5}),
         ("longspike", {"alpha": 1.4, "init": "real", "backend": "numba"})]


@pytest.mark.parametrize("model, options", CASES)
def test_kernel_parameter_gradients(model, options):
    rng = np.random.default_rng(0)
    options = dict({"backend": "numpy"}, **options)
    cfg = models.make_config(model, d_input=1, n_classes=2, H=3, N=4, n_layers=1, dtype="float64", **options)
    p, _ = models.init_params(cfg, rng)
    p = {k: v + 0.05 * rng.standard_normal(v.shape) for k, v in p.items()}    # off the symmetric init
    L, pre = 9, "layers.0."
    gK = rng.standard_normal((len(layers.directions(cfg)), 3, L))

    def loss(q):
        return np.sum(gK * layers.layer_kernel(q, cfg, pre, L)[0])

    grads = layers.layer_kernel_vjp(layers.layer_kernel(p, cfg, pre, L)[1], gK)
    for name, g in grads.items():
        def f(v, name=name):
            return loss(dict(p, **{name: v}))
        np.testing.assert_allclose(g, central_diff_grad(f, p[name]), rtol=1e-6, atol=1e-8, err_msg=name)
    expected = {k for k in p if k.startswith(pre) and k.split(".")[-1] in
                ("log_dt", "log_A_real", "A_imag", "B_re", "B_im", "C_re", "C_im", "Cb_re", "Cb_im",
                 "omega_logit", "eta_logit")}
    assert set(grads) == expected
