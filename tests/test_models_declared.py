"""What the models declare about their parameters and count about their work, checked against tables
and hand counts written here (not derived from the declarations they check)."""

import numpy as np
import pytest
from scipy import stats

from refssm import models

# leaf name -> (optimizer group, weight decay): the S4 convention (reference notes A3.4): the SSM's
# dynamics at lr min(lr, 1e-3) without decay; norms, biases, thresholds, D, affines without decay.
EXPECTED_GROUPS = {
    "log_dt": ("ssm", False), "log_A_real": ("ssm", False), "A_imag": ("ssm", False), "B_re": ("ssm", False),
    "B_im": ("ssm", False), "omega_logit": ("ssm", False), "eta_logit": ("ssm", False),
    "C_re": ("default", True), "C_im": ("default", True), "Cb_re": ("default", True), "Cb_im": ("default", True),
    "W": ("default", True), "E": ("default", True),
    "b": ("default", False), "gamma": ("default", False), "beta": ("default", False), "D": ("default", False),
    "ln_vth": ("default", False), "log_theta_r": ("default", False), "alpha": ("default", False),
}

CONFIGS = [("binary_s4d", {}), ("binary_s4d", {"mixing": "gsu"}), ("spikingssm", {"prenorm": True}),
           ("spike_ssm", {"bidirectional": True}), ("pspikessm", {}), ("longspike", {}),
           ("longspike", {"frac_method": "soe_decoupled"})]


@pytest.mark.parametrize("model, opts", CONFIGS)
@pytest.mark.parametrize("tokens", [False, True])
def test_every_parameter_has_its_group_and_decay(model, opts, tokens):
    kw = {"vocab_size": 7} if tokens else {"d_input": 2}
    cfg = models.make_config(model, n_classes=3, H=4, N=4, **kw, **opts)
    groups = models.optimizer_groups(cfg)
    params, _ = models.init_params(cfg, np.random.default_rng(0))
    assert set(groups) == set(params)
    for name, got in groups.items():
        leaf = name.rsplit(".", 1)[-1]
        assert leaf in EXPECTED_GROUPS, f"{name}: a new parameter; decide its group and decay in this table"
        assert got == EXPECTED_GROUPS[leaf], name


def test_dt_initialisation_is_log_uniform():
    """log dt ~ U[log dt_min, log dt_max] (S4D): a Kolmogorov-Smirnov test accepts it, and rejects dt
    uniform on [dt_min, dt_max] (so the test can tell the two apart)."""
    cfg = models.make_config("spikingssm", d_input=1, H=4000, N=2, n_layers=1, dt_min=1e-3, dt_max=1e-1,
                             dtype="float64")
    log_dt = models.init_params(cfg, np.random.default_rng(1))[0]["layers.0.log_dt"]
    lo, hi = np.log(1e-3), np.log(1e-1)
    assert lo <= log_dt.min() and log_dt.max() <= hi
    assert stats.kstest(log_dt, "uniform", args=(lo, hi - lo)).pvalue > 1e-3
    assert stats.kstest(np.exp(log_dt), "uniform", args=(1e-3, 1e-1 - 1e-3)).pvalue < 1e-6


def test_energy_of_a_tiny_model_by_hand():
    """SpikingSSM, B = 1, L = 3, H = 2, N = 2, d_input = 1, 2 classes, one layer, no norm. The input drives
    every neuron over threshold at every step (C = 0, D = 100, encoder z = 2), so all 6 sites spike.
    By hand: layer MACs = B L H (N + 1) [SSM recurrence + D] + B L H [threshold scaling] = 18 + 6 = 24;
    encoder B L H d_in = 6, decoder B H classes = 4: 34 MACs. ACs = 6 spikes x fan-out 2H = 24.
    Energy = 0.9 pJ x 24 + 4.6 pJ x 34 = 178 pJ = 1.78e-4 uJ."""
    cfg = models.make_config("spikingssm", d_input=1, n_classes=2, H=2, N=2, n_layers=1, norm=None,
                             dtype="float64", backend="numpy")
    p, state = models.init_params(cfg, np.random.default_rng(0))
    p.update({"enc.W": np.ones((2, 1)), "enc.b": np.ones(2), "layers.0.C_re": np.zeros((2, 1)),
              "layers.0.C_im": np.zeros((2, 1)), "layers.0.D": np.full(2, 100.0)})
    _, _, _, st = models.forward(p, state, cfg, np.ones((1, 3, 1)), None, np.random.default_rng(0), False)
    assert st[0]["spikes"] == 6 and st[0]["sites"] == 6
    assert st[0]["ac"] == 24 and st[0]["mac"] + st[1]["mac"] == 34
    assert models.energy_uJ(st) == pytest.approx(1.78e-4, rel=1e-12)


@pytest.mark.parametrize("model, opts", [("pspikessm", {"dropout": 0.3}), ("spikingssm", {"dropout": 0.3})])
def test_noise_follows_the_example_not_the_batch(model, opts):
    """Dropout masks and stochastic spikes come from per-example streams: an example's outputs are the
    same in a batch of three and alone (with its id), and another id gives other noise."""
    cfg = models.make_config(model, d_input=2, H=4, N=4, n_layers=2, norm="layer", dtype="float64", backend="numpy",
                             **opts)
    p, state = models.init_params(cfg, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((3, 6, 2))

    def out(xb, ids):
        return models.forward(p, state, cfg, xb, None, np.random.default_rng(5), True, example_ids=ids)[0]

    batch = out(x, np.array([10, 11, 12]))
    # equal up to the summation order of a GEMM over another batch size
    np.testing.assert_allclose(out(x[1:2], np.array([11])), batch[1:2], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out(x[::-1], np.array([12, 11, 10])), batch[::-1], rtol=1e-12, atol=1e-14)
    assert not np.allclose(out(x[1:2], np.array([13])), batch[1:2])


def test_longspike_refuses_unstable_fractional_orders():
    """|arg lam| > alpha pi / 2 is the stability condition of D^alpha x = lam x: S4D-Lin's complex modes fail
    it for alpha > 1, real modes do not."""
    with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\] for init 'lin'"):
        models.make_config("longspike", d_input=1, alpha=1.3)
    assert models.make_config("longspike", d_input=1, alpha=1.3, init="real")["alpha"] == 1.3
    with pytest.raises(ValueError, match="alpha must lie in"):
        models.make_config("longspike", d_input=1, alpha=2.0, init="real")
