"""Pieces shared by the five seed models: parameter declarations, the SSM layer, norms.

A parameter is declared once, with everything the training loop needs to know about it:

    Param(shape, init, group, decay)
      init   rng -> array of `shape` (float64; cast to the training dtype by models.init_params)
      group  "ssm": the SSM's dynamics (dt, A, B, LongSpike's omega/eta), trained at lr min(lr, ssm_lr)
             (the S4 convention, reference notes A3.4); "default": the global learning rate
      decay  whether AdamW's weight decay applies (False for dynamics, norms, biases, thresholds, D)

The SSM layer computes y = K * z + D z with K the layer's kernel (one per direction), from the
parameters log_A_real, A_imag (A = -exp(log_A_real) + i A_imag), optional B_re, B_im (trainable B),
log_dt, C_re, C_im (and Cb_re, Cb_im for the backward direction): `layer_kernel` and its VJP are the
chain from these real parameters to K through refssm.ssm (or refssm.fractional for LongSpike).
"""

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from refssm import backend, fractional, ssm


@dataclass(frozen=True)
class Param:
    shape: tuple
    init: Callable
    group: str = "default"
    decay: bool = True


def uniform(fan_in, shape):
    """PyTorch's default Linear/Conv1d init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return Param(shape, lambda rng: rng.uniform(-1, 1, shape) / np.sqrt(fan_in))


def bias(fan_in, n):
    return Param((n,), lambda rng: rng.uniform(-1, 1, n) / np.sqrt(fan_in), decay=False)


def const(shape, value, group="default"):
    """A constant-initialised parameter without weight decay (norm affines, thresholds, ...)."""
    return Param(shape, lambda rng: np.full(shape, float(value)), group, decay=False)


def linear(prefix, h_in, h_out):
    return {prefix + "W": uniform(h_in, (h_out, h_in)), prefix + "b": bias(h_in, h_out)}


def norm(prefix, H):
    return {prefix + "gamma": const((H,), 1.0), prefix + "beta": const((H,), 0.0)}


def norm_state(prefix, cfg):
    """BatchNorm running statistics (not trained): {name: initial value}."""
    if cfg["norm"] != "batch":
        return {}
    return {prefix + "mean": np.zeros(cfg["H"]), prefix + "var": np.ones(cfg["H"])}


# --------------------------------------------------------------------------------------------------
# Noise: per example, per site
# --------------------------------------------------------------------------------------------------

class Noise:
    """The uniform random numbers of dropout masks and stochastic spikes, one stream per example and site.

    Example b's uniforms at site s (a name such as "layers.0.sample_in") come from their own generator,
    default_rng([key, example_ids[b], crc32(s)]), with `key` drawn once per batch from the training
    Generator. So a batch's noise depends on which examples it holds, not on how they are batched or
    split over processes (data-parallel training relies on it), and a time series of uniforms is drawn
    time-major, (L, H) per example, so that step-by-step inference draws the same numbers one step at a
    time (`stream`).
    """

    def __init__(self, key, example_ids):
        self.key, self.ids = int(key), [int(i) for i in example_ids]
        self._streams = {}

    def stream(self, site):
        """One Generator per example for `site`, created on first use and then continued (so a site drawn
        one step at a time gets the numbers a whole-series draw gets)."""
        if site not in self._streams:
            crc = zlib.crc32(site.encode())
            self._streams[site] = [np.random.default_rng([self.key, i, crc]) for i in self.ids]
        return self._streams[site]

    def masks(self, site, H):
        """(B, H) uniforms, e.g. a dropout mask tied across time."""
        return np.stack([g.random(H) for g in self.stream(site)])

    def series(self, site, H, L, dtype):
        """(B, H, L) uniforms, drawn time-major (L, H) per example."""
        return np.stack([g.random((L, H)).T for g in self.stream(site)]).astype(dtype)


# The noise is drawn on the host (the same numbers on every backend) and moved to the activations' device.

def dropout(t, cfg, site, x, env):
    """Dropout (mask tied across time, drawn from the per-example noise) on the tape."""
    if not env["train"] or cfg["dropout"] == 0:
        return x
    u = backend.array_module(x.value).asarray(env["noise"].masks(site, x.shape[1]))
    return t.op("dropout", x, cfg["dropout"], u, True)


def sample(t, site, p, env):
    """Stochastic spikes s = 1[U < clamp(p, 0, 1)] with U from the per-example noise, on the tape."""
    B, H, L = p.shape
    return t.op("sample", p, backend.array_module(p.value).asarray(env["noise"].series(site, H, L, p.value.dtype)))


# --------------------------------------------------------------------------------------------------
# SSM parameters and kernel
# --------------------------------------------------------------------------------------------------

def directions(cfg):
    return ("C", "Cb") if cfg["bidirectional"] else ("C",)


def ssm_params(cfg, shared_AB=False):
    """The SSM's parameters: A (and B if shared_AB: one (A, B) for all channels, B trainable, as
    P-SpikeSSM), per-channel log_dt ~ U[log dt_min, log dt_max] and C ~ CN(0, 1) per direction."""
    H, N = cfg["H"], cfg["N"]
    A, B = ssm.diag_modes(N, cfg["init"])                                      # (N/2,) each
    rows = 1 if shared_AB else H
    p = {"log_A_real": Param((rows, N // 2), lambda rng: np.tile(np.log(-A.real), (rows, 1)), "ssm", False),
         "A_imag": Param((rows, N // 2), lambda rng: np.tile(A.imag, (rows, 1)), "ssm", False)}
    if shared_AB:
        p["B_re"] = Param((1, N // 2), lambda rng: B.real[None].copy(), "ssm", False)
        p["B_im"] = Param((1, N // 2), lambda rng: B.imag[None].copy(), "ssm", False)
    lo, hi = np.log(cfg["dt_min"]), np.log(cfg["dt_max"])
    p["log_dt"] = Param((H,), lambda rng: rng.uniform(lo, hi, H), "ssm", False)
    for d in directions(cfg):
        p[d + "_re"] = Param((H, N // 2), lambda rng: rng.standard_normal((H, N // 2)) / np.sqrt(2))
        p[d + "_im"] = Param((H, N // 2), lambda rng: rng.standard_normal((H, N // 2)) / np.sqrt(2))
    p["D"] = Param((H,), lambda rng: rng.standard_normal(H), decay=False)
    return p


def _kernel_op(cfg):
    return backend.op("fssm_kernel" if cfg["model"] == "longspike" else "ssm_kernel", cfg["backend"])


def layer_kernel(p, cfg, pre, L):
    """The layer's kernels K (n_directions, H, L) in the parameters' dtype, on their device, and the ctx of
    its VJP.

    K = ssm.kernel(A, B, C, dt, L, method) per direction, or for LongSpike the fractional-order kernel
    fractional.fssm_conv_kernel(A, B, C, dt, L, alpha, frac_method) (with the decoupled SOE's
    omega, eta = longspike_omega_eta(omega_logit, eta_logit)). The parameters (H x N/2 values) are brought
    to the host for the discretisation; the kernel op returns K on the host (numpy, numba) or the GPU (cupy).
    """
    dtype, xp = p[pre + "log_dt"].dtype, backend.array_module(p[pre + "log_dt"])
    p = {k: backend.to_host(v) for k, v in p.items()}
    A = -np.exp(p[pre + "log_A_real"].astype(np.float64)) + 1j * p[pre + "A_imag"]
    B = p[pre + "B_re"] + 1j * p[pre + "B_im"] if pre + "B_re" in p else np.ones_like(A)
    dt = np.exp(p[pre + "log_dt"].astype(np.float64))
    fwd, _ = _kernel_op(cfg)
    extra, soe_ctx = {}, None
    if cfg["model"] == "longspike":
        extra = dict(alpha=cfg["alpha"], method=cfg["frac_method"])
        if cfg["frac_method"] == "soe_decoupled":
            (omega, eta), soe_ctx = fractional.longspike_omega_eta_fwd(p[pre + "omega_logit"].astype(np.float64),
                                                                       p[pre + "eta_logit"].astype(np.float64))
            extra.update(omega=omega, eta=eta)
    Ks, ctxs = [], []
    for d in directions(cfg):
        C = p[pre + d + "_re"] + 1j * p[pre + d + "_im"]
        K, ctx = fwd(A, B, C.astype(np.complex128), dt, L, **extra) if extra else \
            fwd(A, B, C.astype(np.complex128), dt, L, cfg["method"])
        Ks.append(K)
        ctxs.append(ctx)
    on_host = backend.array_module(*Ks) is np          # an op without a GPU fast path ran on the host
    return xp.stack([xp.asarray(K) for K in Ks]).astype(dtype), \
        (cfg, pre, A, dt, pre + "B_re" in p, soe_ctx, ctxs, xp, on_host)


def layer_kernel_vjp(ctx, gK):
    """{parameter name: gradient} of the layer's SSM parameters, from gK = dL/dK (n_directions, H, L), on the
    parameters' device."""
    cfg, pre, A, dt, trainable_B, soe_ctx, ctxs, xp, on_host = ctx
    _, vjp = _kernel_op(cfg)
    grads, gA, gB, gdt, g_soe = {}, 0.0, 0.0, 0.0, [0.0, 0.0]
    for d, c, g in zip(directions(cfg), ctxs, gK):
        gA_d, gB_d, gC, gdt_d, *g_soe_d = vjp(c, (backend.to_host(g) if on_host else g).astype(np.float64))
        gA, gB, gdt = gA + gA_d, gB + gB_d, gdt + gdt_d
        g_soe = [a + b for a, b in zip(g_soe, g_soe_d)] if g_soe_d else g_soe
        grads[pre + d + "_re"], grads[pre + d + "_im"] = gC.real, gC.imag
    grads[pre + "log_A_real"] = gA.real * A.real                               # d(-exp(a))/da = Re A
    grads[pre + "A_imag"] = gA.imag
    if trainable_B:
        grads[pre + "B_re"], grads[pre + "B_im"] = gB.real, gB.imag
    grads[pre + "log_dt"] = gdt * dt
    if soe_ctx is not None:
        grads[pre + "omega_logit"], grads[pre + "eta_logit"] = fractional.longspike_omega_eta_vjp(soe_ctx, g_soe)
    return {k: xp.asarray(v) for k, v in grads.items()}


def _kernel_fwd(*args, p_names, cfg, pre, L):
    """layer_kernel as a tape operation: its Var arguments are the parameters named in p_names."""
    K, ctx = layer_kernel(dict(zip(p_names, args)), cfg, pre, L)
    return K, (ctx, p_names)


def _kernel_vjp(ctx, gK):
    ctx, p_names = ctx
    grads = layer_kernel_vjp(ctx, gK)
    return tuple(grads[n] for n in p_names)


def kernel_param_names(p, cfg, pre):
    names = ["log_A_real", "A_imag", "B_re", "B_im", "log_dt", "omega_logit", "eta_logit"]
    names += [d + part for d in directions(cfg) for part in ("_re", "_im")]
    return [pre + n for n in names if pre + n in p]


def _conv_fwd(z, K, backend_name):
    """y = K[0] * z (causal), or K[0] * z + the backward kernel K[1] on the future (bidirectional)."""
    if len(K) == 2:
        fwd, vjp = backend.op("bidirectional_conv", backend_name)
        y, ctx = fwd(z, K[0], K[1])
    else:
        fwd, vjp = backend.op("causal_conv", backend_name)
        y, ctx = fwd(z, K[0])
    return y, (vjp, ctx)


def _conv_vjp(ctx, gy):
    vjp, c = ctx
    gz, *gK = vjp(c, gy)
    return gz, backend.array_module(gz).stack(gK)


def ssm_layer(t, cfg, pre, z):
    """y = K * z + D z on the tape. z: Var (B, H, L) -> Var (B, H, L). On a streaming tape
    (refssm.models.stream.StepTape), one step of the kernel's recurrence instead."""
    if hasattr(t, "ssm_step"):
        return t.ssm_step(cfg, pre, z)
    names = kernel_param_names(t.params, cfg, pre)
    K = t.call(_kernel_fwd, _kernel_vjp, *(t.param(n) for n in names), p_names=names, cfg=cfg, pre=pre,
               L=z.shape[-1])
    y = t.call(_conv_fwd, _conv_vjp, z, K, t.backend)
    return t.op("skip", y, z, t.param(pre + "D"))


def norm_layer(t, cfg, prefix, x, env):
    """LayerNorm or BatchNorm (channels; BatchNorm statistics over batch and time). With env["allreduce"]
    (data-parallel training: a sum over processes, refssm.distributed) BatchNorm's training statistics are
    those of the global batch (ops.batch_norm)."""
    gamma, beta = t.param(prefix + "gamma"), t.param(prefix + "beta")
    if cfg["norm"] == "layer":
        return t.op("layer_norm", x, gamma, beta)
    y, mean, var = t.op("batch_norm", x, gamma, beta, env["state"][prefix + "mean"],
                        env["state"][prefix + "var"], env["train"], allreduce=env.get("allreduce"))
    env["new_state"].update({prefix + "mean": mean, prefix + "var": var})
    return y


def spike_stats(s, fan_out, macs):
    """Spike count, sites, accumulates (non-zero spikes x fan-out) and multiply-accumulates."""
    nnz = float(backend.array_module(s).count_nonzero(s))
    return dict(spikes=nnz, sites=float(s.size), ac=nnz * fan_out, mac=float(macs))


def ssm_macs(cfg, B, L):
    """The SSM counted as its recurrence: N real MACs per channel, step and direction, plus the D skip."""
    return B * L * cfg["H"] * (cfg["N"] * len(directions(cfg)) + 1)
