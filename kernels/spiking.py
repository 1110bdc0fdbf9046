"""Numba fast paths of refssm.spiking: the LIF neuron with its surrogate fused into the forward, and
the refractory neuron's VJP as one compiled loop. Registered in refssm.backend against their oracles
refssm.spiking.lif / lif_vjp and refssm.spiking.refractory / refractory_vjp (tests/test_kernels_spiking.py).

LIF layout. x (..., L) is flattened to rows (R, L), time contiguous. A row's recurrence is one
dependent chain (v_t needs u_{t-1}), so a loop over t inside a loop over rows runs at the latency of
that chain. Here each thread takes blocks of 8 rows (prange over blocks) and walks time in tiles
(FORWARD_TILE, BACKWARD_TILE bytes per row):

  forward   1. chain    the 8 recurrences advance together, state in registers: 8 independent chains
                        keep the FP units busy; the potentials v go to an (8, TB) tile
            2. spikes   s = H(v - v_th) and g = sg.grad(v - v_th) over the tile, row by row, time
                        contiguous: a branch-free loop LLVM vectorises (AVX2/AVX-512)
            3. store    the tile's rows go to the outputs s, g (and v when the backward needs it)
  backward  the tiles in reverse time: a vectorised pre-pass forms a_t = gs_t g_t (and the
            coefficient c_t) of the adjoint recurrence, which is linear; the 8 chains run it; a
            vectorised post-pass sums the threshold gradient and gx is stored

so the backward is one pass over what the forward saved: g and s ("output": g only; full "bptt"
with the hard reset also v). Time-major tiles (rows in SIMD lanes) were measured slower here: the
transposes in and out cost more than the scalar chains, about 1.5 cycles a step on Zen 4. The
backward's long tiles keep the reads in long runs, which the hardware prefetchers follow although
the pass walks the tiles backwards (1 KiB tiles read at about half the speed).

Outputs larger than the last-level cache (STREAM_BYTES) whose rows are 64-byte aligned are written
with non-temporal (streaming) stores, as memcpy does for large copies: the store does not first read
the line it overwrites, so a written byte costs one transfer, not two. The outputs are allocated
64-byte aligned for this. Tiles are allocated once per worker (4 per thread), not per block.

Arithmetic. The chain is the oracle's, in x's dtype (float32 stays float32; every constant is typed),
without fastmath: spikes and potentials equal refssm.neurons.lif bit for bit, with two rewrites that
are exact: s = 1[v >= v_th] is evaluated as v > nextafter(v_th, -inf) (no float lies between), and
the reset u = v (1 - s) + s v_reset as a select (equal up to the sign of a zero). The surrogate and
the backward follow the oracle's formulas in a different association (the sigmoid surrogate as
a e / (1 + e)^2, e = exp(-a|z|), which does not cancel in float32 where s -> 1), so they agree to
rounding. The threshold gradient is summed in float64.
"""

import math

import llvmlite.ir as llvm_ir
import numpy as np
from numba import get_num_threads, njit, prange, types
from numba.extending import intrinsic

from refssm import ssm
from refssm._checks import choice, time_series
from refssm.kernels import neurons as fast_neurons, rows
from refssm.kernels.ops import exp_constants, exp_nonpositive
from refssm.neurons import compute_dtype, lif_params
from refssm.spiking import LIF_GRADIENTS

RB = 8                          # rows per block: independent chains advanced together
FORWARD_TILE = 4096             # bytes per row of a forward tile (1024 float32 steps, 512 float64)
BACKWARD_TILE = 16384           # bytes per row of a backward tile: long runs, which the hardware
                                # prefetchers follow even though the pass walks the tiles backwards
STREAM_BYTES = 32 << 20         # outputs at least this large are written with streaming stores

# surrogate name -> code of the compiled derivative (refssm.surrogate.SURROGATES)
SURROGATE_CODES = {"triangle": 0, "fast_sigmoid": 1, "sigmoid": 2, "atan": 3, "rectangle": 4,
                   "straight_through": 5}


# --------------------------------------------------------------------------------------------------
# Streaming stores and aligned outputs
# --------------------------------------------------------------------------------------------------

@intrinsic
def _stream64(typingctx, dst, di, src, si):
    """dst.flat[di : di + n] = src.flat[si : si + n], n = 64 / itemsize: one non-temporal 64-byte store.
    dst.flat[di] must be 64-byte aligned; src may be unaligned."""
    sig = types.void(dst, di, src, si)

    def codegen(context, builder, signature, args):
        dst_t, _, src_t, _ = signature.args
        d = context.make_array(dst_t)(context, builder, args[0])
        s = context.make_array(src_t)(context, builder, args[2])
        element = context.get_data_type(dst_t.dtype)
        size = context.get_abi_sizeof(element)
        vector = llvm_ir.VectorType(element, 64 // size)
        src_ptr = builder.bitcast(builder.gep(s.data, [args[3]]), vector.as_pointer())
        dst_ptr = builder.bitcast(builder.gep(d.data, [args[1]]), vector.as_pointer())
        store = builder.store(builder.load(src_ptr, align=size), dst_ptr, align=64)
        store.set_metadata("nontemporal", builder.module.add_metadata([llvm_ir.Constant(llvm_ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _sfence(typingctx):
    """Order this thread's streaming stores before whatever follows (x86 sfence)."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.x86.sse.sfence",
                                              fnty=llvm_ir.FunctionType(llvm_ir.VoidType(), []))
        builder.call(fn, [])
        return context.get_dummy_value()

    return sig, codegen


def _empty_aligned(shape, dtype):
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    n = math.prod(shape)
    buf = np.empty(n + 64 // dtype.itemsize, dtype)
    offset = (-buf.ctypes.data % 64) // dtype.itemsize
    return buf[offset:offset + n].reshape(shape)


def _streams(a, tile):
    """Whether the rows (R, L) of output `a`, written in tiles of `tile` bytes per row, take streaming
    stores: a large output whose rows and tiles start on 64-byte boundaries."""
    return (a.nbytes >= STREAM_BYTES and a.ctypes.data % 64 == 0
            and (a.shape[-1] * a.itemsize) % 64 == 0 and tile % 64 == 0)


@njit(cache=True, error_model="numpy")
def _store_tile(out, tile, r0, t0, nb, nt, stream):
    """out[r0 + j, t0 : t0 + nt] = tile[j, :nt] for j < nb (streaming: nt a multiple of 64 bytes)."""
    L, TB = out.shape[1], tile.shape[1]
    if stream:
        step = 64 // out.itemsize
        for j in range(nb):
            base = (r0 + j) * L + t0
            for k in range(0, nt, step):
                _stream64(out, base + k, tile, j * TB + k)
    else:
        for j in range(nb):
            d, src = out[r0 + j, t0:t0 + nt], tile[j]
            for k in range(nt):
                d[k] = src[k]


# --------------------------------------------------------------------------------------------------
# Surrogate derivatives (refssm.surrogate), in the input's dtype
# --------------------------------------------------------------------------------------------------

def surrogate_constants(sg, dtype):
    """(code, c): the compiled surrogate's code and its constants c (dtype) for `_spikes_row` and `_surrogate_scalar`.

    c = [p0, p1, 0, 1, 1/2]: p0, p1 the surrogate's parameters in the form its formula uses."""
    if sg.name not in SURROGATE_CODES:
        raise ValueError(f"sg must be a refssm.surrogate.Surrogate; got name {sg.name!r}")
    p = sg.params
    p0, p1 = {
        "triangle": (p.get("width", 1.0), 0.0),
        "fast_sigmoid": (p.get("slope", 25.0), 0.0),
        "sigmoid": (p.get("alpha", 4.0), 0.0),
        "atan": (p.get("alpha", 2.0) / 2, np.pi * p.get("alpha", 2.0)),      # a/2, pi a
        "rectangle": (p.get("width", 1.0) / 2, 1.0 / p.get("width", 1.0)),  # w/2, 1/w
        "straight_through": (0.0, 0.0),
    }[sg.name]
    return SURROGATE_CODES[sg.name], np.array([p0, p1, 0.0, 1.0, 0.5], dtype)


@njit(cache=True, error_model="numpy")
def _spikes_row(code, c, ce, v, h, hc, s, g, n):
    """s[k] = 1[v[k] > hc] and g[k] = sg.grad(v[k] - h) for k < n: one loop per surrogate, each
    written as refssm.surrogate writes it (sigmoid: in the form without cancellation, with the
    vectorisable exp of refssm.kernels.ops; ce its constants), so every one vectorises."""
    p0, p1, zero, one, half = c[0], c[1], c[2], c[3], c[4]
    if code == 0:                                          # triangle: max(0, 1 - |z|/w) / w
        for k in range(n):
            s[k] = one if v[k] > hc else zero
            g[k] = max(zero, one - abs(v[k] - h) / p0) / p0
    elif code == 1:                                        # fast sigmoid: 1 / (k|z| + 1)^2
        for k in range(n):
            s[k] = one if v[k] > hc else zero
            d = p0 * abs(v[k] - h) + one
            g[k] = one / (d * d)
    elif code == 2:                                        # sigmoid: a s (1 - s) = a e / (1 + e)^2
        for k in range(n):                                 # with e = exp(-a|z|): no cancellation in
            s[k] = one if v[k] > hc else zero              # 1 - s where s -> 1 (float32 tails)
            e = exp_nonpositive(-abs(p0 * (v[k] - h)), ce)
            g[k] = p0 * e / ((one + e) * (one + e))
    elif code == 3:                                        # atan: (a/2) / (1 + (pi a z / 2)^2)
        for k in range(n):
            s[k] = one if v[k] > hc else zero
            w = p1 * (v[k] - h) * half
            g[k] = p0 / (one + w * w)
    elif code == 4:                                        # rectangle: 1[|z| < w/2] / w
        for k in range(n):
            s[k] = one if v[k] > hc else zero
            g[k] = p1 if abs(v[k] - h) < p0 else zero
    else:                                                  # straight-through: 1[0 <= z <= 1]
        for k in range(n):
            s[k] = one if v[k] > hc else zero
            z = v[k] - h
            g[k] = one if (z >= zero) & (z <= one) else zero


@njit(cache=True, error_model="numpy")
def _surrogate_scalar(code, c, ce, z):
    """sg.grad(z) for one value (the refractory VJP's per-element loop)."""
    p0, p1, zero, one, half = c[0], c[1], c[2], c[3], c[4]
    if code == 0:
        return max(zero, one - abs(z) / p0) / p0
    if code == 1:
        d = p0 * abs(z) + one
        return one / (d * d)
    if code == 2:
        e = exp_nonpositive(-abs(p0 * z), ce)
        return p0 * e / ((one + e) * (one + e))
    if code == 3:
        w = p1 * z * half
        return p0 / (one + w * w)
    if code == 4:
        return p1 if abs(z) < p0 else zero
    return one if (z >= zero) & (z <= one) else zero


# --------------------------------------------------------------------------------------------------
# LIF forward
# --------------------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _lif_chain8(x, rows, t0, nt, vt, u, tau, thc, r, hard):
    """Advance the 8 rows rows[0..7] through steps t0 .. t0 + nt - 1; potentials into vt[j, :nt].

    v = tau u + x;  fired = v > thc (thc = v_th, or its float predecessor to fire at equality);
    u = (v_reset if hard else v - v_th) if fired else v, with r = v_reset (hard) or v_th (soft)."""
    x0, x1, x2, x3 = x[rows[0], t0:t0 + nt], x[rows[1], t0:t0 + nt], x[rows[2], t0:t0 + nt], x[rows[3], t0:t0 + nt]
    x4, x5, x6, x7 = x[rows[4], t0:t0 + nt], x[rows[5], t0:t0 + nt], x[rows[6], t0:t0 + nt], x[rows[7], t0:t0 + nt]
    y0, y1, y2, y3, y4, y5, y6, y7 = vt[0], vt[1], vt[2], vt[3], vt[4], vt[5], vt[6], vt[7]
    u0, u1, u2, u3, u4, u5, u6, u7 = u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7]
    p0, p1, p2, p3, p4, p5, p6, p7 = tau[0], tau[1], tau[2], tau[3], tau[4], tau[5], tau[6], tau[7]
    h0, h1, h2, h3, h4, h5, h6, h7 = thc[0], thc[1], thc[2], thc[3], thc[4], thc[5], thc[6], thc[7]
    r0, r1, r2, r3, r4, r5, r6, r7 = r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
    if hard:
        for k in range(nt):
            v0 = p0 * u0 + x0[k]
            v1 = p1 * u1 + x1[k]
            v2 = p2 * u2 + x2[k]
            v3 = p3 * u3 + x3[k]
            v4 = p4 * u4 + x4[k]
            v5 = p5 * u5 + x5[k]
            v6 = p6 * u6 + x6[k]
            v7 = p7 * u7 + x7[k]
            y0[k], y1[k], y2[k], y3[k], y4[k], y5[k], y6[k], y7[k] = v0, v1, v2, v3, v4, v5, v6, v7
            u0 = r0 if v0 > h0 else v0
            u1 = r1 if v1 > h1 else v1
            u2 = r2 if v2 > h2 else v2
            u3 = r3 if v3 > h3 else v3
            u4 = r4 if v4 > h4 else v4
            u5 = r5 if v5 > h5 else v5
            u6 = r6 if v6 > h6 else v6
            u7 = r7 if v7 > h7 else v7
    else:
        for k in range(nt):
            v0 = p0 * u0 + x0[k]
            v1 = p1 * u1 + x1[k]
            v2 = p2 * u2 + x2[k]
            v3 = p3 * u3 + x3[k]
            v4 = p4 * u4 + x4[k]
            v5 = p5 * u5 + x5[k]
            v6 = p6 * u6 + x6[k]
            v7 = p7 * u7 + x7[k]
            y0[k], y1[k], y2[k], y3[k], y4[k], y5[k], y6[k], y7[k] = v0, v1, v2, v3, v4, v5, v6, v7
            u0 = v0 - r0 if v0 > h0 else v0
            u1 = v1 - r1 if v1 > h1 else v1
            u2 = v2 - r2 if v2 > h2 else v2
            u3 = v3 - r3 if v3 > h3 else v3
            u4 = v4 - r4 if v4 > h4 else v4
            u5 = v5 - r5 if v5 > h5 else v5
            u6 = v6 - r6 if v6 > h6 else v6
            u7 = v7 - r7 if v7 > h7 else v7
    u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7] = u0, u1, u2, u3, u4, u5, u6, u7


@njit(cache=True, error_model="numpy")
def _lif_spikes_tile(code, c, ce, vt, st, gt, th, thc, nb, nt):
    """From the potentials vt: spikes st = 1[v > thc] and surrogate derivatives gt = sg.grad(v - v_th)."""
    for j in range(nb):
        _spikes_row(code, c, ce, vt[j], th[j], thc[j], st[j], gt[j], nt)


@njit(parallel=True, cache=True, error_model="numpy")
def _lif_forward(x, tau, th, thc, r, hard, code, c, ce, s, g, v, save_v, stream, TB, workers):
    """LIF forward over rows x (R, L): spikes s, surrogate derivatives g and (save_v) potentials v."""
    R, L = x.shape
    TB = min(TB, L)
    nblk = (R + RB - 1) // RB
    nw = min(nblk, workers)                                # tiles allocated once per worker
    for w in prange(nw):
        rows = np.empty(RB, np.int64)
        tau_b, th_b, thc_b, r_b = (np.empty(RB, x.dtype), np.empty(RB, x.dtype), np.empty(RB, x.dtype),
                                   np.empty(RB, x.dtype))
        u = np.zeros(RB, x.dtype)
        vt, st, gt = np.zeros((RB, TB), x.dtype), np.zeros((RB, TB), x.dtype), np.zeros((RB, TB), x.dtype)
        for blk in range(w * nblk // nw, (w + 1) * nblk // nw):
            r0 = blk * RB
            nb = min(RB, R - r0)
            for j in range(RB):                            # rows past R repeat the last row, unstored
                i = min(r0 + j, R - 1)
                rows[j], tau_b[j], th_b[j], thc_b[j], r_b[j] = i, tau[i], th[i], thc[i], r[i]
                u[j] = 0
            for t0 in range(0, L, TB):
                nt = min(TB, L - t0)
                _lif_chain8(x, rows, t0, nt, vt, u, tau_b, thc_b, r_b, hard)
                _lif_spikes_tile(code, c, ce, vt, st, gt, th_b, thc_b, nb, nt)
                _store_tile(s, st, r0, t0, nb, nt, stream)
                _store_tile(g, gt, r0, t0, nb, nt, stream)
                if save_v:
                    _store_tile(v, vt, r0, t0, nb, nt, stream)
        if stream:
            _sfence()


# --------------------------------------------------------------------------------------------------
# LIF backward
# --------------------------------------------------------------------------------------------------

# The adjoint of the LIF recurrence is linear in dL/du. With a_t = gs_t g_t, du/dv = 1 - s_t (hard)
# or 1 (soft), du/ds = v_reset - v_t (hard) or -v_th (soft), the du/ds terms only for "bptt", and the
# soft reset's explicit v_th in u_t = v_t - s_t v_th:
#
#     dL/dx_t = a_t + dL/du_t c_t,   dL/du_{t-1} = tau dL/dx_t,   dL/dv_th = -sum_t (a_t + dL/du_t e_t)
#
#     hard, detached: c = 1 - s,              e = 0
#     soft, detached: c = 1,                  e = s
#     hard, bptt:     c = 1 - s + e,          e = (v_reset - v) g
#     soft, bptt:     c = 1 - v_th g,         e = s - v_th g
#
# (the oracle's dL/ds_t = gs_t + dL/du_t du/ds, dL/dv_t = dL/ds_t g_t + dL/du_t du/dv, regrouped).
# Per block of 8 rows and tile of steps: a pre-pass forms a (and c) row by row, the 8 chains run the
# recurrence, a post-pass sums the threshold gradient row by row and stores dL/dx.

@njit(cache=True, error_model="numpy")
def _adjoint_coefficients(gs, g, s, v, r0, t0, nb, nt, th, vr, hard, through, c, at, ct):
    """a = gs g into at[j], and c into ct[j] unless c = 1 (soft, detached)."""
    one = c[3]
    for j in range(nb):
        gs_j, g_j, s_j = gs[r0 + j, t0:t0 + nt], g[r0 + j, t0:t0 + nt], s[r0 + j, t0:t0 + nt]
        a, cc = at[j], ct[j]
        for k in range(nt):
            a[k] = gs_j[k] * g_j[k]
        if hard and through:
            v_j, w = v[r0 + j, t0:t0 + nt], vr[j]
            for k in range(nt):
                cc[k] = one - s_j[k] + (w - v_j[k]) * g_j[k]
        elif hard:
            for k in range(nt):
                cc[k] = one - s_j[k]
        elif through:
            h = th[j]
            for k in range(nt):
                cc[k] = one - h * g_j[k]


@njit(cache=True, error_model="numpy")
def _adjoint_chain8(at, ct, gxt, gu, tau, nt, unit_c):
    """The 8 adjoint chains backwards through a tile: gxt[j, k] = dL/dx; gu carries dL/du."""
    a0, a1, a2, a3, a4, a5, a6, a7 = at[0], at[1], at[2], at[3], at[4], at[5], at[6], at[7]
    o0, o1, o2, o3, o4, o5, o6, o7 = gxt[0], gxt[1], gxt[2], gxt[3], gxt[4], gxt[5], gxt[6], gxt[7]
    q0, q1, q2, q3, q4, q5, q6, q7 = gu[0], gu[1], gu[2], gu[3], gu[4], gu[5], gu[6], gu[7]
    p0, p1, p2, p3, p4, p5, p6, p7 = tau[0], tau[1], tau[2], tau[3], tau[4], tau[5], tau[6], tau[7]
    if unit_c:
        for k in range(nt - 1, -1, -1):
            d0, d1, d2, d3 = a0[k] + q0, a1[k] + q1, a2[k] + q2, a3[k] + q3
            d4, d5, d6, d7 = a4[k] + q4, a5[k] + q5, a6[k] + q6, a7[k] + q7
            o0[k], o1[k], o2[k], o3[k], o4[k], o5[k], o6[k], o7[k] = d0, d1, d2, d3, d4, d5, d6, d7
            q0, q1, q2, q3, q4, q5, q6, q7 = p0 * d0, p1 * d1, p2 * d2, p3 * d3, p4 * d4, p5 * d5, p6 * d6, p7 * d7
    else:
        c0, c1, c2, c3, c4, c5, c6, c7 = ct[0], ct[1], ct[2], ct[3], ct[4], ct[5], ct[6], ct[7]
        for k in range(nt - 1, -1, -1):
            d0, d1 = a0[k] + q0 * c0[k], a1[k] + q1 * c1[k]
            d2, d3 = a2[k] + q2 * c2[k], a3[k] + q3 * c3[k]
            d4, d5 = a4[k] + q4 * c4[k], a5[k] + q5 * c5[k]
            d6, d7 = a6[k] + q6 * c6[k], a7[k] + q7 * c7[k]
            o0[k], o1[k], o2[k], o3[k], o4[k], o5[k], o6[k], o7[k] = d0, d1, d2, d3, d4, d5, d6, d7
            q0, q1, q2, q3, q4, q5, q6, q7 = p0 * d0, p1 * d1, p2 * d2, p3 * d3, p4 * d4, p5 * d5, p6 * d6, p7 * d7
    gu[0], gu[1], gu[2], gu[3], gu[4], gu[5], gu[6], gu[7] = q0, q1, q2, q3, q4, q5, q6, q7


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def _threshold_sum(a, gx, q_last, e_kind, s, g, v, h, w, tau, nt):
    """sum_k (a_k + dL/du_k e_k) over a tile, in float64, with dL/du_k = tau gx_{k+1} (k < nt - 1) and
    q_last at the tile's last step. e_kind: 0 none, 1 s, 2 (v_reset - v) g, 3 s - v_th g.
    The sum may be reassociated (fastmath "reassoc", this function only), so LLVM vectorises it."""
    m = nt - 1
    total = 0.0
    if e_kind == 0:
        for k in range(nt):
            total += np.float64(a[k])
        return total
    if e_kind == 1:
        for k in range(m):
            total += np.float64(a[k] + tau * gx[k + 1] * s[k])
        return total + np.float64(a[m] + q_last * s[m])
    if e_kind == 2:
        for k in range(m):
            total += np.float64(a[k] + tau * gx[k + 1] * ((w - v[k]) * g[k]))
        return total + np.float64(a[m] + q_last * ((w - v[m]) * g[m]))
    for k in range(m):
        total += np.float64(a[k] + tau * gx[k + 1] * (s[k] - h * g[k]))
    return total + np.float64(a[m] + q_last * (s[m] - h * g[m]))


@njit(parallel=True, cache=True, error_model="numpy")
def _lif_backward(gs, g, s, v, tau, th, vr, hard, through, c, gx, gth, stream, TB, workers):
    """BPTT over rows (R, L) in one reverse pass: gx (R, L) and gth (R,) = dL/dv_th per row."""
    R, L = gs.shape
    TB = min(TB, L)
    ntiles = (L + TB - 1) // TB
    unit_c = not hard and not through
    e_kind = (2 if through else 0) if hard else (3 if through else 1)
    nblk = (R + RB - 1) // RB
    nw = min(nblk, workers)                                # tiles allocated once per worker
    for w in prange(nw):
        tau_b, th_b, vr_b = np.zeros(RB, gs.dtype), np.zeros(RB, gs.dtype), np.zeros(RB, gs.dtype)
        gu, q_in, acc = np.zeros(RB, gs.dtype), np.zeros(RB, gs.dtype), np.zeros(RB)
        at, ct, gxt = np.zeros((RB, TB), gs.dtype), np.zeros((RB, TB), gs.dtype), np.zeros((RB, TB), gs.dtype)
        for blk in range(w * nblk // nw, (w + 1) * nblk // nw):
            r0 = blk * RB
            nb = min(RB, R - r0)
            for j in range(RB):                            # rows past R: zero coefficients, unstored
                ok = j < nb
                tau_b[j] = tau[r0 + j] if ok else 0
                th_b[j] = th[r0 + j] if ok else 0
                vr_b[j] = vr[r0 + j] if ok else 0
                gu[j], acc[j] = 0, 0.0
                if not ok:
                    at[j, :] = 0
                    ct[j, :] = 0
            for tile in range(ntiles - 1, -1, -1):
                t0 = tile * TB
                nt = min(TB, L - t0)
                _adjoint_coefficients(gs, g, s, v, r0, t0, nb, nt, th_b, vr_b, hard, through, c, at, ct)
                q_in[:] = gu
                _adjoint_chain8(at, ct, gxt, gu, tau_b, nt, unit_c)
                for j in range(nb):
                    i = r0 + j
                    acc[j] += _threshold_sum(at[j], gxt[j], q_in[j], e_kind, s[i, t0:t0 + nt], g[i, t0:t0 + nt],
                                             v[i, t0:t0 + nt] if hard and through else s[i, t0:t0 + nt],
                                             th_b[j], vr_b[j], tau_b[j], nt)
                _store_tile(gx, gxt, r0, t0, nb, nt, stream)
            for j in range(nb):
                gth[r0 + j] = -acc[j]
        if stream:
            _sfence()


# --------------------------------------------------------------------------------------------------
# LIF: the public pair
# --------------------------------------------------------------------------------------------------

def _row(a):
    """One array (..., L) as contiguous rows (R, L): refssm.kernels.rows."""
    return rows(a)[0]


def lif(x, tau, v_th, sg, gradient="bptt", reset="hard", v_reset=0.0):
    """Fast path of refssm.spiking.lif (same arguments, same checks): spikes s (..., L) in x's dtype
    (float32 or float64, as refssm.neurons.compute_dtype) and the ctx of `lif_vjp`.

    The surrogate derivative g_t = sg.grad(v_t - v_th) is computed in the forward; the ctx keeps
    what the chosen backward reads: g ("output"), g and s ("bptt_detach_reset", and "bptt" with the
    soft reset), g, s and v ("bptt" with the hard reset)."""
    choice("gradient", gradient, LIF_GRADIENTS)
    x = time_series("x", x, dtype=compute_dtype(x))
    tau_r, th_r, vr_r = lif_params(x, tau, v_th, reset, v_reset)
    dtype, hard = x.dtype, reset == "hard"
    code, c = surrogate_constants(sg, dtype)
    xr = _row(x)
    tau_r, th_r, vr_r = (np.ascontiguousarray(a, dtype).reshape(-1) for a in (tau_r, th_r, vr_r))
    thc = np.nextafter(th_r, dtype.type(-np.inf)) if sg.fire_at_equality else th_r
    save_v = hard and gradient == "bptt"
    s, g = _empty_aligned(xr.shape, dtype), _empty_aligned(xr.shape, dtype)
    v = _empty_aligned(xr.shape, dtype) if save_v else np.empty((0, 0), dtype)
    stream = _streams(s, FORWARD_TILE)
    if xr.size:
        _lif_forward(xr, tau_r, th_r, thc, vr_r if hard else th_r, hard, code, c, exp_constants(dtype),
                     s, g, v, save_v, stream, FORWARD_TILE // dtype.itemsize, 4 * get_num_threads())
    ctx = (gradient, hard, g, s, v if save_v else None, tau_r, th_r, vr_r, c, x.shape, np.shape(v_th))
    return s.reshape(x.shape), ctx


def lif_vjp(ctx, gs):
    """Fast path of refssm.spiking.lif_vjp: (gx (..., L), gv_th of v_th's shape), in x's dtype.
    gv_th is accumulated in float64."""
    gradient, hard, g, s, v, tau_r, th_r, vr_r, c, shape, th_shape = ctx
    gs = np.asarray(gs)
    if gs.shape != shape:
        raise ValueError(f"gs must have shape {shape}, got {gs.shape}")
    gs = _row(gs.astype(g.dtype, copy=False))
    if gradient == "output":                               # no recursion: dL/dx_t = gs_t g_t
        gx = np.multiply(gs, g)
        gth = -gx.sum(axis=-1, dtype=np.float64)
    else:
        gx, gth = _empty_aligned(g.shape, g.dtype), np.zeros(g.shape[0])
        if g.size:
            _lif_backward(gs, g, s, v if v is not None else s, tau_r, th_r, vr_r, hard,
                          gradient == "bptt", c, gx, gth, _streams(gx, BACKWARD_TILE), BACKWARD_TILE // g.itemsize,
                          4 * get_num_threads())
    gv_th = ssm.sum_to_shape(gth.reshape(shape[:-1]), th_shape).astype(g.dtype)
    return gx.reshape(shape), gv_th


# --------------------------------------------------------------------------------------------------
# Refractory neuron (SPikE-SSM): forward by the Numba PMBC, VJP as one compiled loop
# --------------------------------------------------------------------------------------------------

def refractory(y, ln_vth, log_theta_r, tau, beta, sg):
    """Fast path of refssm.spiking.refractory: the same spikes, bit for bit (the Numba PMBC of
    refssm.kernels.neurons on the oracle's v_th = exp(ln_vth), theta_r = exp(log_theta_r)).
    y (B, H, L); ln_vth, log_theta_r (H,); tau, beta fixed (scalars or (H,)). Returns (s, ctx)."""
    v_th, theta_r = np.exp(ln_vth), np.exp(log_theta_r)
    s, m, _ = fast_neurons.pmbc(y, tau, v_th, theta_r, beta, sg.fire_at_equality)
    return s, (s, m, v_th, theta_r, tau, beta, sg)


@njit(parallel=True, cache=True, error_model="numpy")
def _refractory_vjp_rows(gs, s, m, v_th, tau, beta, code, c, ce, gy, g_vth, g_theta):
    """Per row (R = B H rows, parameters per row): in time, G_t = gs_t sg.grad(m_t - v_th) and the
    sums sum_t G_t (-1 - reset_t), sum_t G_t (-trace_t) with reset_t = tau (reset_{t-1} + s_{t-1}),
    trace_t = beta trace_{t-1} + s_{t-1}; then backwards gy_t = G_t + tau gy_{t+1}."""
    R, L = gs.shape
    zero, one = c[2], c[3]
    for i in prange(R):
        h, a, b = v_th[i], tau[i], beta[i]
        reset = trace = zero
        acc_v = acc_t = 0.0
        for t in range(L):
            if t > 0:
                reset = a * (reset + s[i, t - 1])
                trace = b * trace + s[i, t - 1]
            G = gs[i, t] * _surrogate_scalar(code, c, ce, m[i, t] - h)
            gy[i, t] = G
            acc_v += np.float64(G * (-one - reset))
            acc_t += np.float64(G * -trace)
        q = zero
        for t in range(L - 1, -1, -1):
            q = gy[i, t] + a * q
            gy[i, t] = q
        g_vth[i], g_theta[i] = acc_v, acc_t


def refractory_vjp(ctx, gs):
    """Fast path of refssm.spiking.refractory_vjp: (gy (B, H, L), gln_vth (H,), glog_theta_r (H,)),
    the reset path detached. One compiled pass per row; the two parameter sums in float64."""
    s, m, v_th, theta_r, tau, beta, sg = ctx
    dtype = m.dtype
    gs = np.asarray(gs)
    if gs.shape != m.shape:
        raise ValueError(f"gs must have shape {m.shape}, got {gs.shape}")
    B, H, L = m.shape
    code, c = surrogate_constants(sg, dtype)
    per_row = [np.ascontiguousarray(np.broadcast_to(np.asarray(p, dtype), (B, H))).reshape(-1)
               for p in (v_th, tau, beta)]
    gy, g_vth, g_theta = np.empty((B * H, L), dtype), np.empty(B * H), np.empty(B * H)
    if gy.size:
        _refractory_vjp_rows(_row(gs.astype(dtype, copy=False)), _row(s), _row(m), *per_row, code, c,
                             exp_constants(dtype), gy, g_vth, g_theta)
    else:
        g_vth[:], g_theta[:] = 0.0, 0.0
    g_vth, g_theta = g_vth.reshape(B, H).sum(axis=0), g_theta.reshape(B, H).sum(axis=0)
    return (gy.reshape(B, H, L), (g_vth * v_th).astype(dtype, copy=False),
            (g_theta * theta_r).astype(dtype, copy=False))
