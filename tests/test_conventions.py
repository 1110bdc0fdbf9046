"""refssm.conventions: each library preset against the library's equations written out literally in
autograd (an independent formulation: the library's own variables and order of operations, autograd for
the backward), against closed forms below threshold, and against the wrong mappings it must not match."""

import numpy as np
import pytest
from autograd import grad
from autograd import numpy as anp
from autograd.extend import defvjp, primitive

from refssm import conventions as cv
from refssm import neurons, ssm, surrogate
from gradcheck import central_diff_grad


def spike_fn(sg, fire_at_equality):
    """Heaviside forward, sg.grad backward: the libraries' surrogate spike as an autograd primitive."""
    @primitive
    def spike(z):
        return (z >= 0 if fire_at_equality else z > 0).astype(float)
    defvjp(spike, lambda ans, z: lambda g: g * sg.grad(z))
    return spike


@primitive
def detach(x):
    return x


defvjp(detach, lambda ans, x: lambda g: anp.zeros_like(g))


# ---- the libraries' equations, literally (time last here; the libraries loop over a leading time axis)

def sj_lif(x, tau, decay_input, v_th, v_reset, detach_reset, spike):
    """SpikingJelly LIFNode: charge (lif_charge), fire, reset (voltage in _ops/reset.py)."""
    vr = 0.0 if v_reset is None else v_reset
    V = anp.full(x.shape[:-1], vr)
    S, H = [], []
    for t in range(x.shape[-1]):
        h = V + (x[..., t] - (V - vr)) / tau if decay_input else V - (V - vr) / tau + x[..., t]
        s = spike(h - v_th)
        sr = detach(s) if detach_reset else s
        V = h - sr * v_th if v_reset is None else sr * v_reset + (1.0 - sr) * h
        S.append(s)
        H.append(h)
    return anp.stack(S, -1), anp.stack(H, -1)


def sj_if(x, v_th, v_reset, detach_reset, spike):
    vr = 0.0 if v_reset is None else v_reset
    V = anp.full(x.shape[:-1], vr)
    S, H = [], []
    for t in range(x.shape[-1]):
        h = V + x[..., t]
        s = spike(h - v_th)
        sr = detach(s) if detach_reset else s
        V = h - sr * v_th if v_reset is None else sr * v_reset + (1.0 - sr) * h
        S.append(s)
        H.append(h)
    return anp.stack(S, -1), anp.stack(H, -1)


def snn_leaky(x, beta, thr, mechanism, spike):
    """snnTorch Leaky.forward with reset_delay=True: reset from the previous mem, detached."""
    mem = anp.zeros(x.shape[:-1])
    S, M = [], []
    for t in range(x.shape[-1]):
        reset = detach(spike(mem - thr))
        if mechanism == "zero":
            mem = (1 - reset) * mem
        base = beta * mem + x[..., t]
        mem = base - reset * thr if mechanism == "subtract" else base
        S.append(spike(mem - thr))
        M.append(mem)
    return anp.stack(S, -1), anp.stack(M, -1)


def norse_ff(x, ts, tm, vl, vth, vr, dt, spike):
    """Norse lif_feed_forward_step, step by step."""
    v, i = anp.full(x.shape[:-1], vl), anp.zeros(x.shape[:-1])
    Z, V = [], []
    for t in range(x.shape[-1]):
        i_new = i + x[..., t]
        v_dec = v + dt * tm * ((vl - v) + i_new)
        i = i_new + (-dt * ts * i_new)
        z = spike(v_dec - vth)
        v = (1 - z) * v_dec + z * vr
        Z.append(z)
        V.append(v)
    return anp.stack(Z, -1), anp.stack(V, -1)


SJ_SG = {"atan": lambda a: surrogate.get("atan", alpha=a), "sigmoid": lambda a: surrogate.get("sigmoid", alpha=a),
         "piecewise_quadratic": lambda a: surrogate.get("triangle", width=1 / a)}


def literal(name, **p):
    """(forward x -> (spikes, membrane)) of the library equations for preset `name` with params p."""
    if name in ("spikingjelly_lif", "spikingjelly_if"):
        sp = spike_fn(SJ_SG[p.get("surrogate", "atan")](p.get("alpha", 2.0)), True)
        if name == "spikingjelly_if":
            return lambda x: sj_if(x, p.get("v_threshold", 1.0), p.get("v_reset", 0.0), p.get("detach_reset", False),
                                   sp)
        return lambda x: sj_lif(x, p.get("tau", 2.0), p.get("decay_input", True), p.get("v_threshold", 1.0),
                                p.get("v_reset", 0.0), p.get("detach_reset", False), sp)
    if name == "snntorch_leaky":
        sname = p.get("surrogate", "atan")
        sg = {"atan": surrogate.get("atan", alpha=p.get("alpha", 2.0)),
              "fast_sigmoid": surrogate.get("fast_sigmoid", slope=p.get("slope", 25.0)),
              "sigmoid": surrogate.get("sigmoid", alpha=p.get("slope", 25.0))}[sname]
        return lambda x: snn_leaky(x, p["beta"], p.get("threshold", 1.0), p.get("reset_mechanism", "subtract"),
                                   spike_fn(sg, False))
    sp = spike_fn(surrogate.get("fast_sigmoid", slope=1.0), False)
    return lambda x: norse_ff(x, p.get("tau_syn_inv", 200.0), p.get("tau_mem_inv", 100.0), p.get("v_leak", 0.0),
                              p.get("v_th", 1.0), p.get("v_reset", 0.0), p.get("dt", 1e-3), sp)


CASES = [
    ("spikingjelly_lif", {}),
    ("spikingjelly_lif", dict(tau=3.0, decay_input=False, v_reset=-0.25, detach_reset=True, surrogate="sigmoid",
                              alpha=4.0)),
    ("spikingjelly_lif", dict(v_reset=None, surrogate="piecewise_quadratic", alpha=1.5)),
    ("spikingjelly_lif", dict(tau=4.0, v_threshold=0.75, v_reset=None, detach_reset=True)),
    ("spikingjelly_if", {}),
    ("spikingjelly_if", dict(v_reset=None)),
    ("spikingjelly_if", dict(v_reset=-0.5, detach_reset=True, surrogate="sigmoid", alpha=4.0)),
    ("snntorch_leaky", dict(beta=0.9)),
    ("snntorch_leaky", dict(beta=0.8, threshold=0.75, reset_mechanism="zero", surrogate="fast_sigmoid")),
    ("snntorch_leaky", dict(beta=0.7, reset_mechanism="none", surrogate="sigmoid", slope=5.0)),
    ("snntorch_leaky", dict(beta=1.0, reset_mechanism="subtract", alpha=3.0)),
    ("norse_lif", {}),
    ("norse_lif", dict(v_leak=0.1, v_reset=-0.2, tau_syn_inv=150.0, tau_mem_inv=80.0)),
    ("norse_lif", dict(dt=2.0 ** -10, tau_mem_inv=512.0, tau_syn_inv=256.0)),
]


def inputs(seed):
    rng = np.random.default_rng(seed)
    random = rng.normal(0.5, 1.0, (2, 3, 40))
    dyadic = rng.integers(-1, 5, (2, 1, 40)) / 2.0                           # exact ties occur
    return np.concatenate([random, dyadic], axis=1)


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_preset_matches_the_library_equations_and_autograd(name, params):
    x = inputs(len(name) + len(params))
    g = np.random.default_rng(1).standard_normal(x.shape)
    s, m, vjp = cv.preset(name)(x, **params)
    f = literal(name, **params)
    s_ref, m_ref = f(x)
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_allclose(m, m_ref, rtol=0, atol=1e-12)
    assert 0 < s.mean() < 1                                                    # spikes happen, not always
    gx_ref = grad(lambda x: anp.sum(g * f(x)[0]))(x)
    np.testing.assert_allclose(vjp(g), gx_ref, rtol=1e-10, atol=1e-12 * np.abs(gx_ref).max())


def test_exact_ties_decide_the_spike_convention():
    """A potential exactly at threshold fires in SpikingJelly (H >= V_th), not in snnTorch or Norse (>)."""
    x = np.array([2.0, 0.0, 0.0, 0.0])                                        # SJ LIF tau=2: H_0 = X_0/2 = 1
    s, H, _ = cv.spikingjelly_lif(x)
    assert H[0] == 1.0 and s[0] == 1
    s, H, _ = cv.spikingjelly_if(np.array([1.0, 0.0]))
    assert H[0] == 1.0 and s[0] == 1
    s, mem, _ = cv.snntorch_leaky(np.array([1.0, 0.0]), beta=0.5)
    assert mem[0] == 1.0 and s[0] == 0
    # Norse, a = b = 1/2 (dyadic): v_dec_0 = a i_new_0 = x_0 / 2
    z, v, _ = cv.norse_lif(np.array([2.0, 0.0]), dt=2.0 ** -10, tau_mem_inv=512.0, tau_syn_inv=512.0)
    assert v[0] == 1.0 and z[0] == 0


@pytest.mark.parametrize("name,params", [
    ("spikingjelly_lif", dict(tau=2.0)), ("spikingjelly_if", {}),
    ("snntorch_leaky", dict(beta=0.75, reset_mechanism="zero")),
    ("norse_lif", dict(dt=2.0 ** -10, tau_mem_inv=512.0, tau_syn_inv=256.0))])
def test_ties_occur_in_the_dyadic_inputs(name, params):
    """The dyadic channel of `inputs` hits the threshold exactly (Norse: its recorded v stays at v_th
    where v_dec == v_th did not fire), so the parity tests exercise the spike convention."""
    x = np.concatenate([inputs(seed)[:, 3:] for seed in range(4)])
    _, m, _ = cv.preset(name)(x, **params)
    assert np.sum(m == 1.0) > 0


# ---- closed forms below threshold (no spike: the neurons are linear filters)

def test_subthreshold_closed_forms():
    rng = np.random.default_rng(5)
    x = rng.normal(0.0, 0.05, (3, 50))
    ell = np.arange(50)
    # snnTorch: mem = sum_k beta^k x_{t-k}
    _, mem, vjp = cv.snntorch_leaky(x, beta=0.9, threshold=10.0)
    np.testing.assert_allclose(mem, ssm.causal_conv(x, 0.9 ** ell), atol=1e-13)
    # its gradient: gx_t = sum_{t' >= t} beta^(t'-t) g_t' sg'(mem_t' - thr), the reversed filter
    g = rng.standard_normal(x.shape)
    G = g * surrogate.get("atan", alpha=2.0).grad(mem - 10.0)
    np.testing.assert_allclose(vjp(g), ssm.causal_conv(G[:, ::-1], 0.9 ** ell)[:, ::-1], rtol=1e-10, atol=1e-15)
    # SpikingJelly LIF: H_t = sum_k (1 - 1/tau)^k X_{t-k} / tau
    _, H, _ = cv.spikingjelly_lif(x, tau=3.0, v_threshold=10.0)
    np.testing.assert_allclose(H, ssm.causal_conv(x, (2 / 3) ** ell / 3), atol=1e-13)
    # Norse: v = k_v * x with k_v[l] = a ((1-a)^(l+1) - (1-b)^(l+1)) / (b - a)
    a, b = 0.1, 0.2
    _, v, _ = cv.norse_lif(x, tau_syn_inv=200.0, tau_mem_inv=100.0, v_th=10.0)
    k = a * ((1 - a) ** (ell + 1) - (1 - b) ** (ell + 1)) / (b - a)
    np.testing.assert_allclose(v, ssm.causal_conv(x, k), atol=1e-13)


def test_synaptic_filter_adjoint_by_finite_differences():
    """The one linear piece written here (Norse's current filter and its reversed-time adjoint)."""
    rng = np.random.default_rng(2)
    x, c = rng.standard_normal((2, 12)), rng.standard_normal((2, 12))
    fd = central_diff_grad(lambda x: float(np.sum(c * cv._synaptic_filter(x, 0.7))), x)
    np.testing.assert_allclose(cv._synaptic_filter(c[..., ::-1], 0.7)[..., ::-1], fd, rtol=1e-7, atol=1e-8)


# ---- regression guards: the wrong mapping must not match (kmheckel/spyx PR #68)

def test_wrong_mappings_do_not_match():
    x = inputs(9)
    s, mem, _ = cv.snntorch_leaky(x, beta=0.8)
    s_naive, v_naive = neurons.lif(x, 0.8, 1.0, "soft", fire_at_equality=False)  # decayed, same-step reset
    assert not np.array_equal(s, s_naive)
    s, H, _ = cv.spikingjelly_lif(x, tau=2.0)
    assert not np.array_equal(s, neurons.lif(x, 0.5, 1.0, "hard")[0])        # input not scaled by 1/tau
    np.testing.assert_array_equal(s, neurons.lif(x / 2, 0.5, 1.0, "hard")[0])  # the mapping
    s_detach = cv.spikingjelly_lif(x, detach_reset=True)[2](np.ones_like(x))
    assert not np.allclose(s_detach, cv.spikingjelly_lif(x)[2](np.ones_like(x)))


# ---- bad input: ValueError naming the argument

@pytest.mark.parametrize("call,arg", [
    (lambda x: cv.spikingjelly_lif(x, tau=1.0), "tau"),
    (lambda x: cv.spikingjelly_lif(x, v_threshold=0.0), "v_threshold"),
    (lambda x: cv.spikingjelly_lif(x, v_threshold=0.5, v_reset=0.5), "v_threshold"),
    (lambda x: cv.spikingjelly_lif(x, surrogate="erf"), "surrogate"),
    (lambda x: cv.spikingjelly_lif(x, alpha=-1.0), "alpha"),
    (lambda x: cv.spikingjelly_if(x, v_reset=2.0), "v_threshold"),
    (lambda x: cv.snntorch_leaky(x, beta=1.5), "beta"),
    (lambda x: cv.snntorch_leaky(x, beta=0.5, threshold=0.0), "threshold"),
    (lambda x: cv.snntorch_leaky(x, beta=0.5, reset_mechanism="hard"), "reset_mechanism"),
    (lambda x: cv.snntorch_leaky(x, beta=0.5, surrogate="triangular"), "surrogate"),
    (lambda x: cv.snntorch_leaky(x, beta=np.ones(5)), "beta"),
    (lambda x: cv.norse_lif(x, tau_mem_inv=2000.0), "dt * tau_mem_inv"),
    (lambda x: cv.norse_lif(x, tau_syn_inv=-1.0), "dt * tau_syn_inv"),
    (lambda x: cv.norse_lif(x, method="triangle"), "method"),
    (lambda x: cv.norse_lif(x, v_th=-0.5), "v_th"),
    (lambda x: cv.norse_lif(x, dt=0.0), "dt"),
    (lambda x: cv.spikingjelly_lif(np.full(3, np.nan)), "x"),
    (lambda x: cv.snntorch_leaky(np.zeros((2, 0)), beta=0.5), "x"),
    (lambda x: cv.spikingjelly_lif(x)[2](np.ones(3)), "g_spikes"),
    (lambda x: cv.preset("lava"), "name"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg.replace("*", r"\*")):
        call(np.ones((2, 5)))


def test_run_library_without_torch_says_how_to_install():
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"refssm\[parity\]"):
            cv.run_library("snntorch_leaky", np.ones((1, 4)), np.ones((1, 4)), beta=0.5)
    else:
        pytest.skip("PyTorch is installed here; tests/test_parity.py runs the libraries")
