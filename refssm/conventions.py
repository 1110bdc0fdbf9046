"""The neuron semantics of SpikingJelly, snnTorch and Norse, as refssm functions (time last, float64).

Libraries disagree on when the reset happens, whether it decays, whether a spike fires at equality,
how the input is scaled and what the surrogate's scale is (reference notes, ecosystem 1.1-1.5). Each
function below is one library neuron, named and parameterised as the library does, taking x (..., T)
(refssm's layout: the libraries put time first) and returning

    (spikes, membrane, vjp),   vjp(g_spikes) -> g_x

where vjp gives the gradient the library's autograd computes for the loss sum(g_spikes * spikes) with
the stated surrogate and detach choices. The equations are the libraries' own (docstrings and the
source of the versions named, read for facts); each preset maps them onto refssm's oracles where they
fit: the LIF of refssm.neurons / refssm.spiking, v_t = tau u_{t-1} + x_t, hard u = v (1 - s) + s v_reset,
soft u = v - s v_th. A library's neuron that the refssm LIF cannot express exactly (snnTorch's reset
from the previous step, undecayed; SpikingJelly's IF, whose leak tau = 1 is outside refssm's tau in
[0, 1)) is written once here, as `_previous_step_reset`, stated as the library's equation.

    library (version read)   neuron            spike test   reset                              gradient through reset
    SpikingJelly 2.0.0       LIFNode, IFNode   H >= V_th    same step, from H (hard or soft)   kept (detach_reset=False)
    snnTorch 1.0.0           Leaky             mem > thr    next step, from mem_{t-1}, undecayed  detached, always
    Norse 1.1.0              LIF (feed-fwd)    v > v_th     same step, hard to v_reset         kept

Surrogates (refssm.surrogate names in brackets): SpikingJelly ATan(alpha) [atan], Sigmoid(alpha)
[sigmoid], PiecewiseQuadratic(alpha) [triangle, width 1/alpha]; snnTorch atan(alpha) [atan],
fast_sigmoid(slope) [fast_sigmoid], sigmoid(slope) [sigmoid]; Norse "super" [fast_sigmoid, slope 1]:
Norse 1.1.0's SuperSpike backward is 1/(|z| + 1)^2 and ignores its alpha.

`run_library` runs the libraries themselves (PyTorch needed: `pip install refssm[parity]`) on the same
inputs, for the parity tests (tests/test_parity.py) and validation report 6.
"""

import numpy as np

from refssm import neurons, spiking, ssm
from refssm import surrogate as surrogates    # `surrogate` is the libraries' argument name
from refssm._checks import as_array, choice, in_range, per_sequence, time_series

# library surrogate name -> (refssm surrogate name, its parameters from the library's scale)
SPIKINGJELLY_SURROGATES = {
    "atan": ("atan", lambda alpha: dict(alpha=alpha)),                 # alpha/2 / (1 + (pi alpha z/2)^2)
    "sigmoid": ("sigmoid", lambda alpha: dict(alpha=alpha)),           # alpha s(alpha z)(1 - s(alpha z))
    "piecewise_quadratic": ("triangle", lambda alpha: dict(width=1.0 / alpha)),  # max(0, alpha - alpha^2 |z|)
}
SNNTORCH_SURROGATES = {
    "atan": ("atan", "alpha"),                                         # alpha/2 / (1 + (pi alpha z/2)^2)
    "fast_sigmoid": ("fast_sigmoid", "slope"),                         # 1 / (slope |z| + 1)^2
    "sigmoid": ("sigmoid", "slope"),                                   # slope s(slope z)(1 - s(slope z))
}
NORSE_METHODS = ("super",)
SNNTORCH_RESETS = ("subtract", "zero", "none")
LIBRARIES = ("spikingjelly_lif", "spikingjelly_if", "snntorch_leaky", "norse_lif")


def _scale(name, value):
    """A surrogate's scale: a finite float > 0."""
    return float(in_range(name, as_array(name, value, ndim=0), 0.0, lo_open=True))


def _spikingjelly_surrogate(name, alpha):
    choice("surrogate", name, tuple(SPIKINGJELLY_SURROGATES))
    refssm_name, params = SPIKINGJELLY_SURROGATES[name]
    return surrogates.get(refssm_name, fire_at_equality=True, **params(_scale("alpha", alpha)))


def _spikingjelly_threshold(x, v_threshold, v_reset):
    """SpikingJelly's threshold in the shifted coordinates w = V - v_reset (v_reset None: 0)."""
    r = 0.0 if v_reset is None else float(as_array("v_reset", v_reset, ndim=0))
    th = as_array("v_threshold", v_threshold) - r
    if np.any(th <= 0):
        raise ValueError(f"v_threshold must exceed v_reset (a neuron at rest must not fire), got "
                         f"v_threshold={v_threshold!r}, v_reset={v_reset!r}")
    return r, per_sequence("v_threshold", th, x)


# --------------------------------------------------------------------------------------------------
# SpikingJelly
# --------------------------------------------------------------------------------------------------

def spikingjelly_lif(x, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, detach_reset=False,
                     surrogate="atan", alpha=2.0):
    """SpikingJelly's multi-step `LIFNode` (activation_based/neuron/lif.py, _ops/lif/reference.py):

        charge   H_t = V_{t-1} + (X_t - (V_{t-1} - V_reset)) / tau          decay_input=True
                 H_t = V_{t-1} - (V_{t-1} - V_reset) / tau + X_t            decay_input=False
        fire     S_t = Heaviside(H_t - V_th),  Heaviside(0) = 1
        reset    V_t = S_t V_reset + (1 - S_t) H_t     (hard)   V_t = H_t - S_t V_th   (v_reset=None, soft;
                 the charge then uses V_reset = 0);      V_{-1} = V_reset (0 for soft)

    Mapping to refssm.neurons.lif / refssm.spiking.lif, in the shifted potential w = V - V_reset:
    w-charge h_t = (1 - 1/tau) w_{t-1} + x'_t, so tau' = 1 - 1/tau, x' = X / tau (decay_input) or X,
    v_th' = V_th - V_reset, reset to 0, fire at equality; H = v + V_reset. detach_reset=False is
    gradient "bptt" (the spike inside the reset carries the surrogate), True is "bptt_detach_reset".
    The surrogate is applied at H - V_th, as the library does.

    x (..., T); tau > 1 (SpikingJelly asserts it); V_th > V_reset. SpikingJelly's own default
    surrogate is Sigmoid(alpha=4); the default here is ATan(alpha=2) (refssm.DESIGN). Returns
    (spikes, H, vjp) with spikes, H (..., T) float64 and vjp(g_spikes) -> g_x (..., T).
    """
    x = time_series("x", x)
    tau = per_sequence("tau", tau, x, 1.0, None, lo_open=True)
    r, th = _spikingjelly_threshold(x, v_threshold, v_reset)
    sg = _spikingjelly_surrogate(surrogate, alpha)
    scale = 1.0 / tau[..., None] if decay_input else 1.0
    xs, leak, reset = x * scale, 1.0 - 1.0 / tau, "soft" if v_reset is None else "hard"
    s, h = neurons.lif(xs, leak, th, reset, 0.0, fire_at_equality=True)

    def vjp(g_spikes):
        gs = _cotangent(g_spikes, s)
        _, ctx = spiking.lif(xs, leak, th, sg, "bptt_detach_reset" if detach_reset else "bptt", reset, 0.0)
        return spiking.lif_vjp(ctx, gs)[0] * scale

    return s, h + r, vjp


def spikingjelly_if(x, v_threshold=1.0, v_reset=0.0, detach_reset=False, surrogate="atan", alpha=2.0):
    """SpikingJelly's multi-step `IFNode` (activation_based/neuron/integrate_and_fire.py):

        H_t = V_{t-1} + X_t,   S_t = Heaviside(H_t - V_th) (fires at equality),
        V_t = S_t V_reset + (1 - S_t) H_t (hard) or H_t - S_t V_th (v_reset=None),  V_{-1} = V_reset or 0.

    Eliminating V: H_t = (1 - S_{t-1}) (H_{t-1} - V_reset) + V_reset + X_t (hard) or H_t = H_{t-1} -
    V_th S_{t-1} + X_t (soft): snnTorch's recurrence (`_previous_step_reset`) with beta = 1, in the
    shifted potential H - V_reset, with reset "zero" or "subtract", firing at equality, and the
    gradient through the reset unless detach_reset. (refssm's LIF needs tau < 1: an IF has tau = 1.)
    Returns (spikes, H, vjp) as spikingjelly_lif.
    """
    x = time_series("x", x)
    r, th = _spikingjelly_threshold(x, v_threshold, v_reset)
    sg = _spikingjelly_surrogate(surrogate, alpha)
    mechanism = "subtract" if v_reset is None else "zero"
    s, m = _previous_step_reset(x, 1.0, th, mechanism, fire_at_equality=True)

    def vjp(g_spikes):
        return _previous_step_reset_vjp(_cotangent(g_spikes, s), s, m, 1.0, th, mechanism, sg,
                                        through_reset=not detach_reset)

    return s, m + r, vjp


# --------------------------------------------------------------------------------------------------
# snnTorch
# --------------------------------------------------------------------------------------------------

def snntorch_leaky(x, beta, threshold=1.0, reset_mechanism="subtract", surrogate="atan", alpha=2.0,
                   slope=25.0):
    """snnTorch's `Leaky` with its defaults (snntorch/_neurons/leaky.py, reset_delay=True):

        reset_t = Heaviside(mem_{t-1} - thr)  (detached: mem_reset clones and detaches the spike)
        subtract  mem_t = beta mem_{t-1} + x_t - reset_t thr        (the subtraction is not decayed)
        zero      mem_t = beta (1 - reset_t) mem_{t-1} + x_t
        none      mem_t = beta mem_{t-1} + x_t
        spk_t = Heaviside(mem_t - thr),  Heaviside(0) = 0 (mem > thr);   mem_{-1} = 0

    so reset_t = spk_{t-1}: the reset is decided from the previous step's membrane and applied one
    step late, which refssm's LIF (reset from the same step, then decayed: u = v - s thr,
    v_{t+1} = tau u + x) does not express; see `_previous_step_reset`. The gradient flows through
    mem's leak only (the reset is detached), with the surrogate at mem_t - thr.

    x (..., T); beta in [0, 1] (the library clamps it silently; here it is checked), thr > 0.
    surrogate: "atan" (scale alpha), "fast_sigmoid" or "sigmoid" (scale slope), as snnTorch names them.
    Returns (spk, mem, vjp) with spk, mem (..., T) float64: mem is what Leaky returns.
    Note: snnTorch makes spikes with .float(), float32, and stores a Python float beta or threshold as
    a float32 tensor, so a float64 run of the library matches this function only with beta and
    threshold passed as float64 tensors (see run_library).
    """
    x = time_series("x", x)
    beta = per_sequence("beta", beta, x, 0.0, 1.0)
    thr = per_sequence("threshold", threshold, x, 0.0, None, lo_open=True)
    choice("reset_mechanism", reset_mechanism, SNNTORCH_RESETS)
    choice("surrogate", surrogate, tuple(SNNTORCH_SURROGATES))
    name, scale_name = SNNTORCH_SURROGATES[surrogate]
    scale = {"alpha": alpha, "slope": slope}[scale_name]
    sg = surrogates.get(name, fire_at_equality=False,
                        **{"slope" if name == "fast_sigmoid" else "alpha": _scale(scale_name, scale)})
    s, m = _previous_step_reset(x, beta, thr, reset_mechanism, fire_at_equality=False)

    def vjp(g_spikes):
        return _previous_step_reset_vjp(_cotangent(g_spikes, s), s, m, beta, thr, reset_mechanism, sg,
                                        through_reset=False)

    return s, m, vjp


def _previous_step_reset(x, beta, thr, mechanism, fire_at_equality):
    """The neuron whose reset is decided by the previous step's spike (snnTorch Leaky; SpikingJelly IF
    with beta = 1):

        r_t = s_{t-1} (r_0 = 0);   subtract: m_t = beta m_{t-1} + x_t - thr r_t
        zero: m_t = beta (1 - r_t) m_{t-1} + x_t;   none: m_t = beta m_{t-1} + x_t
        s_t = 1[m_t >= thr] (fire_at_equality) or 1[m_t > thr];   m_{-1} = 0

    x (..., T); beta, thr broadcast to x.shape[:-1]. Returns (s, m), both (..., T). The order of the
    floating-point operations is snnTorch's ((beta m + x) - r thr).
    """
    s, m = np.empty_like(x), np.empty_like(x)
    prev = np.zeros(x.shape[:-1])
    r = np.zeros(x.shape[:-1])
    for t in range(x.shape[-1]):
        if mechanism == "zero":
            prev = (1.0 - r) * prev
        cur = beta * prev + x[..., t]
        if mechanism == "subtract":
            cur = cur - r * thr
        m[..., t] = cur
        s[..., t] = cur >= thr if fire_at_equality else cur > thr
        prev, r = cur, s[..., t]
    return s, m


def _previous_step_reset_vjp(gs, s, m, beta, thr, mechanism, sg, through_reset):
    """dL/dx of `_previous_step_reset` for L = sum(gs * s), with ds_t/dm_t := g_t = sg.grad(m_t - thr).
    In reverse time from dL/dm_T = 0:

        dL/ds_t = gs_t + [through_reset] dL/dm_{t+1} dm_{t+1}/ds_t,  dm_{t+1}/ds_t = -thr (subtract),
                  -beta m_t (zero), 0 (none)
        dL/dm_t = dL/ds_t g_t + dL/dm_{t+1} dm_{t+1}/dm_t,   dm_{t+1}/dm_t = beta (1 - s_t) (zero), beta
        dL/dx_t = dL/dm_t
    """
    g = sg.grad(m - thr[..., None])
    gx = np.empty_like(m)
    gm_next = np.zeros(m.shape[:-1])
    for t in range(m.shape[-1] - 1, -1, -1):
        gs_t = gs[..., t]
        if through_reset and mechanism != "none":
            gs_t = gs_t + gm_next * (-thr if mechanism == "subtract" else -beta * m[..., t])
        leak = beta * (1.0 - s[..., t]) if mechanism == "zero" else beta
        gx[..., t] = gs_t * g[..., t] + gm_next * leak
        gm_next = gx[..., t]
    return gx


# --------------------------------------------------------------------------------------------------
# Norse
# --------------------------------------------------------------------------------------------------

def norse_lif(x, tau_syn_inv=200.0, tau_mem_inv=100.0, v_leak=0.0, v_th=1.0, v_reset=0.0, dt=1e-3,
              method="super", alpha=100.0):
    """Norse's feed-forward current-based LIF (`norse.torch.LIF`; functional/lif.py
    lif_feed_forward_step), one explicit Euler step of v' = tau_mem_inv (v_leak - v + i),
    i' = -tau_syn_inv i per time step, the input current added first:

        i_new_t = i_{t-1} + x_t
        v_dec_t = v_{t-1} + dt tau_mem_inv ((v_leak - v_{t-1}) + i_new_t)
        i_t     = i_new_t - dt tau_syn_inv i_new_t
        z_t     = Heaviside(v_dec_t - v_th),  Heaviside(0) = 0 (v > v_th)
        v_t     = (1 - z_t) v_dec_t + z_t v_reset          v_{-1} = v_leak, i_{-1} = 0

    The reset is not detached, so the surrogate gradient flows through z_t in the reset.
    Mapping: with a = dt tau_mem_inv and b = dt tau_syn_inv, the synaptic current is the first-order
    filter i_new_t = (1 - b) i_new_{t-1} + x_t (refssm.ssm.scan with Abar = 1 - b, Bbar = 1), and in
    the shifted potential w = v - v_reset the membrane is refssm's hard-reset LIF with
    tau = 1 - a, input a (i_new_t + v_leak - v_reset) (plus (1 - a)(v_leak - v_reset) at t = 0, the
    initial state), v_th' = v_th - v_reset, firing above the threshold, gradient "bptt".

    method "super": SuperSpike, whose backward in Norse 1.1.0 is 1/(|z| + 1)^2 (refssm fast_sigmoid
    with slope 1); alpha is accepted as Norse accepts it and unused, as in Norse 1.1.0.
    x (..., T); 0 < a <= 1, 0 <= b <= 1, v_th > v_reset. Returns (z, v, vjp) with v the state
    Norse records (after the reset), (..., T) float64.
    """
    x = time_series("x", x)
    choice("method", method, NORSE_METHODS)
    _scale("alpha", alpha)
    dt = float(in_range("dt", as_array("dt", dt, ndim=0), 0.0, lo_open=True))
    a = float(in_range("dt * tau_mem_inv", dt * float(as_array("tau_mem_inv", tau_mem_inv, ndim=0)),
                       0.0, 1.0, lo_open=True))
    b = float(in_range("dt * tau_syn_inv", dt * float(as_array("tau_syn_inv", tau_syn_inv, ndim=0)),
                       0.0, 1.0))
    rest = float(as_array("v_leak", v_leak, ndim=0)) - float(as_array("v_reset", v_reset, ndim=0))
    th = float(as_array("v_th", v_th, ndim=0)) - float(v_reset)
    if th <= 0:
        raise ValueError(f"v_th must exceed v_reset, got v_th={v_th!r}, v_reset={v_reset!r}")
    sg = surrogates.get("fast_sigmoid", fire_at_equality=False, slope=1.0)
    i_new = _synaptic_filter(x, 1.0 - b)
    xs = a * (i_new + rest)
    xs[..., 0] += (1.0 - a) * rest
    z, w = neurons.lif(xs, 1.0 - a, th, "hard", 0.0, fire_at_equality=False)

    def vjp(g_spikes):
        gz = _cotangent(g_spikes, z)
        _, ctx = spiking.lif(xs, 1.0 - a, th, sg, "bptt", "hard", 0.0)
        g_inew = a * spiking.lif_vjp(ctx, gz)[0]
        return _synaptic_filter(g_inew[..., ::-1], 1.0 - b)[..., ::-1]   # the adjoint: reversed time

    return z, w * (1.0 - z) + float(v_reset), vjp


def _synaptic_filter(x, decay):
    """y_t = decay y_{t-1} + x_t, y_{-1} = 0, along the last axis: refssm.ssm.scan with one real mode
    (Abar = decay, Bbar = 1, C = 1/2, so that y = 2 Re(C x_state))."""
    one = np.ones((1, 1), dtype=complex)
    return ssm.scan(x[..., None, :], decay * one, one, 0.5 * one)[..., 0, :]


def _cotangent(g, s):
    g = as_array("g_spikes", g)
    if g.shape != s.shape:
        raise ValueError(f"g_spikes must have the spikes' shape {s.shape}, got {g.shape}")
    return g


# --------------------------------------------------------------------------------------------------
# The libraries themselves (for parity checks; needs PyTorch and the library: refssm[parity])
# --------------------------------------------------------------------------------------------------

_LIBRARY_MODULES = {"spikingjelly_lif": "spikingjelly", "spikingjelly_if": "spikingjelly",
                    "snntorch_leaky": "snntorch", "norse_lif": "norse"}


def library_version(name):
    """The installed version of the library behind preset `name` (None if it is not importable)."""
    from importlib import metadata

    choice("name", name, LIBRARIES)
    try:
        return metadata.version(_LIBRARY_MODULES[name])
    except metadata.PackageNotFoundError:
        return None


def run_library(name, x, g_spikes, dtype="float64", **params):
    """Run the library neuron behind preset `name` on x (..., T) and backpropagate sum(g_spikes * spikes).

    Returns dict(spikes, membrane, g_x) as float64 numpy arrays (..., T), the membrane being what the
    preset returns (SpikingJelly: H, recomputed from the recorded V_{t-1} by the library's own charge
    function; snnTorch: mem; Norse: the recorded state v). params: the preset's keyword arguments
    (scalars). dtype "float64" runs the library in float64 with its parameters and initial state as
    float64 tensors (so that nothing is rounded to float32 on the way); "float64_input" gives it a float64
    input but the parameters as Python floats, which snnTorch and Norse store as float32 tensors (what a
    user who only casts the data gets); "float32" runs it the way a user does by default (float32 input,
    Python-float parameters).
    Raises ImportError (naming `pip install refssm[parity]`) if PyTorch or the library is missing.
    """
    choice("name", name, LIBRARIES)
    choice("dtype", dtype, ("float32", "float64", "float64_input"))
    try:
        import torch
    except ImportError:
        raise ImportError("run_library needs PyTorch and the library: pip install 'refssm[parity]'") from None
    x = time_series("x", x)
    g = as_array("g_spikes", g_spikes)
    tdt = torch.float32 if dtype == "float32" else torch.float64
    xt = torch.tensor(np.moveaxis(x, -1, 0), dtype=tdt, requires_grad=True)       # time first
    spikes, membrane = _RUNNERS[name](torch, xt, tdt if dtype == "float64" else None, **params)
    (spikes * torch.tensor(np.moveaxis(g, -1, 0), dtype=spikes.dtype)).sum().backward()
    out = dict(spikes=spikes, membrane=membrane, g_x=xt.grad)
    return {k: np.moveaxis(v.detach().double().numpy(), 0, -1) for k, v in out.items()}


def _sj_surrogate(surrogate="atan", alpha=2.0):
    from spikingjelly.activation_based import surrogate as sj

    choice("surrogate", surrogate, tuple(SPIKINGJELLY_SURROGATES))
    cls = {"atan": sj.ATan, "sigmoid": sj.Sigmoid, "piecewise_quadratic": sj.PiecewiseQuadratic}[surrogate]
    return cls(alpha=alpha)


def _run_spikingjelly_lif(torch, xt, pdt, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
                          detach_reset=False, surrogate="atan", alpha=2.0):
    from spikingjelly.activation_based import functional, neuron

    node = neuron.LIFNode(tau=float(tau), decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
                          surrogate_function=_sj_surrogate(surrogate, alpha), detach_reset=detach_reset,
                          step_mode="m", store_v_seq=True)
    spikes = node(xt)
    V = node.v_seq.detach()
    V_prev = torch.cat([torch.full_like(V[:1], 0.0 if v_reset is None else v_reset), V[:-1]])
    H = torch.stack([functional.lif_charge(xt[t].detach(), V_prev[t], float(tau), decay_input, v_reset)
                     for t in range(xt.shape[0])])
    return spikes, H


def _run_spikingjelly_if(torch, xt, pdt, v_threshold=1.0, v_reset=0.0, detach_reset=False, surrogate="atan",
                         alpha=2.0):
    from spikingjelly.activation_based import neuron

    node = neuron.IFNode(v_threshold=v_threshold, v_reset=v_reset,
                         surrogate_function=_sj_surrogate(surrogate, alpha), detach_reset=detach_reset,
                         step_mode="m", store_v_seq=True)
    spikes = node(xt)
    V = node.v_seq.detach()
    V_prev = torch.cat([torch.full_like(V[:1], 0.0 if v_reset is None else v_reset), V[:-1]])
    return spikes, V_prev + xt.detach()                                       # IF charge H = V + X


def _run_snntorch_leaky(torch, xt, pdt, beta=0.9, threshold=1.0, reset_mechanism="subtract", surrogate="atan",
                        alpha=2.0, slope=25.0):
    import snntorch
    from snntorch import surrogate as st

    choice("surrogate", surrogate, tuple(SNNTORCH_SURROGATES))
    grad = {"atan": lambda: st.atan(alpha=alpha), "fast_sigmoid": lambda: st.fast_sigmoid(slope=slope),
            "sigmoid": lambda: st.sigmoid(slope=slope)}[surrogate]()
    if pdt is not None:                            # else Python floats: the library stores them as float32
        beta, threshold = torch.tensor(beta, dtype=pdt), torch.tensor(threshold, dtype=pdt)
    lif = snntorch.Leaky(beta=beta, threshold=threshold, spike_grad=grad, reset_mechanism=reset_mechanism)
    mem = torch.zeros_like(xt[0])
    spikes, mems = [], []
    for t in range(xt.shape[0]):
        spk, mem = lif(xt[t], mem)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems).detach()


def _run_norse_lif(torch, xt, pdt, tau_syn_inv=200.0, tau_mem_inv=100.0, v_leak=0.0, v_th=1.0, v_reset=0.0,
                   dt=1e-3, method="super", alpha=100.0):
    import norse.torch as nt
    from norse.torch.functional.lif import LIFFeedForwardState

    choice("method", method, NORSE_METHODS)
    t = (lambda v: torch.tensor(v, dtype=pdt)) if pdt is not None else (lambda v: v)   # Python floats:
    p = nt.LIFParameters(tau_syn_inv=t(tau_syn_inv), tau_mem_inv=t(tau_mem_inv), v_leak=t(v_leak),  # Norse makes
                         v_th=t(v_th), v_reset=t(v_reset), method=method, alpha=t(alpha))          # float32 tensors
    lif = nt.LIF(p=p, dt=dt, record_states=True)
    state = None
    if pdt is not None:                            # the module's default initial v is a float32 tensor
        state = LIFFeedForwardState(v=torch.full(xt.shape[1:], v_leak, dtype=pdt),
                                    i=torch.zeros(xt.shape[1:], dtype=pdt))
    z, states = lif(xt, state)
    return z, states.v.detach()


_RUNNERS = {"spikingjelly_lif": _run_spikingjelly_lif, "spikingjelly_if": _run_spikingjelly_if,
            "snntorch_leaky": _run_snntorch_leaky, "norse_lif": _run_norse_lif}


def preset(name):
    """The preset function called `name` (one of LIBRARIES)."""
    return globals()[choice("name", name, LIBRARIES)]
