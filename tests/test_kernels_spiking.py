"""refssm.kernels.spiking (the Numba LIF and refractory pairs) against their oracles in refssm.spiking.

Draws (hypothesis): shapes with L = 1, odd sizes, a batch of 1, more rows than one 8-row block,
non-contiguous x (a transposed or a strided view), scalar and per-channel parameters, every gradient
mode, both resets, both spike conventions, every surrogate; half the draws on a dyadic lattice
(inputs and parameters), where the arithmetic is exact and v == v_th happens often, so both
conventions meet real ties. Some draws shrink the tiles and force streaming stores so small inputs
cross tile boundaries and take the streaming path.

float64: spikes equal, gradients to 1e-10 (relative to the largest oracle value).

float32, against the float32 oracle: the oracle computes the neuron in x's dtype
(refssm.neurons.compute_dtype) with the same operations in the same order, so the potentials and
therefore the spikes are equal bit for bit, ties included: no tie needs special handling. The
parameters are passed as float32 values so the oracle's surrogate sees the same z = v - v_th (float32
parameters in a float64 numpy expression would shift z by the threshold's rounding and move a
discontinuous surrogate, rectangle or straight-through, across its step). What differs is the
rounding of the surrogate (float64 in the oracle, float32 here) and the order of the backward's sums:
gradients agree to F32_TOL = 2e-5 relative to the largest oracle value (worst seen over 3000 draws
with L < 60: 3.6e-6, in the threshold gradient, which the oracle sums over L steps in float32; that
sum can cancel far below its terms, so it is compared to the size of its terms, sum |dL/dx|).

float32, against the float64 oracle (the accuracy of float32 itself): here the potentials differ by
rounding, so a step whose float64 potential lies within float32 rounding of the threshold (here
TIE_BAND (1 + |v|), far above the float32 error of a potential, at most ~8 eps |v| for tau <= 7/8)
may fire in one and not the other, and every later step of that row can then differ. Such rows are
left out (10 of 16663 rows in 2000 draws), and so are rows where z = v - v_th comes that close to
a step of a discontinuous surrogate (rectangle, straight-through); on the others spikes are equal
and gradients agree to F32_VS_F64_TOL = 1e-4 (worst seen: 8e-6, full BPTT, soft reset).
"""

import contextlib

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from refssm import spiking, surrogate
from refssm.kernels import spiking as fast
from kernel_checks import LIF_BAD_INPUTS, close, close_threshold, param, signal

F32_TOL = 2e-5
F32_VS_F64_TOL = 1e-4
TIE_BAND = 1e-5
SURROGATES = list(surrogate.SURROGATES)
seeds = st.integers(0, 2**31)
leads = st.sampled_from([(1,), (3,), (1, 1), (2, 3), (1, 5), (2, 5), (3, 7), (2, 1, 3)])
lengths = st.one_of(st.just(1), st.sampled_from([2, 7, 16, 17, 33]), st.integers(1, 40))


@contextlib.contextmanager
def small_tiles(on):
    """Tiles of 64 / 128 bytes and streaming stores at any size: small inputs cross tiles and stream
    (where their rows are 64-byte multiples)."""
    saved = fast.FORWARD_TILE, fast.BACKWARD_TILE, fast.STREAM_BYTES
    if on:
        fast.FORWARD_TILE, fast.BACKWARD_TILE, fast.STREAM_BYTES = 64, 128, 0
    try:
        yield
    finally:
        fast.FORWARD_TILE, fast.BACKWARD_TILE, fast.STREAM_BYTES = saved


def _lif_case(data, dtype):
    rng = np.random.default_rng(data.draw(seeds))
    lead, L = data.draw(leads), data.draw(lengths)
    on_lattice, per_channel = data.draw(st.booleans()), data.draw(st.booleans())
    layout = data.draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    x = signal(rng, lead + (L,), on_lattice, layout)
    params = dict(tau=param(rng, lead, [0.0, 0.25, 0.5, 0.875], on_lattice, per_channel),
                  v_th=param(rng, lead, [0.5, 1.0], on_lattice, per_channel),
                  v_reset=param(rng, lead, [-0.5, 0.0, 0.25], on_lattice, per_channel))
    sg = surrogate.get(data.draw(st.sampled_from(SURROGATES)), fire_at_equality=data.draw(st.booleans()))
    gradient = data.draw(st.sampled_from(spiking.LIF_GRADIENTS))
    reset = data.draw(st.sampled_from(["hard", "soft"]))
    x = x.astype(dtype)
    params = {k: np.asarray(v, dtype) for k, v in params.items()}
    gs = rng.standard_normal(x.shape).astype(dtype)
    return x, params, sg, gradient, reset, gs


@settings(max_examples=150, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([np.float64, np.float32]), small=st.booleans())
def test_lif_matches_oracle(data, dtype, small):
    x, p, sg, gradient, reset, gs = _lif_case(data, dtype)
    args = (x, p["tau"], p["v_th"], sg, gradient, reset, p["v_reset"])
    with small_tiles(small):
        s, ctx = fast.lif(*args)
        gx, gth = fast.lif_vjp(ctx, gs)
    s0, ctx0 = spiking.lif(*args)
    assert s.dtype == s0.dtype == dtype and s.shape == x.shape
    np.testing.assert_array_equal(s, s0)                   # both dtypes: same arithmetic, ties included
    gx0, gth0 = spiking.lif_vjp(ctx0, gs)
    assert gx.dtype == dtype and gth.shape == np.shape(p["v_th"])
    tol = 1e-10 if dtype == np.float64 else F32_TOL
    close(gx, gx0, tol)
    close_threshold(gth, gth0, gx0, tol)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_lif_float32_against_float64_oracle(data):
    rng = np.random.default_rng(data.draw(seeds))
    lead, L = data.draw(st.sampled_from([(3,), (2, 5), (4, 3)])), data.draw(st.integers(1, 60))
    x = rng.normal(0.4, 1.0, lead + (L,)).astype(np.float32)
    v_th = rng.uniform(0.5, 1.5, lead).astype(np.float32)                     # one per row
    tau = np.float32(data.draw(st.sampled_from([0.0, 0.25, 0.5, 0.875])))
    sg = surrogate.get(data.draw(st.sampled_from(SURROGATES)), fire_at_equality=data.draw(st.booleans()))
    gradient = data.draw(st.sampled_from(spiking.LIF_GRADIENTS))
    reset = data.draw(st.sampled_from(["hard", "soft"]))
    gs = rng.standard_normal(x.shape).astype(np.float32)
    s, ctx = fast.lif(x, tau, v_th, sg, gradient, reset)
    s0, ctx0 = spiking.lif(x.astype(np.float64), float(tau), v_th.astype(np.float64), sg, gradient, reset)
    v0 = ctx0[1]
    near = np.abs(v0 - v_th[..., None].astype(np.float64)) <= TIE_BAND * (1 + np.abs(v0))
    keep = ~near.any(axis=-1)                                                  # rows without a near tie
    assume(keep.any())
    np.testing.assert_array_equal(s[keep], s0[keep])
    if sg.name in ("rectangle", "straight_through"):       # steps of the surrogate: z near them is a tie
        z = v0 - v_th[..., None]
        edges = {"rectangle": [-0.5, 0.5], "straight_through": [0.0, 1.0]}[sg.name]
        keep &= ~np.any([np.abs(z - e) <= TIE_BAND * (1 + np.abs(v0)) for e in edges], axis=(0, -1))
    gx, gth = fast.lif_vjp(ctx, gs)
    gx0, gth0 = spiking.lif_vjp(ctx0, gs.astype(np.float64))
    close(gx[keep], gx0[keep], F32_VS_F64_TOL)
    close_threshold(gth[keep], gth0[keep], gx0[keep], F32_VS_F64_TOL)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lif_streaming_path_at_the_real_threshold(dtype):
    # rows of 64-byte multiples, output over STREAM_BYTES / 8: with STREAM_BYTES lowered, the default
    # tiles and streaming stores run as in the benchmark
    rng = np.random.default_rng(3)
    x = rng.normal(0.4, 1.0, (9, 2048)).astype(dtype)
    sg = surrogate.get("atan")
    gs = rng.standard_normal(x.shape).astype(dtype)
    s, ctx = fast.lif(x, 0.5, 1.0, sg, "bptt_detach_reset", "soft")
    assert fast._streams(ctx[2], fast.FORWARD_TILE) is False                  # below STREAM_BYTES: ordinary stores
    with small_tiles(False):
        fast.STREAM_BYTES = 0
        s1, ctx1 = fast.lif(x, 0.5, 1.0, sg, "bptt_detach_reset", "soft")
        assert fast._streams(ctx1[2], fast.FORWARD_TILE)
        out1 = fast.lif_vjp(ctx1, gs)
    np.testing.assert_array_equal(s1, s)
    for a, b in zip(out1, fast.lif_vjp(ctx, gs)):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([np.float64, np.float32]))
def test_refractory_matches_oracle(data, dtype):
    rng = np.random.default_rng(data.draw(seeds))
    B, H = data.draw(st.sampled_from([(1, 1), (1, 3), (2, 3), (3, 5)]))
    L = data.draw(lengths)
    on_lattice = data.draw(st.booleans())
    layout = data.draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    y = signal(rng, (B, H, L), on_lattice, layout).astype(dtype)
    if on_lattice:
        ln_vth = np.log(rng.choice([0.5, 1.0], H)).astype(dtype)
        log_theta = np.log(rng.choice([0.25, 0.5, 1.0], H)).astype(dtype)
    else:
        ln_vth = (0.2 * rng.standard_normal(H)).astype(dtype)
        log_theta = (np.log(0.3) + 0.2 * rng.standard_normal(H)).astype(dtype)
    per_channel = data.draw(st.booleans())
    tau = rng.choice([0.0, 0.25, 0.5, 0.875], H) if per_channel else 0.5
    beta = rng.choice([0.0, 0.5, 0.75], H) if per_channel else 0.75
    sg = surrogate.get(data.draw(st.sampled_from(SURROGATES)), fire_at_equality=data.draw(st.booleans()))
    gs = rng.standard_normal(y.shape).astype(dtype)
    s, ctx = fast.refractory(y, ln_vth, log_theta, tau, beta, sg)
    s0, ctx0 = spiking.refractory(y, ln_vth, log_theta, tau, beta, sg)
    assert s.dtype == s0.dtype == dtype
    np.testing.assert_array_equal(s, s0)
    tol = 1e-10 if dtype == np.float64 else F32_TOL
    for a, b in zip(fast.refractory_vjp(ctx, gs), spiking.refractory_vjp(ctx0, gs)):
        assert a.dtype == dtype and a.shape == b.shape
        close(a, b, tol)


def test_registered_in_the_backend():
    from refssm import backend
    assert backend.op("lif", "numba") == (fast.lif, fast.lif_vjp)
    assert backend.op("refractory", "numba") == (fast.refractory, fast.refractory_vjp)
    assert backend.oracle("lif") == (spiking.lif, spiking.lif_vjp)


@pytest.mark.parametrize("args, kwargs", LIF_BAD_INPUTS)
def test_bad_input_raises_the_oracles_error(args, kwargs):
    with pytest.raises(ValueError) as expected:
        spiking.lif(*args, **kwargs)
    with pytest.raises(ValueError) as got:
        fast.lif(*args, **kwargs)
    assert str(got.value) == str(expected.value)


def test_vjp_rejects_a_wrong_cotangent_shape():
    _, ctx = fast.lif(np.ones((2, 3, 5)), 0.5, 1.0, surrogate.get("atan"))
    with pytest.raises(ValueError, match="gs must have shape"):
        fast.lif_vjp(ctx, np.ones((2, 3, 4)))
