"""Parity of refssm.conventions with the real libraries (SpikingJelly, snnTorch, Norse).

Runs only where PyTorch and the library import (pip install 'refssm[parity]'); skips with the reason
otherwise (CI has no torch). Inputs: random currents plus a dyadic channel whose potentials hit the
threshold exactly, so the spike test (>= or >) is exercised. The upstream gradients g are multiples of
1/8: snnTorch makes spikes in float32, so the gradient reaching its surrogate is float32, and its sigmoid
surrogate multiplies it by the slope in float32; with few-bit g these steps are exact.

float64 runs: spikes equal, membranes to 1e-12, gradients to 1e-10 relative (to max |g_x|).
float32 runs (the libraries' defaults): spikes equal (no near-ties in these inputs), membranes and
gradients to float32 precision (2e-5 of their scale).
"""

import importlib.util

import numpy as np
import pytest

from refssm import conventions as cv

torch = pytest.importorskip("torch", reason="parity tests need PyTorch and the libraries: "
                                            "pip install 'refssm[parity]'")

MODULE = {"spikingjelly_lif": "spikingjelly", "spikingjelly_if": "spikingjelly", "snntorch_leaky": "snntorch",
          "norse_lif": "norse"}

# (preset, params, threshold in the membrane's coordinates, tie-exact (dyadic) parameters)
CASES = [
    ("spikingjelly_lif", {}, 1.0, True),
    ("spikingjelly_lif", dict(tau=4.0, decay_input=False, v_reset=-0.5, detach_reset=True, surrogate="sigmoid",
                              alpha=4.0), 1.0, True),
    ("spikingjelly_lif", dict(v_reset=None, surrogate="piecewise_quadratic", alpha=1.0), 1.0, False),
    ("spikingjelly_lif", dict(tau=3.0, v_threshold=0.8), 0.8, False),
    ("spikingjelly_if", {}, 1.0, True),
    ("spikingjelly_if", dict(v_reset=None, detach_reset=True), 1.0, True),
    ("spikingjelly_if", dict(v_reset=-0.5, surrogate="sigmoid", alpha=4.0), 1.0, True),
    ("snntorch_leaky", dict(beta=0.5), 1.0, True),
    ("snntorch_leaky", dict(beta=0.75, reset_mechanism="zero", surrogate="fast_sigmoid", slope=25.0), 1.0, True),
    ("snntorch_leaky", dict(beta=0.875, reset_mechanism="none", surrogate="sigmoid", slope=5.0), 1.0, True),
    ("snntorch_leaky", dict(beta=0.9, threshold=0.75, alpha=3.0), 0.75, False),
    ("norse_lif", dict(dt=2.0 ** -10, tau_mem_inv=512.0, tau_syn_inv=1024.0), 1.0, True),
    ("norse_lif", {}, 1.0, False),
    ("norse_lif", dict(v_leak=0.1, v_reset=-0.2, tau_syn_inv=150.0), 1.0, False),
]
IDS = [f"{name}-{i}" for i, (name, *_) in enumerate(CASES)]


def need(name):
    module = MODULE[name]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install 'refssm[parity]')")


def parity_inputs(seed, B=3, T=48):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0.6, 1.0, (B, 3, T)), rng.integers(-1, 5, (B, 2, T)) / 2.0], axis=1)
    g = rng.integers(-16, 17, x.shape) / 8.0
    return x, g


@pytest.mark.parametrize("name,params,thr,dyadic", CASES, ids=IDS)
def test_float64_parity(name, params, thr, dyadic):
    need(name)
    x, g = parity_inputs(len(IDS[0]) + len(params))
    s, m, vjp = cv.preset(name)(x, **params)
    gx = vjp(g)
    lib = cv.run_library(name, x, g, "float64", **params)
    np.testing.assert_array_equal(s, lib["spikes"])
    np.testing.assert_allclose(m, lib["membrane"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(gx, lib["g_x"], rtol=0, atol=1e-10 * np.abs(gx).max())
    if dyadic:                                           # exact ties were exercised
        assert np.sum(m == thr) > 0


@pytest.mark.parametrize("name,params,thr,dyadic", CASES, ids=IDS)
def test_float32_parity(name, params, thr, dyadic):
    need(name)
    x, g = parity_inputs(7)
    s, m, vjp = cv.preset(name)(x, **params)
    gx = vjp(g)
    lib = cv.run_library(name, x, g, "float32", **params)
    # float32 rounding could flip a spike only at a near-tie; these fixed inputs have none (the dyadic
    # channel's ties are exact in float32 too), so the spikes agree everywhere
    np.testing.assert_array_equal(s, lib["spikes"])
    np.testing.assert_allclose(m, lib["membrane"], rtol=0, atol=2e-5 * max(1.0, np.abs(m).max()))
    np.testing.assert_allclose(gx, lib["g_x"], rtol=0, atol=2e-5 * np.abs(gx).max())


def test_snntorch_rounds_the_reset_term_to_float32():
    """snnTorch computes reset * threshold with the float32 spike, so even in a float64 run the subtracted
    threshold is float32(threshold): a threshold like 0.7 drifts the membrane by |0.7 - float32(0.7)|
    (1.2e-8) per reset. The preset keeps the float64 threshold (the library's equation); the difference
    is bounded by that drift."""
    need("snntorch_leaky")
    x, g = parity_inputs(3)
    s, m, _ = cv.snntorch_leaky(x, beta=0.9, threshold=0.7)
    lib = cv.run_library("snntorch_leaky", x, g, "float64", beta=0.9, threshold=0.7)
    drift = abs(0.7 - float(np.float32(0.7)))
    resets = np.cumsum(np.concatenate([np.zeros_like(s[..., :1]), s[..., :-1]], axis=-1), axis=-1)
    d = np.abs(m - lib["membrane"])
    assert d.max() > 0                                         # the library does round
    assert np.all(d <= resets * drift / (1 - 0.9) + 1e-12)    # by the float32 drift of the resets only
    np.testing.assert_array_equal(s, lib["spikes"])


def test_library_versions_are_reported():
    for name in MODULE:
        v = cv.library_version(name)
        assert v is None or isinstance(v, str)


def test_the_pytorch_fixture_writer_in_the_validation_readme_passes_the_check(tmp_path):
    """The twenty-line PyTorch example of validation/README.md (run_all.FIXTURES_DOC) writes a file that
    `refssm fixtures check` accepts, gradients included."""
    import re
    import sys
    from pathlib import Path

    from refssm import fixtures

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "validation"))
    import run_all

    code = re.search(r"```python\n(.*?)```", run_all.FIXTURES_DOC, re.S).group(1)
    assert len(code.strip().splitlines()) <= 20
    ref, theirs = tmp_path / "refssm_fixtures.h5", tmp_path / "theirs.h5"
    fixtures.export(ref, fixtures.build_cases(["ssm/kernel/zoh"]))
    exec(code.replace('"refssm_fixtures.h5"', repr(str(ref))).replace('"theirs.h5"', repr(str(theirs))), {})
    results, only_ref, _ = fixtures.check(ref, theirs)
    assert [r.case for r in results if r.ok] == ["ssm/kernel/zoh"] and not only_ref
