"""CUDA fast paths of refssm.spiking for backend "cupy": the LIF neuron with its surrogate fused into the
forward, its one-pass BPTT backward, and the refractory neuron (SPikE-SSM) with its VJP. To be registered
against the oracles refssm.spiking.lif / lif_vjp and refractory / refractory_vjp; the signatures, checks
and return conventions are theirs and those of the Numba CPU paths in refssm.kernels.spiking.

Launch layout (all four kernels). x (..., L) is flattened to rows (R, L), time contiguous. A row's
recurrence is one dependent chain, so each row gets one thread that walks time; a block holds TILE_ROWS
= 32 rows (one warp), grid ceil(R / 32). Read with a stride of L, a thread per row would not coalesce, so
time goes in tiles of 32 rows x TILE_STEPS = 32 steps staged through shared memory: the block loads each
input tile cooperatively (consecutive threads on consecutive steps of a row: coalesced), synchronises,
each thread walks its row of the tile (rows padded to 33 entries, so the 32 threads of the warp hit 32
banks for 4-byte words; 2-way conflicts for 8-byte words), and the block stores the output tiles
cooperatively. Shared memory per block: at most four 32 x 33 tiles, 17 KiB in float64.

Arithmetic. The forward recurrences are the oracles' (refssm.neurons.lif_step, refractory_step), in x's
dtype (float32 stays float32: every constant comes typed in the surrogate constants c of
refssm.kernels.spiking.surrogate_constants), with products by `mul_rn` (never contracted into an FMA):
spikes and potentials equal the oracles' bit for bit. The hard reset u = v (1 - s) + s v_reset is a
select (equal up to the sign of a zero). The surrogate derivatives follow refssm.kernels.spiking's
formulas and codes (SURROGATE_CODES), the backward its adjoint recurrence; both agree with the oracles to
rounding. Per-row parameter sums (threshold gradients) accumulate in float64.
"""

import functools
import math

import numpy as np
from numba import cuda, from_dtype

from refssm import backend, ssm
from refssm._checks import choice, time_series
from refssm.kernels.cuda import (TILE_PAD, TILE_ROWS, TILE_STEPS, launch, load_tile, mul_rn, per_row, rows,
                                 store_tile, tile_length)
from refssm.kernels.spiking import surrogate_constants
from refssm.neurons import compute_dtype, lif_params, refractory_params
from refssm.spiking import LIF_GRADIENTS

_MODES = {"output": 0, "bptt_detach_reset": 1, "bptt": 2}     # LIF gradient -> code of the backward kernel


@cuda.jit(device=True)
def surrogate(code, c, z):
    """sg.grad(z) (refssm.surrogate), code and constants c = [p0, p1, 0, 1, 1/2] (z's dtype) of
    refssm.kernels.spiking.surrogate_constants; the sigmoid as a e / (1 + e)^2, e = exp(-a|z|), which does
    not cancel where s -> 1."""
    p0, p1, zero, one, half = c[0], c[1], c[2], c[3], c[4]
    if code == 0:                                          # triangle: max(0, 1 - |z|/w) / w
        w = one - abs(z) / p0
        return (w if w > zero else zero) / p0
    if code == 1:                                          # fast sigmoid: 1 / (k|z| + 1)^2
        d = p0 * abs(z) + one
        return one / (d * d)
    if code == 2:                                          # sigmoid: a s (1 - s)
        e = math.exp(-abs(p0 * z))
        return p0 * e / ((one + e) * (one + e))
    if code == 3:                                          # atan: (a/2) / (1 + (pi a z / 2)^2)
        w = p1 * z * half
        return p0 / (one + w * w)
    if code == 4:                                          # rectangle: 1[|z| < w/2] / w
        return p1 if abs(z) < p0 else zero
    return one if z >= zero and z <= one else zero         # straight-through: 1[0 <= z <= 1]


@functools.cache
def _kernels(dtype):
    """The four kernels for rows of `dtype` (float32 or float64: the type of their shared-memory tiles)."""
    tile_type = from_dtype(dtype)

    @cuda.jit
    def lif_forward(x, tau, th, r, hard, eq, code, c, s, g, v, save_v):
        """Rows x (R, L): spikes s, surrogate derivatives g and (save_v) potentials v, each (R, L).
        v_t = tau u_{t-1} + x_t; s_t = 1[v_t >= v_th] (eq) or 1[v_t > v_th]; u_t = r (hard, r = v_reset)
        or v_t - r (soft, r = v_th) where s_t = 1, else v_t; g_t = sg.grad(v_t - v_th)."""
        xt = cuda.shared.array((TILE_ROWS, TILE_PAD), tile_type)          # x, overwritten by v
        st = cuda.shared.array((TILE_ROWS, TILE_PAD), tile_type)
        gt = cuda.shared.array((TILE_ROWS, TILE_PAD), tile_type)
        R, L = x.shape
        j = cuda.threadIdx.x
        r0 = cuda.blockIdx.x * TILE_ROWS
        live = r0 + j < R                                  # threads past the last row only load and store
        i = r0 + j if live else R - 1
        a, h, w = tau[i], th[i], r[i]
        zero, one = c[2], c[3]
        u = zero
        for t0 in range(0, L, TILE_STEPS):
            nt = tile_length(t0, L)
            load_tile(x, xt, r0, t0, nt)
            cuda.syncthreads()
            for k in range(nt if live else 0):
                vk = mul_rn(a, u) + xt[j, k]
                fired = vk >= h if eq else vk > h
                if fired:
                    u = w if hard else vk - w
                else:
                    u = vk
                xt[j, k] = vk
                st[j, k] = one if fired else zero
                gt[j, k] = surrogate(code, c, vk - h)
            cuda.syncthreads()
            store_tile(s, st, r0, t0, nt)
            store_tile(g, gt, r0, t0, nt)
            if save_v:
                store_tile(v, xt, r0, t0, nt)
            cuda.syncthreads()                             # before the next tile overwrites these

    @cuda.jit
    def lif_backward(gs, g, s, v, tau, th, vr, hard, mode, c, gx, gth):
        """BPTT over rows (R, L) in one reverse pass: gx (R, L) and gth (R,) float64 = dL/dv_th per row.

        The adjoint of refssm.spiking.lif_vjp, regrouped as in refssm.kernels.spiking: with a_t = gs_t g_t
        and q_t = dL/du_t (q_{L-1} = 0),
            dL/dx_t = a_t + q_t c_t,   q_{t-1} = tau dL/dx_t,   dL/dv_th = -sum_t (a_t + q_t e_t)
            mode 0 "output":  q = 0 (dL/dx_t = a_t)
            mode 1, hard: c = 1 - s, e = 0;             soft: c = 1, e = s
            mode 2, hard: c = 1 - s + e, e = (v_reset - v) g;   soft: c = 1 - v_th g, e = s - v_th g."""
        at = cuda.shared.array((TILE_ROWS, TILE_PAD), tile_type)          # gs, overwritten by gx
        gt = cuda.shared.array((TILE_ROWS, TILE_PAD), tile_type)
        st = cuda.shared.array((TILE_ROWS, TILE_PAD), tile_type)
        vt = cuda.shared.array((TILE_ROWS, TILE_PAD), tile_type)
        R, L = gs.shape
        j = cuda.threadIdx.x
        r0 = cuda.blockIdx.x * TILE_ROWS
        live = r0 + j < R
        i = r0 + j if live else R - 1
        a, h, w = tau[i], th[i], vr[i]
        zero, one = c[2], c[3]
        q = zero
        acc = 0.0
        for tile in range((L + TILE_STEPS - 1) // TILE_STEPS - 1, -1, -1):
            t0 = tile * TILE_STEPS
            nt = tile_length(t0, L)
            load_tile(gs, at, r0, t0, nt)
            load_tile(g, gt, r0, t0, nt)
            if mode > 0:
                load_tile(s, st, r0, t0, nt)
            if mode == 2 and hard:
                load_tile(v, vt, r0, t0, nt)
            cuda.syncthreads()
            for k in range(nt - 1 if live else -1, -1, -1):
                gk = gt[j, k]
                ak = at[j, k] * gk
                if mode == 0:
                    dk, ek = ak, zero
                else:
                    if hard:
                        ek = (w - vt[j, k]) * gk if mode == 2 else zero
                        ck = one - st[j, k] + ek
                    else:
                        ek = st[j, k] - h * gk if mode == 2 else st[j, k]
                        ck = one - h * gk if mode == 2 else one
                    dk = ak + q * ck
                acc += float(ak + q * ek)
                at[j, k] = dk
                q = a * dk if mode > 0 else zero
            cuda.syncthreads()
            store_tile(gx, at, r0, t0, nt)
            cuda.syncthreads()
        if live:
            gth[r0 + j] = -acc

    @cuda.jit
    def refractory_forward(x, tau, th, theta, beta, eq, c, s, m):
        """Rows x (R, L): spikes s and potentials m, the recurrence of refssm.neurons.refractory_step:
        m_t = tau v_{t-1} + x_t - theta_r r_{t-1}; s_t = 1[m_t >= v_th] (eq) or 1[m_t > v_th];
        v_t = tau v_{t-1} + x_t - v_th s_t; r_t = beta r_{t-1} + s_t; v_{-1} = r_{-1} = 0."""
        xt = cuda.shared.array((TILE_ROWS, TILE_PAD), tile_type)          # x, overwritten by m
        st = cuda.shared.array((TILE_ROWS, TILE_PAD), tile_type)
        R, L = x.shape
        j = cuda.threadIdx.x
        r0 = cuda.blockIdx.x * TILE_ROWS
        live = r0 + j < R
        i = r0 + j if live else R - 1
        a, h, kappa, b = tau[i], th[i], theta[i], beta[i]
        zero, one = c[2], c[3]
        vm = zero
        rr = zero
        for t0 in range(0, L, TILE_STEPS):
            nt = tile_length(t0, L)
            load_tile(x, xt, r0, t0, nt)
            cuda.syncthreads()
            for k in range(nt if live else 0):
                charge = mul_rn(a, vm) + xt[j, k]
                mk = charge - mul_rn(kappa, rr)
                sk = one if (mk >= h if eq else mk > h) else zero
                vm = charge - mul_rn(h, sk)
                rr = mul_rn(b, rr) + sk
                xt[j, k] = mk
                st[j, k] = sk
            cuda.syncthreads()
            store_tile(s, st, r0, t0, nt)
            store_tile(m, xt, r0, t0, nt)
            cuda.syncthreads()

    @cuda.jit
    def refractory_backward(gs, s, m, th, tau, beta, code, c, gy, g_vth, g_theta):
        """refssm.spiking.refractory_vjp over rows (R, L) in one reverse pass: with G_t = gs_t sg.grad(m_t -
        v_th), gy_t = G_t + tau gy_{t+1} and P_t = G_t + beta P_{t+1} (gy_L = P_L = 0), the oracle's sums
        regrouped by the spike that causes each term:
            sum_t G_t (-1 - sum_{d>=1} tau^d s_{t-d}) = sum_t (-G_t - s_t tau gy_{t+1})    -> g_vth (R,)
            sum_t G_t (-sum_{d>=1} beta^(d-1) s_{t-d}) = sum_t -s_t P_{t+1}                -> g_theta (R,)"""
        gt = cuda.shared.array((TILE_ROWS, TILE_PAD), tile_type)          # gs, overwritten by gy
        st = cuda.shared.array((TILE_ROWS, TILE_PAD), tile_type)
        mt = cuda.shared.array((TILE_ROWS, TILE_PAD), tile_type)
        R, L = gs.shape
        j = cuda.threadIdx.x
        r0 = cuda.blockIdx.x * TILE_ROWS
        live = r0 + j < R
        i = r0 + j if live else R - 1
        h, a, b = th[i], tau[i], beta[i]
        q = c[2]
        p = c[2]
        acc_v = 0.0
        acc_t = 0.0
        for tile in range((L + TILE_STEPS - 1) // TILE_STEPS - 1, -1, -1):
            t0 = tile * TILE_STEPS
            nt = tile_length(t0, L)
            load_tile(gs, gt, r0, t0, nt)
            load_tile(s, st, r0, t0, nt)
            load_tile(m, mt, r0, t0, nt)
            cuda.syncthreads()
            for k in range(nt - 1 if live else -1, -1, -1):
                G = gt[j, k] * surrogate(code, c, mt[j, k] - h)
                sk = st[j, k]
                acc_v += float(-G - sk * (a * q))
                acc_t += float(-sk * p)
                q = G + a * q
                p = G + b * p
                gt[j, k] = q
            cuda.syncthreads()
            store_tile(gy, gt, r0, t0, nt)
            cuda.syncthreads()
        if live:
            g_vth[r0 + j] = acc_v
            g_theta[r0 + j] = acc_t

    return lif_forward, lif_backward, refractory_forward, refractory_backward


def _launch(kernel, R, xp, *args):
    """kernel over R rows: one thread per row, TILE_ROWS rows per block (`launch`)."""
    if R:
        launch(kernel, -(-R // TILE_ROWS), TILE_ROWS, xp, *args)


def _cotangent(gs, shape, dtype, xp):
    """gs checked against the forward's shape, as rows (R, L) of `dtype` on module xp."""
    if tuple(gs.shape) != shape:
        raise ValueError(f"gs must have shape {shape}, got {tuple(gs.shape)}")
    return rows(xp.asarray(gs, dtype=dtype))[0]


# --------------------------------------------------------------------------------------------------
# LIF
# --------------------------------------------------------------------------------------------------

def lif(x, tau, v_th, sg, gradient="bptt", reset="hard", v_reset=0.0):
    """CUDA fast path of refssm.spiking.lif (same arguments, same checks): spikes s (..., L) in x's dtype
    (float32 or float64) on x's device, and the ctx of `lif_vjp`. tau, v_th, v_reset are checked on the
    host (device arrays are copied there: they are small) and moved to x's device as rows.

    The surrogate derivative g_t = sg.grad(v_t - v_th) is computed in the forward; the ctx keeps what the
    chosen backward reads: g ("output"), g and s ("bptt_detach_reset", and "bptt" with the soft reset),
    g, s and v ("bptt" with the hard reset)."""
    choice("gradient", gradient, LIF_GRADIENTS)
    x = time_series("x", x, dtype=compute_dtype(x))
    xp, dtype, hard = backend.array_module(x), x.dtype, reset == "hard"
    params = lif_params(x, *(backend.to_host(p) for p in (tau, v_th)), reset, backend.to_host(v_reset))
    tau_r, th_r, vr_r = per_row(xp, dtype, *params)                       # (R,) each
    code, c = surrogate_constants(sg, dtype)
    c = xp.asarray(c)
    xr = rows(x)[0]                                                        # (R, L)
    save_v = hard and gradient == "bptt"
    s, g = xp.empty(xr.shape, dtype), xp.empty(xr.shape, dtype)
    v = xp.empty(xr.shape if save_v else (0, 0), dtype)
    _launch(_kernels(dtype)[0], xr.shape[0], xp, xr, tau_r, th_r, vr_r if hard else th_r, hard,
            sg.fire_at_equality, code, c, s, g, v, save_v)
    ctx = (gradient, hard, g, s, v if save_v else None, tau_r, th_r, vr_r, c, x.shape, np.shape(v_th))
    return s.reshape(x.shape), ctx


def lif_vjp(ctx, gs):
    """CUDA fast path of refssm.spiking.lif_vjp: (gx (..., L), gv_th of v_th's shape), in x's dtype on its
    device. One kernel for every gradient mode; gv_th is accumulated in float64."""
    gradient, hard, g, s, v, tau_r, th_r, vr_r, c, shape, th_shape = ctx
    xp, dtype = backend.array_module(g), g.dtype
    gs = _cotangent(gs, shape, dtype, xp)
    gx, gth = xp.empty(g.shape, dtype), xp.empty(g.shape[0])
    mode = _MODES[gradient]
    _launch(_kernels(dtype)[1], g.shape[0], xp, gs, g, s, g if v is None else v, tau_r, th_r,
            vr_r, hard, mode, c, gx, gth)
    gv_th = ssm.sum_to_shape(gth.reshape(shape[:-1]), th_shape).astype(dtype)
    return gx.reshape(shape), gv_th


# --------------------------------------------------------------------------------------------------
# Refractory neuron (SPikE-SSM)
# --------------------------------------------------------------------------------------------------

def refractory(y, ln_vth, log_theta_r, tau, beta, sg):
    """CUDA fast path of refssm.spiking.refractory: the same spikes, bit for bit, by the exact sequential
    recurrence (one thread per row) instead of PMBC. v_th = exp(ln_vth), theta_r = exp(log_theta_r) are
    computed on the host as the oracle computes them (device arrays are copied there first).
    y (B, H, L) on the device; ln_vth, log_theta_r (H,); tau, beta fixed (scalars or (H,)).
    Returns (s (B, H, L), ctx) with s in y's dtype on y's device."""
    y = time_series("x", y, dtype=compute_dtype(y))
    xp, dtype = backend.array_module(y), y.dtype
    v_th, theta_r = np.exp(backend.to_host(ln_vth)), np.exp(backend.to_host(log_theta_r))
    tau, beta = backend.to_host(tau), backend.to_host(beta)
    tau_r, th_r, theta_rows, beta_r = per_row(xp, dtype, *refractory_params(y, tau, v_th, theta_r, beta))
    code, c = surrogate_constants(sg, dtype)
    c = xp.asarray(c)
    yr = rows(y)[0]                                                        # (B H, L)
    s, m = xp.empty(yr.shape, dtype), xp.empty(yr.shape, dtype)
    _launch(_kernels(dtype)[2], yr.shape[0], xp, yr, tau_r, th_r, theta_rows, beta_r, sg.fire_at_equality, c,
            s, m)
    return s.reshape(y.shape), (s, m, tau_r, th_r, beta_r, v_th, theta_r, code, c, y.shape)


def refractory_vjp(ctx, gs):
    """CUDA fast path of refssm.spiking.refractory_vjp: (gy (B, H, L), gln_vth (H,), glog_theta_r (H,)), the
    reset path detached, on the device of the forward's y. One reverse pass per row; the two parameter
    sums in float64."""
    s, m, tau_r, th_r, beta_r, v_th, theta_r, code, c, shape = ctx
    xp, dtype = backend.array_module(m), m.dtype
    gs = _cotangent(gs, shape, dtype, xp)
    B, H, L = shape
    gy, g_vth, g_theta = xp.empty(m.shape, dtype), xp.empty(B * H), xp.empty(B * H)
    _launch(_kernels(dtype)[3], m.shape[0], xp, gs, s, m, th_r, tau_r, beta_r, code, c, gy, g_vth, g_theta)
    g_vth, g_theta = g_vth.reshape(B, H).sum(axis=0), g_theta.reshape(B, H).sum(axis=0)
    return (gy.reshape(shape), (g_vth * xp.asarray(v_th)).astype(dtype, copy=False),
            (g_theta * xp.asarray(theta_r)).astype(dtype, copy=False))
