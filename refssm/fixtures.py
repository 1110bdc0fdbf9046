"""Golden fixtures: refssm's oracles on fixed inputs, in one HDF5 file, for checking other implementations.

    refssm fixtures export OUT.h5                 write every case (float64)
    refssm fixtures check REFERENCE.h5 THEIRS.h5  per-case table; exit 1 on any failure or missing case
    refssm fixtures list REFERENCE.h5             the cases, their equations and tolerances
    assert_matches(REFERENCE, "neurons/lif/hard_geq", their_function)     the same inside pytest

A case is one oracle (or one model block) on fixed inputs: its inputs and parameters, its outputs, and
the gradients of a fixed random linear functional of the outputs,

    F = sum_o <c_o, o>    (<c, o> = sum c o for real o, sum Re(conj(c) o) for complex o)

with respect to every differentiable input (complex inputs: dF/dRe z + i dF/dIm z, refssm's convention).
Spiking cases state their surrogate: there "gradient" means the surrogate gradient, not a derivative.

File layout (HDF5, h5py; inspect with `h5dump -A FILE` or `refssm fixtures list FILE`)::

    /                         attrs: format = "refssm-fixtures", format_version (int), refssm_version,
                                     sha256 (over every dataset, path order; written by refssm only)
    /cases/<case>/            one group per case; <case> may contain "/" (e.g. "ssm/kernel/zoh")
        attrs                 equation, conventions, gradient ("exact", "surrogate: ..." or "none"),
                              params (JSON: the non-array arguments, e.g. {"L": 16, "method": "zoh"}),
                              rtol, atol (the case's tolerance), refssm_version, format_version
        inputs/<name>         arrays, named as the oracle's arguments (so oracle(**inputs, **params) runs)
        outputs/<name>        arrays, in the oracle's return order (HDF5 creation order)
        cotangents/<output>   c_o of the functional F (only for the outputs F uses)
        grads/<input>         dF/d input
    A dataset may carry its own rtol, atol attributes (e.g. rtol = atol = 0 for spikes: exact).

A comparison passes where |theirs - ref| <= atol + rtol |ref| elementwise (numpy.isclose), shapes equal
and no NaN. Another implementation writes the same layout with only `format` at the root and
/cases/<case>/outputs/* and grads/* (validation/README.md has a twenty-line PyTorch example).
Files are written atomically (temporary file, fsync, rename), as refssm.checkpoint does.
"""

import fnmatch
import json
import os
import sys
import zlib
from dataclasses import dataclass, field

import h5py
import numpy as np

import refssm
from refssm import conventions, fractional, neurons, spiking, ssm, surrogate
from refssm._io import digest, hdf5_atomic

FORMAT = "refssm-fixtures"
FORMAT_VERSION = 1
SECTIONS = ("inputs", "outputs", "cotangents", "grads")
COMPARED = ("outputs", "grads")

__all__ = ["FixtureError", "Case", "build_cases", "export", "load", "case_names", "load_case", "compare",
           "check", "assert_matches"]


class FixtureError(ValueError):
    """A file that is not a readable refssm fixtures file: missing, truncated, corrupt, foreign or too new."""


@dataclass
class Case:
    """One golden case (see the module docstring). `forward` (not stored) recomputes the outputs from
    (**inputs, **params); it lets the tests check the stored gradients by finite differences."""
    name: str
    equation: str
    conventions: str
    inputs: dict
    params: dict
    outputs: dict
    cotangents: dict = field(default_factory=dict)
    grads: dict = field(default_factory=dict)
    gradient: str = "none"
    rtol: float = 1e-10
    atol: float = 1e-12
    exact: tuple = ()                 # output names compared exactly (spikes, counts)
    forward: object = None


# --------------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------------

def _rng(name):
    """Each case draws from its own generator, seeded by its name: adding a case changes no other."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def _cot(rng, y):
    """A random cotangent of y's shape (complex for complex y)."""
    c = rng.standard_normal(np.shape(y))
    return c + 1j * rng.standard_normal(np.shape(y)) if np.iscomplexobj(y) else c


def _make(name, equation, conv, forward, inputs, params=None, outputs=("y",), vjp=None, using=None,
          gradient="exact", **kw):
    """Build a case: outputs = forward(**inputs, **params) (a tuple in the order `outputs`, or one array),
    cotangents for the outputs in `using` (default: all), grads = vjp(cotangents, **inputs, **params)."""
    params = params or {}
    rng = _rng(name)
    res = forward(**inputs, **params)
    res = res if isinstance(res, tuple) else (res,)
    out = dict(zip(outputs, (np.asarray(r) for r in res)))
    cots, grads = {}, {}
    if vjp is not None:
        cots = {o: _cot(rng, out[o]) for o in (using or outputs)}
        grads = {k: np.asarray(v) for k, v in vjp(cots, **inputs, **params).items()}
    else:
        gradient = "none"
    return Case(name, equation, conv, {k: np.asarray(v) for k, v in inputs.items()}, params, out, cots, grads,
                gradient, forward=forward, **kw)


def _ssm_modes(rng, H=3, n=2):
    A = -rng.uniform(0.2, 1.0, (H, n)) + 1j * rng.uniform(-3, 3, (H, n))
    B = rng.standard_normal((H, n)) + 1j * rng.standard_normal((H, n))
    C = rng.standard_normal((H, n)) + 1j * rng.standard_normal((H, n))
    return A, B, C, np.exp(rng.uniform(np.log(1e-2), np.log(0.5), H))


def _ssm_cases():
    cases = []
    for method in ssm.METHODS:
        name = f"ssm/discretize/{method}"
        A, B, _, dt = _ssm_modes(_rng(name + "/in"))

        def vjp(c, A, B, dt, method):
            J = ssm.discretize_jacobian(A, B, dt, method)      # holomorphic: grad z = grad w conj(dw/dz)
            gA = c["Abar"] * np.conj(J["dAbar_dA"]) + c["Bbar"] * np.conj(J["dBbar_dA"])
            gdt = (np.conj(c["Abar"]) * J["dAbar_ddt"] + np.conj(c["Bbar"]) * J["dBbar_ddt"]).real.sum(-1)
            return dict(A=gA, B=c["Bbar"] * np.conj(J["dBbar_dB"]), dt=gdt)

        cases.append(_make(name, {"zoh": "Abar = exp(dt A), Bbar = (Abar - 1)/A B",
                                  "bilinear": "Abar = (1 + dt A/2)/(1 - dt A/2), Bbar = dt B/(1 - dt A/2)",
                                  "euler": "Abar = exp(dt A), Bbar = dt B"}[method],
                           "A, B (H, N/2) complex; dt (H,) broadcast over the modes", ssm.discretize,
                           dict(A=A, B=B, dt=dt), dict(method=method), ("Abar", "Bbar"), vjp))
        name = f"ssm/kernel/{method}"
        A, B, C, dt = _ssm_modes(_rng(name + "/in"))

        def kvjp(c, A, B, C, dt, L, method):
            gA, gB, gC, gdt = ssm.kernel_vjp(ssm.kernel_fwd(A, B, C, dt, L, method)[1], c["K"])
            return dict(A=gA, B=gB, C=gC, dt=gdt)

        cases.append(_make(name, "K[h, l] = 2 Re sum_n C[h,n] Bbar[h,n] Abar[h,n]^l, l = 0..L-1",
                           f"discretisation {method!r}; N/2 conjugate-pair modes, output 2 Re", ssm.kernel,
                           dict(A=A, B=B, C=C, dt=dt), dict(L=16, method=method), ("K",), kvjp))
    rng = _rng("ssm/conv/in")
    u, K, K2 = rng.standard_normal((2, 3, 16)), rng.standard_normal((3, 16)), rng.standard_normal((3, 16))

    def cvjp(c, u, K):
        gu, gK = ssm.causal_conv_vjp(ssm.causal_conv_fwd(u, K)[1], c["y"])
        return dict(u=gu, K=gK)

    def bvjp(c, u, K_fwd, K_bwd):
        gu, gf, gb = ssm.bidirectional_conv_vjp(ssm.bidirectional_conv_fwd(u, K_fwd, K_bwd)[1], c["y"])
        return dict(u=gu, K_fwd=gf, K_bwd=gb)

    cases.append(_make("ssm/causal_conv", "y[..., t] = sum_{j<=t} K[..., j] u[..., t-j]",
                       "u (B, H, L), K (H, L), time last; linear (zero-padded), never circular",
                       ssm.causal_conv, dict(u=u, K=K), vjp=cvjp))
    cases.append(_make("ssm/bidirectional_conv",
                       "y[t] = sum_{j<=t} K_fwd[j] u[t-j] + sum_{d>=1} K_bwd[d-1] u[t+d]",
                       "K_bwd sees strictly future inputs (S4); K_bwd[L-1] unused", ssm.bidirectional_conv,
                       dict(u=u, K_fwd=K, K_bwd=K2), vjp=bvjp))
    A, B, C, dt = _ssm_modes(rng)
    Abar, Bbar = ssm.discretize(A, B, dt, "zoh")

    def svjp(c, u, Abar, Bbar, C):
        # scan = causal_conv(u, K) with K the Euler-B kernel of (log Abar, Bbar) at dt = 1, whose VJP
        # gives gA = gAbar conj(dAbar/dA) = gAbar conj(Abar) and gB = gBbar
        K, kctx = ssm.kernel_fwd(np.log(Abar), Bbar, C, np.ones(Abar.shape[0]), u.shape[-1], "euler")
        gu, gK = ssm.causal_conv_vjp(ssm.causal_conv_fwd(u, K)[1], c["y"])
        gA, gB, gC, _ = ssm.kernel_vjp(kctx, gK)
        return dict(u=gu, Abar=gA / np.conj(Abar), Bbar=gB, C=gC)

    cases.append(_make("ssm/scan", "x_t = Abar x_{t-1} + Bbar u_t, x_{-1} = 0; y_t = 2 Re sum_n C_n x_t[n]",
                       "u (B, H, L); Abar, Bbar, C (H, N/2) complex", ssm.scan,
                       dict(u=u, Abar=Abar, Bbar=Bbar, C=C), vjp=svjp))
    return cases


def _dyadic(rng, shape, lo=-1.0, hi=2.0, step=0.125):
    """Inputs on a grid of multiples of `step` (a power of two): with dyadic tau and thresholds the
    potentials are exact in float64, so exact ties v == v_th occur and test the spike convention."""
    return rng.integers(int(lo / step), int(hi / step) + 1, shape) * step


LIF_SURROGATE = dict(name="atan", alpha=2.0)


def _neuron_cases():
    cases = []
    for reset in ("hard", "soft"):
        for eq in (True, False):
            name = f"neurons/lif/{reset}_{'geq' if eq else 'gt'}"
            rng = _rng(name)
            x, tau, v_th = _dyadic(rng, (2, 3, 24)), np.array([0.5, 0.25, 0.75]), np.array([1.0, 0.75, 1.25])
            sg = surrogate.get(LIF_SURROGATE["name"], fire_at_equality=eq, alpha=LIF_SURROGATE["alpha"])

            def vjp(c, x, tau, v_th, reset, v_reset, fire_at_equality, sg=sg):
                gx, gth = spiking.lif_vjp(spiking.lif(x, tau, v_th, sg, "bptt", reset, v_reset)[1], c["s"])
                return dict(x=gx, v_th=gth)

            cases.append(_make(
                name, "v_t = tau u_{t-1} + x_t; s_t = 1[v_t >= v_th] (geq) or 1[v_t > v_th] (gt); hard: u_t = "
                "v_t (1 - s_t) + s_t v_reset, soft: u_t = v_t - s_t v_th; u_{-1} = 0",
                "x (B, H, L) dyadic (exact ties occur); tau, v_th per channel (H,); v is the pre-reset "
                "potential", neurons.lif, dict(x=x, tau=tau, v_th=v_th),
                dict(reset=reset, v_reset=0.0, fire_at_equality=eq), ("s", "v"), vjp, using=("s",),
                gradient="surrogate: atan(alpha=2) at v - v_th, BPTT through leak and reset "
                         "(refssm.spiking.lif gradient='bptt'); F = <c, s>", exact=("s",), rtol=1e-12))
    rng = _rng("neurons/refractory")
    x = rng.normal(0.4, 0.8, (2, 3, 24))
    rp = dict(tau=np.array([0.5, 0.25, 0.8]), v_th=np.array([1.0, 0.8, 1.2]), theta_r=np.array([0.3, 0.1, 0.5]),
              beta=np.array([0.8, 0.5, 0.9]))
    sg = surrogate.get("triangle")

    def rvjp(c, x, tau, v_th, theta_r, beta, sg=sg):
        _, ctx = spiking.refractory(x, np.log(v_th), np.log(theta_r), tau, beta, sg)
        gx, gln_vth, gln_th = spiking.refractory_vjp(ctx, c["s"])
        return dict(x=gx, v_th=gln_vth / v_th, theta_r=gln_th / theta_r)

    refr_eq = ("m_t = tau v_{t-1} + x_t - theta_r r_{t-1}; s_t = 1[m_t >= v_th]; v_t = tau v_{t-1} + x_t - "
               "v_th s_t; r_t = beta r_{t-1} + s_t; v_{-1} = r_{-1} = 0")
    cases.append(_make("neurons/refractory", refr_eq, "SPikE-SSM reconstruction (reference notes B2); m is "
                       "the potential compared with v_th", neurons.refractory, dict(x=x, **rp), {}, ("s", "m"),
                       rvjp, using=("s",), gradient="surrogate: triangle(width=1) at m - v_th, reset path "
                       "detached (refssm.spiking.refractory_vjp); F = <c, s>", exact=("s",), rtol=1e-12))
    cases.append(_make("neurons/pmbc", refr_eq + " (PMBC: the same spikes, decided in parallel)",
                       "iterations: PMBC bound iterations (refssm's count)", neurons.pmbc, dict(x=x, **rp), {},
                       ("s", "m", "iterations"), exact=("s", "iterations"), rtol=1e-12))
    rng = _rng("neurons/stochastic")
    p = rng.uniform(-0.2, 1.2, (2, 3, 16))
    U = np.random.default_rng(7).random(p.shape)
    st = surrogate.get("straight_through")

    def sample(p, U):
        s = neurons.stochastic(p, np.random.default_rng(7))
        if not np.array_equal(s, U < np.clip(p, 0.0, 1.0)):        # the stored U are the sampler's
            raise RuntimeError("neurons.stochastic no longer draws U = default_rng(7).random(p.shape)")
        return s

    cases.append(_make("neurons/stochastic", "s = 1[U < clamp(p, 0, 1)]",
                       "U ~ Uniform[0, 1) stored as an input (numpy default_rng(7).random(p.shape)); the "
                       "function to check takes (p, U)", sample, dict(p=p, U=U), {}, ("s",),
                       lambda c, p, U: dict(p=c["s"] * st.grad(p)),
                       gradient="straight-through: ds/dp := 1[0 <= p <= 1], the gradient of E[s]", exact=("s",)))
    return cases


SURROGATE_PARAMS = {"triangle": {"width": 0.75}, "fast_sigmoid": {"slope": 25.0}, "sigmoid": {"alpha": 4.0},
                    "atan": {"alpha": 2.0}, "rectangle": {"width": 0.5}, "straight_through": {}}


def _surrogate_cases():
    cases = []
    for name, params in SURROGATE_PARAMS.items():
        z = np.concatenate([np.linspace(-2.0, 2.0, 41), [0.0, -0.0, 0.375, -0.375, 0.25, -0.25, 1.0]])
        sg = surrogate.get(name, **params)

        def fwd(z, sg=sg, **params):
            return sg.forward(z), sg.grad(z), sg.primitive(z)

        cases.append(_make(f"surrogate/{name}", "forward H(z) = 1[z >= 0]; grad sigma'(z); primitive sigma(z)",
                           f"refssm.surrogate.get({name!r}, **params); see its module table", fwd, dict(z=z),
                           params, ("forward", "grad", "primitive"),
                           lambda c, z, sg=sg, **p: dict(z=c["primitive"] * sg.grad(z)), using=("primitive",),
                           exact=("forward",)))
    return cases


def _fractional_cases():
    cases = []
    rng = _rng("fractional/in")
    f = np.stack([np.linspace(0, 1, 32) ** 1.5, np.sin(3 * np.linspace(0, 1, 32))])
    cases.append(_make("fractional/gl_weights", "w_k = (-1)^k binom(alpha, k), k = 0..n-1", "recursion "
                       "w_k = w_{k-1} (1 - (alpha+1)/k)", fractional.gl_weights, {}, dict(alpha=0.6, n=32), ("w",)))

    def adjoint(w, c, scale):
        """The transpose of the causal memory sum with weights w: sum_{n>=m} w_{n-m} c_n."""
        return fractional.memory_sum(w, c[..., ::-1])[..., ::-1] * scale

    def gl_vjp(c, f, alpha, h):
        return dict(f=adjoint(fractional.gl_weights(alpha, f.shape[-1]), c["D"], h ** -alpha))

    cases.append(_make("fractional/gl_derivative", "D_n = h^-alpha sum_{k=0..n} w_k f_{n-k}",
                       "Grünwald–Letnikov, zero history before t = 0; f (..., L)", fractional.gl_derivative,
                       dict(f=f), dict(alpha=0.6, h=1 / 31), ("D",), gl_vjp))

    def l1_vjp(c, f, alpha, h):
        from scipy.special import gamma
        g_df = adjoint(fractional.l1_weights(alpha, f.shape[-1]), c["D"], h ** -alpha / gamma(2 - alpha))
        gf = np.zeros_like(f)
        gf[..., 1:] += g_df[..., 1:]                           # df_n = f_n - f_{n-1} (n >= 1), df_0 = 0
        gf[..., :-1] -= g_df[..., 1:]
        return dict(f=gf)

    cases.append(_make("fractional/caputo_l1", "D_n = h^-alpha/Gamma(2-alpha) sum_{j=0..n-1} b_j (f_{n-j} - "
                       "f_{n-j-1}), b_j = (j+1)^(1-alpha) - j^(1-alpha); D_0 = 0", "Caputo, 0 < alpha < 1",
                       fractional.caputo_l1, dict(f=f), dict(alpha=0.6, h=1 / 31), ("D",), l1_vjp))
    z_real = np.array([-30.0, -5.0, -1.0, -0.1, 0.0, 0.3, 1.0, 2.5])
    z_cplx = np.array([-3 + 2j, 1j, -0.5 - 0.5j, 2 + 1j, -10 + 0.1j])
    for alpha, beta in ((0.5, 1.0), (0.8, 0.8), (1.5, 1.0)):
        cases.append(_make(f"fractional/mittag_leffler/a{alpha}_b{beta}",
                           "E_{alpha,beta}(z) = sum_k z^k / Gamma(alpha k + beta)", "real z -> real E; "
                           "complex z -> complex E", lambda z, z_complex, alpha, beta: (
                               fractional.mittag_leffler(z, alpha, beta),
                               fractional.mittag_leffler(z_complex, alpha, beta)),
                           dict(z=z_real, z_complex=z_cplx), dict(alpha=alpha, beta=beta), ("E", "E_complex"),
                           rtol=1e-10, atol=1e-13))
    lam = -rng.uniform(0.5, 2.0, (2, 2)) + 1j * rng.uniform(-3, 3, (2, 2))
    dt = np.array([[0.05], [0.1]])
    kern = "D^alpha x = lam x + u, x = 0 before t = 0; k = response to u_0 = 1 (u_n = 0, n > 0)"
    for method in ("gl", "gl_explicit"):
        def gvjp(c, lam, dt, alpha, L, method):
            g_lam, g_dt = fractional.fssm_kernel_vjp(fractional.fssm_kernel_fwd(lam, alpha, dt, L, method)[1], c["k"])
            return dict(lam=g_lam, dt=g_dt)

        cases.append(_make(f"fractional/fssm_kernel/{method}", kern + {
            "gl": "; implicit GL: sum_j w_j x_{n-j} = dt^alpha (lam x_n + u_n)",
            "gl_explicit": "; explicit GL: sum_j w_j x_{n-j} = dt^alpha (lam x_{n-1} + u_n)"}[method],
            "lam (H, N/2) complex, dt (H, 1); one complex mode per entry (B = C = 1)", fractional.fssm_kernel,
            dict(lam=lam, dt=dt), dict(alpha=0.7, L=24, method=method), ("k",), gvjp))
    cases.append(_make("fractional/fssm_kernel/exact", kern + "; zero-order hold: k[n] = S(t_{n+1}) - S(t_n), "
                       "S(t) = t^alpha E_{alpha,alpha+1}(lam t^alpha)", "lam (H, N/2) complex, dt (H, 1)",
                       fractional.fssm_kernel, dict(lam=lam, dt=dt), dict(alpha=0.7, L=24, method="exact"),
                       ("k",), rtol=1e-9, atol=1e-12))
    cases.append(_make("fractional/fssm_kernel/soe_coupled", kern + "; coupled sum-of-exponentials realisation, "
                       "M terms of soe_quadrature(alpha, M, L)", "lam (H, N/2) complex, dt (H, 1)",
                       fractional.fssm_kernel, dict(lam=lam, dt=dt),
                       dict(alpha=0.7, L=24, method="soe_coupled", M=8), ("k",), rtol=1e-9, atol=1e-12))
    omega, eta = np.array([1e-4, 0.1, 2.0]), np.array([1.0, 0.1, 0.5])

    def dvjp(c, lam, dt, omega, eta, alpha, L, method):
        g = fractional.fssm_kernel_vjp(
            fractional.fssm_kernel_fwd(lam, alpha, dt, L, method, omega=omega, eta=eta)[1], c["k"])
        return dict(zip(("lam", "dt", "omega", "eta"), g))

    cases.append(_make("fractional/fssm_kernel/soe_decoupled", "k[l] = sum_m eta_m b_m exp(a_m dt l), a_m = "
                       "eta_m lam - omega_m, b_m = (exp(a_m dt) - 1)/a_m (LongSpike's public code)",
                       "omega, eta (M,) in absolute time units, shared by the modes", fractional.fssm_kernel,
                       dict(lam=lam, dt=dt, omega=omega, eta=eta), dict(alpha=0.7, L=24, method="soe_decoupled"),
                       ("k",), dvjp))
    return cases


PRESET_VARIANTS = {
    "spikingjelly_lif": {"default": {}, "soft_detach_sigmoid": dict(v_reset=None, detach_reset=True,
                                                                    surrogate="sigmoid", alpha=4.0)},
    "spikingjelly_if": {"default": {}, "v_reset_neg": dict(v_reset=-0.5)},
    "snntorch_leaky": {"default": dict(beta=0.875), "zero_fast_sigmoid": dict(beta=0.75, reset_mechanism="zero",
                                                                              surrogate="fast_sigmoid")},
    "norse_lif": {"default": {}, "leak_reset": dict(v_leak=0.125, v_reset=-0.25, tau_syn_inv=150.0)},
}


def _preset_cases():
    cases = []
    for lib, variants in PRESET_VARIANTS.items():
        fn = conventions.preset(lib)
        for variant, params in variants.items():
            name = f"conventions/{lib}/{variant}"
            rng = _rng(name)
            x = np.concatenate([rng.normal(0.5, 1.0, (2, 2, 32)), _dyadic(rng, (2, 1, 32), -0.5, 2.0)], axis=1)

            def forward(x, fn=fn, **p):
                return fn(x, **p)[:2]

            def vjp(c, x, fn=fn, **p):
                return dict(x=fn(x, **p)[2](c["spikes"]))

            doc = fn.__doc__.split("\n\n")[1].strip()
            cases.append(_make(name, "; ".join(" ".join(line.split()) for line in doc.splitlines()),
                               f"refssm.conventions.{lib}(x, **params); x (..., T) "
                               "time last; channel 2 dyadic (exact ties)", forward, dict(x=x), params,
                               ("spikes", "membrane"), vjp, using=("spikes",),
                               gradient="surrogate: the library's autograd with these settings; F = <c, spikes>",
                               exact=("spikes",), rtol=1e-12))
    return cases


def _model_cases():
    from refssm import models

    cases = []
    for model in models.MODELS:
        name = f"models/{model}"
        rng = _rng(name)
        B, L, D, n_classes = 2, 12, 3, 3
        overrides = dict(H=4, N=4, n_layers=1)
        allowed = set(models.make_config(model, d_input=D, n_classes=n_classes))
        overrides.update({k: v for k, v in (("dtype", "float64"), ("backend", "numpy")) if k in allowed})
        cfg = models.make_config(model, d_input=D, n_classes=n_classes, **overrides)
        params, state = models.init_params(cfg, np.random.default_rng(0))
        x = rng.normal(0.0, 1.0, (B, L, D))
        glogits = rng.standard_normal((B, n_classes))
        seed = 11

        def forward(x, config, seed, train, state=state, **p):
            return models.forward(p, state, config, x, None, np.random.default_rng(seed), train)[0]

        logits, cache, _, _ = models.forward(params, state, cfg, x, None, np.random.default_rng(seed), True)
        grads = {k: np.asarray(v) for k, v in models.backward(params, cfg, cache, glogits).items()}
        grads["x"] = _input_grad(models, params, state, cfg, x, glogits, seed, logits, grads)
        cases.append(Case(
            name, "logits = model(x): encoder -> 1 layer [core -> + residual -> norm] -> mean over time -> decoder "
                  "(refssm.models; the core per model in its module docstring)",
            f"x (B, L, d_input) = {x.shape}; train=True (batch statistics; the running ones are updated, not "
            f"read); rng = numpy default_rng(seed) "
            f"consumed by the forward (dropout 0; P-SpikeSSM's samplers); parameters named as refssm.models; "
            f"refssm's own call: models.forward(params, state, config, x, None, default_rng(seed), train)[0]",
            dict(x=x, **{k: np.asarray(v) for k, v in params.items()}), {"config": cfg, "seed": seed, "train": True},
            {"logits": np.asarray(logits)},
            {"logits": glogits}, grads, "surrogate: the model's own (refssm.models.surrogate_of)", rtol=1e-9,
            atol=1e-11, forward=forward))
    return cases


def _input_grad(models, params, state, cfg, x, glogits, seed, logits, grads):
    """dF/dx, which models.backward does not return: x enters only through the encoder h = W x + b, so
    with one extra indicator input column per (b, t), weighted by zero, the encoder weight's gradient
    in that column is dF/dh[b, :, t] and dF/dx[b, t] = W^T dF/dh[b, :, t]."""
    B, L, D = x.shape
    p = dict(params)
    W = np.asarray(p["enc.W"])
    p["enc.W"] = np.concatenate([W, np.zeros((W.shape[0], B * L), W.dtype)], axis=1)
    x_aug = np.concatenate([x, np.eye(B * L).reshape(B, L, B * L)], axis=2)
    cfg_aug = dict(cfg, d_input=D + B * L)
    logits_aug, cache, _, _ = models.forward(p, state, cfg_aug, x_aug, None, np.random.default_rng(seed), True)
    if not np.allclose(logits_aug, logits, rtol=1e-12, atol=1e-12):
        raise RuntimeError("the augmented encoder changed the logits; cannot extract the input gradient")
    gW = np.asarray(models.backward(p, cfg_aug, cache, glogits)["enc.W"])[:, D:]        # (H, B*L)
    gh = gW.T.reshape(B, L, -1)                                                          # dF/dh (B, L, H)
    # gh must reproduce the encoder's own gradients, dF/db = sum_{b,t} gh and dF/dW = sum_{b,t} gh x^T
    if not (np.allclose(gh.sum(axis=(0, 1)), grads["enc.b"], rtol=1e-10, atol=1e-12)
            and np.allclose(np.einsum("blh,bld->hd", gh, x), grads["enc.W"], rtol=1e-10, atol=1e-12)):
        raise RuntimeError("the recovered dF/dh does not reproduce the encoder's gradients")
    return gh @ W


CASE_GROUPS = (_ssm_cases, _neuron_cases, _surrogate_cases, _fractional_cases, _preset_cases, _model_cases)


def build_cases(only=None):
    """Every golden case (list of Case), or those whose name matches one of the glob patterns `only`."""
    cases = [c for group in CASE_GROUPS for c in group()]
    if only:
        cases = [c for c in cases if any(fnmatch.fnmatchcase(c.name, pat) for pat in only)]
    return cases


# --------------------------------------------------------------------------------------------------
# Writing and reading
# --------------------------------------------------------------------------------------------------

def _json(obj):
    return json.dumps(obj, sort_keys=True, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))


def _leaves(f):
    """(path, kind, data) of every dataset and every object's attributes (JSON text) in the file, the
    root's sha256 excepted: what the checksum covers (refssm.checkpoint's digest)."""
    def attrs(path, obj):
        a = {k: (_text(v) if isinstance(v, (str, bytes)) else np.asarray(v).tolist())
             for k, v in obj.attrs.items() if not (path == "/" and k == "sha256")}
        return (path + "@attrs", "json", np.bytes_(_json(a).encode()))

    out = [attrs("/", f)]

    def visit(path, obj):
        out.append(attrs("/" + path, obj))
        if isinstance(obj, h5py.Dataset):
            out.append(("/" + path, "array", obj[()]))

    f.visititems(visit)
    return out


def export(path, cases=None):
    """Write `cases` (default: build_cases()) to the HDF5 file `path`, atomically. Returns the cases."""
    cases = build_cases() if cases is None else cases
    path = os.fspath(path)
    with hdf5_atomic(path) as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["refssm_version"] = refssm.__version__
        root = f.create_group("cases", track_order=True)
        for c in cases:
            g = root.create_group(c.name, track_order=True)
            for key, value in (("equation", c.equation), ("conventions", c.conventions),
                               ("gradient", c.gradient), ("params", _json(c.params)),
                               ("refssm_version", refssm.__version__)):
                g.attrs[key] = value
            g.attrs["rtol"], g.attrs["atol"] = float(c.rtol), float(c.atol)
            g.attrs["format_version"] = FORMAT_VERSION
            for section in SECTIONS:
                s = g.create_group(section, track_order=True)
                for k, v in getattr(c, section).items():
                    ds = s.create_dataset(k, data=v)
                    if section == "outputs" and k in c.exact:
                        ds.attrs["rtol"], ds.attrs["atol"] = 0.0, 0.0
        f.attrs["sha256"] = digest(_leaves(f), 0)
    return cases


def _text(v):
    return v.decode() if isinstance(v, bytes) else v


def load(path, verify=True):
    """Open a fixtures file for reading (an h5py.File; use it in a `with` block). Raises FixtureError,
    naming the path, if it is missing, not HDF5 or truncated, not a fixtures file, newer than this refssm
    reads, or (verify=True, for a reference written by refssm) fails its checksum."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FixtureError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise FixtureError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {e}") from None
    try:
        if _text(f.attrs.get("format")) != FORMAT:
            raise FixtureError(f"{path}: not a refssm fixtures file (root attribute format="
                               f"{_text(f.attrs.get('format'))!r}, expected {FORMAT!r})")
        version = f.attrs.get("format_version", FORMAT_VERSION)
        if not isinstance(version, (int, np.integer)) or not 1 <= version <= FORMAT_VERSION:
            raise FixtureError(f"{path}: format_version {version!r} is not one this refssm reads "
                               f"(1..{FORMAT_VERSION}); upgrade refssm")
        if "cases" not in f or not isinstance(f["cases"], h5py.Group):
            raise FixtureError(f"{path}: no /cases group")
        if verify:
            stored = _text(f.attrs.get("sha256"))
            if stored is None:
                raise FixtureError(f"{path}: no sha256 attribute (not written by refssm fixtures export)")
            try:
                actual = digest(_leaves(f), 0)
            except (OSError, KeyError, RuntimeError) as e:
                raise FixtureError(f"{path}: corrupt fixtures file: {e}") from None
            if stored != actual:
                raise FixtureError(f"{path}: checksum mismatch (stored {stored[:12]}..., computed "
                                   f"{actual[:12]}...); the reference file is corrupt")
    except BaseException:
        f.close()
        raise
    return f


def _case_groups(f):
    """{case name: group} of a fixtures file: every group under /cases holding "outputs" or "grads"."""
    out = {}

    def visit(path, obj):
        if isinstance(obj, h5py.Group) and any(isinstance(obj.get(s), h5py.Group) for s in COMPARED):
            out[path] = obj

    f["cases"].visititems(visit)
    return out


def case_names(path):
    """The names of the cases in a fixtures file, in file order."""
    with load(path, verify=False) as f:
        return list(_case_groups(f))


def _read_section(g, section):
    s = g.get(section)
    return {} if s is None else {k: v[()] for k, v in s.items() if isinstance(v, h5py.Dataset)}


def load_case(path, name):
    """One case of a fixtures file as a Case (forward None). Raises KeyError naming the case if absent."""
    with load(path) as f:
        groups = _case_groups(f)
        if name not in groups:
            raise KeyError(f"{path}: no case {name!r}; cases: {', '.join(groups)}")
        g = groups[name]
        secs = {s: _read_section(g, s) for s in SECTIONS}
        exact = tuple(k for k, v in g["outputs"].items() if v.attrs.get("atol", None) == 0
                      and v.attrs.get("rtol", None) == 0)
        return Case(name, _text(g.attrs["equation"]), _text(g.attrs["conventions"]), secs["inputs"],
                    json.loads(_text(g.attrs["params"])), secs["outputs"], secs["cotangents"], secs["grads"],
                    _text(g.attrs["gradient"]), float(g.attrs["rtol"]), float(g.attrs["atol"]), exact)


# --------------------------------------------------------------------------------------------------
# Comparing
# --------------------------------------------------------------------------------------------------

@dataclass
class Result:
    """The comparison of one case: worst errors over its compared datasets, and why it failed."""
    case: str
    max_abs: float = 0.0
    max_rel: float = 0.0           # max |theirs - ref| / max |ref| over a dataset (0 where ref is all 0)
    tolerance: str = ""
    problems: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.problems


def compare(ref, theirs, rtol, atol, where="y"):
    """(max abs error, max rel error, problem or None) of array `theirs` against `ref` with numpy.isclose
    semantics |theirs - ref| <= atol + rtol |ref|; shapes must agree and `theirs` must be finite where
    `ref` is."""
    ref, theirs = np.asarray(ref), np.asarray(theirs)
    if ref.shape != theirs.shape:
        return np.inf, np.inf, f"{where}: shape {theirs.shape} != reference {ref.shape}"
    if ref.size == 0:
        return 0.0, 0.0, None
    try:
        d = np.abs(theirs.astype(np.result_type(theirs, ref, np.float64)) - ref)
    except TypeError:
        return np.inf, np.inf, f"{where}: dtype {theirs.dtype} is not numeric"
    if np.any(np.isnan(d)):
        return np.inf, np.inf, f"{where}: NaN where the reference is {ref.ravel()[np.isnan(d).ravel()][0]!r}"
    scale = np.max(np.abs(ref))
    max_abs = float(np.max(d))
    max_rel = float(max_abs / scale) if scale > 0 else (0.0 if max_abs == 0 else np.inf)
    bad = d > atol + rtol * np.abs(ref)
    if np.any(bad):
        i = np.unravel_index(np.argmax(np.where(bad, d, -1)), d.shape)
        at = f"[{', '.join(map(str, i))}]" if i else ""
        return max_abs, max_rel, (f"{where}{at}: {theirs[i].item()!r} vs reference {ref[i].item()!r} "
                                  f"(|diff| {d[i]:.3g} > {atol + rtol * abs(ref[i]):.3g})")
    return max_abs, max_rel, None


def _tolerances(g, ds):
    rtol = float(ds.attrs.get("rtol", g.attrs["rtol"]))
    atol = float(ds.attrs.get("atol", g.attrs["atol"]))
    return rtol, atol


def _check_case(name, g_ref, g_theirs, sections):
    res = Result(name, tolerance=f"rtol={float(g_ref.attrs['rtol']):g} atol={float(g_ref.attrs['atol']):g}")
    exact = []
    for section in sections:
        s = g_ref.get(section)
        if s is None:
            continue
        for key, ds in s.items():
            rtol, atol = _tolerances(g_ref, ds)
            if rtol == 0 and atol == 0:
                exact.append(key)
            where = f"{section}/{key}"
            other = g_theirs.get(where) if g_theirs is not None else None
            if not isinstance(other, h5py.Dataset):
                res.problems.append(f"{where} missing")
                continue
            a, r, problem = compare(ds[()], other[()], rtol, atol, where)
            if problem:
                res.problems.append(problem)
            res.max_abs, res.max_rel = max(res.max_abs, a), max(res.max_rel, r)
    if exact:
        res.tolerance += "; exact: " + ", ".join(exact)
    return res


def check(reference, theirs, only=None, sections=COMPARED):
    """Compare the file `theirs` with the reference file, case by case.

    only: glob patterns of case names to compare (default all). sections: which parts to compare
    ("outputs", "grads"). Returns (results: list of Result in reference order, only_in_reference,
    only_in_theirs) where only_in_* name the cases (within `only`) present in one file only.
    Raises FixtureError for an unreadable, foreign or (reference) corrupt file.
    """
    match = (lambda n: True) if not only else (lambda n: any(fnmatch.fnmatchcase(n, p) for p in only))
    with load(reference) as fr, load(theirs, verify=False) as ft:
        ref_cases, their_cases = _case_groups(fr), _case_groups(ft)
        results = []
        for name, g in ref_cases.items():
            if not match(name):
                continue
            if name not in their_cases:
                results.append(Result(name, problems=["case missing"]))
                continue
            results.append(_check_case(name, g, their_cases[name], sections))
        only_ref = [n for n in ref_cases if match(n) and n not in their_cases]
        only_theirs = [n for n in their_cases if match(n) and n not in ref_cases]
    return results, only_ref, only_theirs


def format_table(results):
    """The per-case table printed by `refssm fixtures check`."""
    width = max([len("case")] + [len(r.case) for r in results])
    lines = [f"{'case':<{width}}  {'max abs err':>11}  {'max rel err':>11}  {'tolerance':<40}  result"]
    for r in results:
        missing = r.problems == ["case missing"]
        a = "-" if missing else f"{r.max_abs:.2e}"
        rel = "-" if missing else f"{r.max_rel:.2e}"
        lines.append(f"{r.case:<{width}}  {a:>11}  {rel:>11}  {r.tolerance:<40}  "
                     f"{'pass' if r.ok else 'FAIL: ' + '; '.join(r.problems[:2])}")
    return "\n".join(lines)


def assert_matches(reference, case, fn, *, vjp=None):
    """Check `fn` against one case of a reference fixtures file (for use inside pytest).

    fn(**inputs, **params) must return the case's outputs: a dict by name, a tuple in the stored order,
    or one array for a single-output case. vjp, if given, is called as vjp(cotangents, **inputs, **params)
    (cotangents: dict output name -> array, the weights of F = sum_o <c_o, o>) and returns a dict
    input name -> dF/d input; every gradient it returns is compared (complex: dF/dRe + i dF/dIm).
    Raises AssertionError listing every mismatch (dataset, position, values, tolerance).
    """
    c = load_case(reference, case)
    got = fn(**c.inputs, **c.params)
    names = list(c.outputs)
    if isinstance(got, dict):
        outs = got
    elif isinstance(got, (tuple, list)):
        if len(got) != len(names):
            raise AssertionError(f"{case}: fn returned {len(got)} outputs, the case has {len(names)}: {names}")
        outs = dict(zip(names, got))
    else:
        if len(names) != 1:
            raise AssertionError(f"{case}: fn returned one array, the case has outputs {names}")
        outs = {names[0]: got}
    problems = []
    for k, ref in c.outputs.items():
        tol = (0.0, 0.0) if k in c.exact else (c.rtol, c.atol)
        if k not in outs:
            problems.append(f"outputs/{k} missing from fn's result")
            continue
        problem = compare(ref, outs[k], *tol, f"outputs/{k}")[2]
        if problem:
            problems.append(problem)
    if vjp is not None:
        grads = vjp(dict(c.cotangents), **c.inputs, **c.params)
        for k, g in grads.items():
            if k not in c.grads:
                problems.append(f"vjp returned {k!r}, which the case has no gradient for ({sorted(c.grads)})")
                continue
            problem = compare(c.grads[k], g, c.rtol, c.atol, f"grads/{k}")[2]
            if problem:
                problems.append(problem)
    if problems:
        raise AssertionError(f"{case} ({c.equation}): " + "; ".join(problems))


# --------------------------------------------------------------------------------------------------
# Command line: refssm fixtures export / check / list
# --------------------------------------------------------------------------------------------------

def _cmd_export(args):
    cases = export(args.out, build_cases(args.only))
    if not cases:
        raise FixtureError(f"no case matches {args.only}")
    print(f"wrote {len(cases)} cases to {args.out} (format {FORMAT} v{FORMAT_VERSION}, refssm {refssm.__version__})")
    return 0


def _cmd_check(args):
    sections = ("outputs",) if args.outputs_only else COMPARED
    results, only_ref, only_theirs = check(args.reference, args.theirs, args.only, sections)
    if not results:
        raise FixtureError(f"{args.reference}: no case matches {args.only}")
    print(format_table(results))
    failed = [r for r in results if not r.ok]
    if only_ref:
        print(f"only in {args.reference} (missing from {args.theirs}): {', '.join(only_ref)}")
    if only_theirs:
        print(f"only in {args.theirs} (not in the reference, not compared): {', '.join(only_theirs)}")
    print(f"{len(results) - len(failed)}/{len(results)} cases pass" + (
        f"; FAILED: {', '.join(r.case for r in failed)}" if failed else ""))
    return 1 if failed else 0


def _cmd_list(args):
    with load(args.file, verify=False) as f:
        for name, g in _case_groups(f).items():
            eq = _text(g.attrs.get("equation", "")) if "equation" in g.attrs else ""
            tol = f"rtol={g.attrs['rtol']:g} atol={g.attrs['atol']:g}" if "rtol" in g.attrs else ""
            print(f"{name:<48} {tol:<24} {eq[:100]}")
    return 0


def _main(args):
    try:
        return args.fixtures_func(args)
    except (FixtureError, KeyError, OSError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"refssm fixtures: error: {msg}", file=sys.stderr)
        return 2


def add_parser(sub):
    p = sub.add_parser("fixtures", help="write golden fixtures, or check another implementation's file against them")
    fsub = p.add_subparsers(dest="fixtures_command", required=True)
    e = fsub.add_parser("export", help="write every golden case to an HDF5 file")
    e.add_argument("out", help="output file, e.g. refssm_fixtures.h5")
    e.add_argument("--only", action="append", metavar="GLOB", help="only cases matching GLOB (repeatable)")
    e.set_defaults(fixtures_func=_cmd_export)
    c = fsub.add_parser("check", help="compare THEIRS with REFERENCE case by case (exit 1 on any failure)")
    c.add_argument("reference")
    c.add_argument("theirs")
    c.add_argument("--only", action="append", metavar="GLOB", help="only cases matching GLOB (repeatable)")
    c.add_argument("--outputs-only", action="store_true", help="compare outputs, not gradients")
    c.set_defaults(fixtures_func=_cmd_check)
    ls = fsub.add_parser("list", help="list the cases of a fixtures file")
    ls.add_argument("file")
    ls.set_defaults(fixtures_func=_cmd_list)
    p.set_defaults(func=_main)
