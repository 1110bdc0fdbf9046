"""refssm.kernels.cuda.spiking (the CUDA LIF and refractory pairs) against their oracles in refssm.spiking,
run in Numba's CUDA simulator (tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1 unless the environment says
otherwise). The simulator runs every CUDA thread as a Python thread, so the shapes are tiny; some still
have more rows than one 32-row block and more steps than one 32-step tile.

float64: spikes equal, gradients to 1e-10 (relative to the largest oracle value).

float32, against the float32 oracle: the kernels run the oracle's recurrence in x's dtype with the same
operations in the same order (products never fused into an FMA: refssm.kernels.cuda.mul_rn), so the
potentials and the spikes are equal bit for bit, ties included; no step within rounding of the threshold
needs leaving out. Parameters are passed as float32 values, so the oracle's surrogate sees the same
z = v - v_th. The surrogate's rounding and the order of the backward's sums differ: gradients agree to
F32_TOL = 2e-5 relative to the largest oracle value, the threshold gradient (a sum over time that can
cancel far below its terms) relative to the size of its terms, sum |dL/dx| (as tests/test_kernels_spiking.py).

Half the draws lie on a dyadic lattice, where the arithmetic is exact and v == v_th happens often, so
both spike conventions meet real ties.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kernel_checks import require_cuda_kernels

require_cuda_kernels()

from refssm import backend, surrogate                       # noqa: E402
from refssm.kernels.cuda import spiking as fast             # noqa: E402
from kernel_checks import LIF_BAD_INPUTS, close, close_threshold, param, signal            # noqa: E402

F32_TOL = 2e-5
SURROGATES = list(surrogate.SURROGATES)
GRADIENTS = ("output", "bptt", "bptt_detach_reset")
LIF, LIF_VJP = backend.oracle("lif")
REFRACTORY, REFRACTORY_VJP = backend.oracle("refractory")
seeds = st.integers(0, 2**31)
leads = st.sampled_from([(1,), (3,), (2, 3), (1, 5), (2, 1, 3), (5, 7)])      # (5, 7): 35 rows, two blocks
lengths = st.sampled_from([1, 2, 7, 24, 33, 40])                              # 33, 40: two tiles


def _check_lif(x, params, sg, gradient, reset, gs):
    """The CUDA pair against the oracle pair on one case: spikes equal, gradients to the dtype's tolerance."""
    args = (x, params["tau"], params["v_th"], sg, gradient, reset, params["v_reset"])
    s, ctx = fast.lif(*args)
    gx, gth = fast.lif_vjp(ctx, gs)
    s0, ctx0 = LIF(*args)
    gx0, gth0 = LIF_VJP(ctx0, gs)
    assert s.dtype == gx.dtype == gth.dtype == x.dtype and s.shape == x.shape
    assert gth.shape == np.shape(params["v_th"])
    np.testing.assert_array_equal(s, s0)                    # both dtypes: same arithmetic, ties included
    tol = 1e-10 if x.dtype == np.float64 else F32_TOL
    close(gx, gx0, tol)
    close_threshold(gth, gth0, gx0, tol)


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_lif_matches_oracle(data):
    rng = np.random.default_rng(data.draw(seeds))
    dtype = data.draw(st.sampled_from([np.float64, np.float32]))
    lead, L = data.draw(leads), data.draw(lengths)
    on_lattice, per_channel = data.draw(st.booleans()), data.draw(st.booleans())
    layout = data.draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    x = signal(rng, lead + (L,), on_lattice, layout).astype(dtype)
    params = {k: np.asarray(param(rng, lead, values, on_lattice, per_channel), dtype)
              for k, values in (("tau", [0.0, 0.25, 0.5, 0.875]), ("v_th", [0.5, 1.0]),
                                ("v_reset", [-0.5, 0.0, 0.25]))}
    sg = surrogate.get(data.draw(st.sampled_from(SURROGATES)), fire_at_equality=data.draw(st.booleans()))
    gradient = data.draw(st.sampled_from(GRADIENTS))
    reset = data.draw(st.sampled_from(["hard", "soft"]))
    _check_lif(x, params, sg, gradient, reset, rng.standard_normal(x.shape).astype(dtype))


# every surrogate x gradient x reset once; dtype and spike convention cycle so that each surrogate, each
# gradient and each reset meets both dtypes and both conventions
GRID = [(name, gradient, reset, dtype, equality)
        for (name, gradient, reset), (dtype, equality)
        in zip(itertools.product(SURROGATES, GRADIENTS, ("hard", "soft")),
               itertools.cycle([(np.float64, True), (np.float32, True), (np.float32, False),
                                (np.float64, False), (np.float32, True)]))]


@pytest.mark.parametrize("name, gradient, reset, dtype, equality", GRID)
def test_lif_every_surrogate_gradient_and_reset(name, gradient, reset, dtype, equality):
    rng = np.random.default_rng(len(name) + 7 * len(gradient))
    x = signal(rng, (2, 3, 12), on_lattice=True).astype(dtype)          # lattice: ties v == v_th
    params = dict(tau=np.asarray([0.5, 0.25, 0.875], dtype), v_th=np.asarray(1.0, dtype),
                  v_reset=np.asarray([0.0, -0.5, 0.25], dtype))
    sg = surrogate.get(name, fire_at_equality=equality)
    _check_lif(x, params, sg, gradient, reset, rng.standard_normal(x.shape).astype(dtype))


def test_lif_crosses_blocks_and_tiles():
    rng = np.random.default_rng(5)
    x = rng.normal(0.4, 1.0, (2, 20, 70))                                 # 40 rows: 2 blocks; 3 tiles
    params = dict(tau=rng.uniform(0, 0.9, 20), v_th=rng.uniform(0.5, 1.5, (2, 20)), v_reset=0.0)
    _check_lif(x, params, surrogate.get("atan"), "bptt", "hard", rng.standard_normal(x.shape))


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_refractory_matches_oracle(data):
    rng = np.random.default_rng(data.draw(seeds))
    dtype = data.draw(st.sampled_from([np.float64, np.float32]))
    B, H = data.draw(st.sampled_from([(1, 1), (1, 3), (2, 3), (3, 12)]))  # (3, 12): 36 rows, two blocks
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
    s0, ctx0 = REFRACTORY(y, ln_vth, log_theta, tau, beta, sg)
    assert s.dtype == s0.dtype == dtype
    np.testing.assert_array_equal(s, s0)
    tol = 1e-10 if dtype == np.float64 else F32_TOL
    for a, b in zip(fast.refractory_vjp(ctx, gs), REFRACTORY_VJP(ctx0, gs)):
        assert a.dtype == dtype and a.shape == b.shape
        close(a, b, tol)


def test_vjps_use_only_their_ctx():
    # the forward's inputs overwritten after the forward: the VJPs give the same gradients
    rng = np.random.default_rng(11)
    x, tau, v_th = rng.normal(0.4, 1.0, (2, 3, 9)), np.full(3, 0.5), np.full(3, 1.0)
    gs = rng.standard_normal(x.shape)
    sg = surrogate.get("sigmoid")
    for reset in ("hard", "soft"):
        _, ctx = fast.lif(x.copy(), tau.copy(), v_th.copy(), sg, "bptt", reset)
        expected = fast.lif_vjp(ctx, gs)
        inputs = [x.copy(), tau.copy(), v_th.copy()]
        _, ctx = fast.lif(*inputs, sg, "bptt", reset)
        for a in inputs:
            a[...] = np.nan
        for a, b in zip(fast.lif_vjp(ctx, gs), expected):
            np.testing.assert_array_equal(a, b)
    inputs = [x.copy(), np.zeros(3), np.full(3, -1.0), np.full(3, 0.5), np.full(3, 0.75)]
    _, ctx = fast.refractory(*[a.copy() for a in inputs], sg)
    expected = fast.refractory_vjp(ctx, gs)
    _, ctx = fast.refractory(*inputs, sg)
    for a in inputs:
        a[...] = np.nan
    for a, b in zip(fast.refractory_vjp(ctx, gs), expected):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("args, kwargs", LIF_BAD_INPUTS)
def test_bad_input_raises_the_oracles_error(args, kwargs):
    with pytest.raises(ValueError) as expected:
        LIF(*args, **kwargs)
    with pytest.raises(ValueError) as got:
        fast.lif(*args, **kwargs)
    assert str(got.value) == str(expected.value)


def test_vjps_reject_a_wrong_cotangent_shape():
    _, ctx = fast.lif(np.ones((2, 3, 5)), 0.5, 1.0, surrogate.get("atan"))
    with pytest.raises(ValueError, match="gs must have shape"):
        fast.lif_vjp(ctx, np.ones((2, 3, 4)))
    _, ctx = fast.refractory(np.ones((2, 3, 5)), np.zeros(3), np.zeros(3), 0.5, 0.5, surrogate.get("atan"))
    with pytest.raises(ValueError, match="gs must have shape"):
        fast.refractory_vjp(ctx, np.ones((2, 3, 4)))


def test_device_arrays_stay_on_the_device(request):
    # CuPy arrays in (the CuPy test double of tests/fake_cupy.py, which the simulator runs on): every output
    # is a device array, equal to the host run's; parameters may come from the host or the device
    pytest.importorskip("fake_cupy", reason="the CuPy test double tests/fake_cupy.py is not here")
    cp = request.getfixturevalue("fake_cupy")
    rng = np.random.default_rng(2)
    x, gs = rng.normal(0.4, 1.0, (2, 3, 9)), rng.standard_normal((2, 3, 9))
    tau, v_th = np.array([0.5, 0.25, 0.75]), np.array([1.0, 0.5, 1.0])
    sg = surrogate.get("triangle")
    host = fast.lif(x, tau, v_th, sg, "bptt", "soft")
    device = fast.lif(cp.asarray(x), cp.asarray(tau), v_th, sg, "bptt", "soft")
    outputs = [(host[0], device[0]), *zip(fast.lif_vjp(host[1], gs), fast.lif_vjp(device[1], cp.asarray(gs)))]
    ln = np.array([0.0, -0.5, 0.2])
    host = fast.refractory(x, ln, ln, 0.5, 0.75, sg)
    device = fast.refractory(cp.asarray(x), cp.asarray(ln), ln, 0.5, 0.75, sg)
    outputs += [(host[0], device[0]),
                *zip(fast.refractory_vjp(host[1], gs), fast.refractory_vjp(device[1], cp.asarray(gs)))]
    for h, d in outputs:
        assert type(d) is cp.ndarray
        np.testing.assert_array_equal(d.get(), h)
