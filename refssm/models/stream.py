"""Streaming inference: the trained network as a recurrence, one time step at a time.

Spiking SSMs exist to run step by step on event-driven hardware. `step` advances a network by one
step from its carry and equals the parallel (convolution) forward of evaluation mode at every step:
float64 to ~1e-12, spikes exactly (tests/test_stream.py). It runs *the same model code* as the
parallel forward (each model file's `core`) on a StepTape, whose operations that carry state in time
are replaced by their recurrences; everything else (norms in evaluation mode, GLU, GSU, GELU, linear
maps) is pointwise in time and runs unchanged on (B, H, 1) slices.

    state in time                 recurrence (per batch row, channel)                       carry
    SSM, ZOH/bilinear/Euler      x_t = Abar x_{t-1} + Bbar u_t, y_t = 2 Re sum_n C_n x_t + D u_t   x (B, H, N/2)
    LongSpike, GL schemes        sum_{j<=t} w_j x_{t-j} = dt^a (lam x_{t(-1)} + u_t), the exact   history of x
                                 history sum (O(t) per step; refssm.fractional.gl_recursion)
    LongSpike, decoupled SOE     z_m,t = e^{a_m dt} z_m,t-1 + b_m u_t, x_t = sum_m eta_m z_m,t        z (B, H, N/2, M)
    LIF                          v_t = tau u_{t-1} + x_t, s_t = H(v_t - v_th), reset                u (B, H)
    SDN-LIF                      s_t = H(x_t + SDN(x_{t-8..t-1}) - 1)                             last 8 inputs
    refractory neuron            m_t = tau v_{t-1} + y_t - theta_r r_{t-1}, ...                     v, r (B, H)
    Bernoulli sampler            the same per-example uniforms, drawn one step at a time          noise streams

A two-sided (bidirectional) kernel needs the future and cannot run step by step; neither can the
BatchNorm of training mode (statistics over time): `step` runs evaluation mode.
"""

import numpy as np

from refssm import backend, fractional, neurons, ops, ssm
from refssm._checks import trusted
from refssm.models import layers
from refssm.tape import Var


class StepTape:
    """The Tape interface (param, input, op, call, context) for one time step, forward only."""

    def __init__(self, params, cfg, carry):
        self.params, self.cfg, self.carry, self.backend = params, cfg, carry, "numpy"
        self._ctx, self._calls = {}, 0

    def param(self, name):
        return Var(self.params[name], None)

    def input(self, value):
        return Var(value, None)

    def op(self, name, *args, **kwargs):
        if name in STATEFUL:
            return Var(STATEFUL[name](self, *(a.value if isinstance(a, Var) else a for a in args)), None)
        fwd, _ = backend.oracle(name)
        return self.call(fwd, None, *args, **kwargs)

    def call(self, fwd, vjp, *args, **kwargs):
        out = fwd(*(a.value if isinstance(a, Var) else a for a in args), **kwargs)
        v = Var(out[0], None)
        self._ctx[id(v)] = out[1]
        return (v, *out[2:]) if len(out) > 2 else v

    def context(self, v):
        return self._ctx[id(v)]

    def site(self, kind, key=None):
        """The carry of a stateful site, created on first use. Neuron sites are numbered in call order
        (the same in every step); SSM sites are named by their layer prefix."""
        if key is None:
            key = f"{kind}.{self._calls}"
            self._calls += 1
        return self.carry.setdefault(key, {"kind": kind})

    def ssm_step(self, cfg, pre, z):
        return Var(ssm_step(self, cfg, pre, z.value), None)


# --------------------------------------------------------------------------------------------------
# Recurrences of the stateful operations, called with (B, H, 1) slices.
# --------------------------------------------------------------------------------------------------

def _lif(tape, x, tau, v_th, sg, gradient="bptt", reset="hard", v_reset=0.0):
    c = tape.site("lif")
    u = c.setdefault("u", np.zeros(x.shape[:2], x.dtype))
    s, _, c["u"] = neurons.lif_step(u, x[..., 0], tau, v_th, reset, v_reset, sg.fire_at_equality)
    return s[..., None]


def _refractory(tape, y, ln_vth, log_theta_r, tau, beta, sg):
    c = tape.site("refractory")
    zeros = np.zeros(y.shape[:2], y.dtype)
    v, r = c.get("v", zeros), c.get("r", zeros)
    s, _, c["v"], c["r"] = neurons.refractory_step(v, r, y[..., 0], tau, np.exp(ln_vth), np.exp(log_theta_r), beta,
                                                   sg.fire_at_equality)
    return s[..., None]


def _sdn_lif(tape, x, sdn_params, sg):
    from refssm import sdn

    c = tape.site("sdn_lif")
    past = c.setdefault("past", np.zeros(x.shape[:2] + (sdn.K,), x.dtype))   # x_{t-8} .. x_{t-1}
    window = np.concatenate([past, x], axis=-1)                               # (B, H, 9)
    s, _ = sdn.sdn_spikes(window, sdn_params, sg.fire_at_equality)
    c["past"] = window[..., 1:]
    return s[..., -1:]


STATEFUL = {"lif": _lif, "refractory": _refractory, "sdn_lif": _sdn_lif}


def ssm_step(tape, cfg, pre, z):
    """y_t = (K * z)_t + D z_t for z (B, H, 1), by the recurrence of the layer's kernel."""
    p = tape.params
    c = tape.site("ssm", pre + "ssm")
    if "modes" not in c:
        c.update(_ssm_modes(p, cfg, pre))
    u = z[..., 0].astype(np.float64)                                          # (B, H)
    if c["method"] == "soe_decoupled":                                        # z_m = e^{a dt} z_m + b u
        c.setdefault("state", np.zeros(u.shape + c["decay"].shape[-2:], complex))
        c["state"] = c["decay"] * c["state"] + c["gain"] * u[..., None, None]
        x = np.einsum("bhnm,hnm->bhn", c["state"], np.broadcast_to(c["eta"], c["decay"].shape))
    elif c["method"] in ("gl", "gl_explicit"):
        x = _gl_step(c, u)
    else:                                                                     # x = Abar x + Bbar u
        c.setdefault("state", np.zeros(u.shape + c["Abar"].shape[-1:], complex))
        c["state"] = c["Abar"] * c["state"] + c["Bbar"] * u[..., None]
        x = c["state"]
    y = 2 * np.einsum("bhn,hn->bh", x, c["CB"]).real + p[pre + "D"] * u
    return y[..., None].astype(z.dtype)


def _ssm_modes(p, cfg, pre):
    """The discretised modes of a layer: what its kernel (layers.layer_kernel) is the impulse response of."""
    A = -np.exp(p[pre + "log_A_real"].astype(np.float64)) + 1j * p[pre + "A_imag"]
    B = p[pre + "B_re"] + 1j * p[pre + "B_im"] if pre + "B_re" in p else np.ones_like(A)
    C = (p[pre + "C_re"] + 1j * p[pre + "C_im"]).astype(np.complex128)
    dt = np.exp(p[pre + "log_dt"].astype(np.float64))
    if cfg["model"] != "longspike":
        Abar, Bbar = ssm.discretize(A, B, dt, cfg["method"])
        return dict(modes=True, method=cfg["method"], Abar=Abar, Bbar=np.broadcast_to(Bbar, C.shape), CB=C)
    CB = C * B                                                                # K = 2 Re sum C B k
    if cfg["frac_method"] == "soe_decoupled":
        (omega, eta), _ = fractional.longspike_omega_eta_fwd(p[pre + "omega_logit"].astype(np.float64),
                                                             p[pre + "eta_logit"].astype(np.float64))
        ctx = fractional.soe_decoupled_prepare(np.broadcast_to(A, C.shape), dt[:, None], 1, omega, eta)
        return dict(modes=True, method="soe_decoupled", decay=np.exp(ctx["a"] * ctx["dt"]), gain=ctx["b"],
                    eta=ctx["eta"], CB=CB)
    w, c, scale, _ = fractional.gl_scheme(np.broadcast_to(A, C.shape), cfg["alpha"], dt[:, None], 1)
    return dict(modes=True, method=cfg["frac_method"], alpha=cfg["alpha"], c=c, scale=scale, CB=CB * scale,
                weights=[1.0], history=[])


def _gl_step(c, u):
    """One step of fractional.gl_recursion driven by u: with w_j the GL weights (w_0 = 1),
        implicit: x_t (w_0 - c) = u_t - sum_{j>=1} w_j x_{t-j};  explicit: x_t w_0 = u_t - sum_{j>=1} w_j x_{t-j} + c x_{t-1}
    and the layer output scale * x_t (fractional.gl_kernel_recursion). Keeps the whole history (exact)."""
    hist, w = c["history"], c["weights"]
    n = len(hist)
    while len(w) <= n:                                                        # w_j = w_{j-1} (1 - (a + 1) / j)
        w.append(w[-1] * (1.0 - (c["alpha"] + 1.0) / len(w)))
    acc = u[..., None] + 0j                                                   # (B, H, 1) -> broadcast modes
    if n:
        past = np.stack(hist[::-1], axis=-1)                                  # (B, H, N/2, n): x_{t-1} .. x_{t-n}
        acc = acc - past @ np.asarray(w[1:n + 1])
    if c["method"] == "gl_explicit":
        x = acc + (c["c"] * hist[-1] if n else 0.0)
        x = x / w[0]
    else:
        x = acc / (w[0] - c["c"])
    hist.append(np.broadcast_to(x, u.shape + c["c"].shape[-1:]).copy())
    return x


# --------------------------------------------------------------------------------------------------
# Public: init_carry, step, stream
# --------------------------------------------------------------------------------------------------

def check_streamable(cfg):
    if cfg["bidirectional"]:
        raise ValueError("bidirectional must be False for step-by-step inference: a two-sided kernel needs "
                         "future inputs (train with --causal)")
    if cfg["head"] == "retrieval":
        raise ValueError("head 'retrieval' compares two whole sequences; it has no step-by-step form")


def init_carry(cfg, batch, rng, example_ids=None):
    """The carry before the first step: empty recurrent states (zeros on first use) and the noise of the
    stochastic spikes, keyed as the parallel forward keys it (one draw from rng, per-example streams)."""
    check_streamable(cfg)
    ids = np.arange(batch) if example_ids is None else np.asarray(example_ids)
    return {"noise": layers.Noise(rng.integers(2**63), ids), "t": 0}


def step(p, state, cfg, carry, x_t, aux=None):
    """Advance the network one step: x_t (B, d_input) floats or (B,) tokens -> h_t (B, H), the hidden
    state after the final norm (what the head reads; head "lm": models.lm_logits(p, h_t)). Evaluation mode.
    carry: from init_carry, updated in place and returned."""
    from refssm import models

    check_streamable(cfg)
    dtype = np.dtype(cfg["dtype"])
    p = {k: np.asarray(v, dtype=dtype) for k, v in p.items()}
    state = {k: np.asarray(v, dtype=dtype) for k, v in state.items()}
    x = np.asarray(x_t)[:, None] if cfg["vocab_size"] is not None else np.asarray(x_t, dtype)[:, None, :]
    env = dict(train=False, state=state, new_state=dict(state), aux=aux or {}, noise=carry["noise"])
    t = StepTape(p, cfg, carry)
    with trusted():
        h, _ = models.network(t, cfg, x, None, env)
    carry["t"] += 1
    return h.value[..., 0], carry


def stream(p, state, cfg, x, rng, aux=None, example_ids=None):
    """Run `step` over every step of x ((B, L, d_input) or (B, L) tokens): h (B, H, L)."""
    carry = init_carry(cfg, len(x), rng, example_ids)
    return np.stack([step(p, state, cfg, carry, x[:, i], aux)[0] for i in range(x.shape[1])], axis=-1)


def lm_logits(p, h_t):
    """Next-token logits (B, V) from a step's hidden state h_t (B, H): the LM head's decoder."""
    return ops.linear(h_t, p["dec.W"], p["dec.b"])[0]
