"""refssm.fixtures: golden cases, the HDF5 file, `refssm fixtures export/check/list`, assert_matches."""

import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from refssm import conventions, fixtures, fractional, models, neurons, ssm, surrogate


@pytest.fixture(scope="module")
def cases():
    return fixtures.build_cases()


@pytest.fixture(scope="module")
def ref(tmp_path_factory, cases):
    path = tmp_path_factory.mktemp("fx") / "ref.h5"
    fixtures.export(path, cases)
    return path


def cli(*args):
    return subprocess.run([sys.executable, "-m", "refssm.cli", "fixtures", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def perturb(path, dataset, index, delta):
    with h5py.File(path, "r+") as f:
        d = f[dataset]
        a = d[()]
        a[index] += delta
        d[...] = a


# ---- coverage: the cases the issue names exist

def test_every_oracle_and_model_has_a_case(cases):
    names = {c.name for c in cases}
    for m in ssm.METHODS:
        assert f"ssm/discretize/{m}" in names and f"ssm/kernel/{m}" in names
    assert {"ssm/causal_conv", "ssm/bidirectional_conv", "ssm/scan"} <= names
    assert {f"neurons/lif/{r}_{e}" for r in ("hard", "soft") for e in ("geq", "gt")} <= names
    assert {"neurons/refractory", "neurons/pmbc", "neurons/stochastic"} <= names
    assert {f"surrogate/{n}" for n in surrogate.SURROGATES} <= names
    assert {"fractional/gl_weights", "fractional/gl_derivative", "fractional/caputo_l1"} <= names
    assert any(n.startswith("fractional/mittag_leffler") for n in names)
    assert {f"fractional/fssm_kernel/{m}" for m in fractional.FSSM_METHODS} <= names
    assert {n.split("/")[1] for n in names if n.startswith("conventions/")} == set(conventions.LIBRARIES)
    assert {f"models/{m}" for m in models.MODELS} <= names
    for c in cases:
        assert c.equation and c.outputs and all(np.all(np.isfinite(v)) for v in c.outputs.values()), c.name


def test_lif_cases_contain_exact_ties_that_split_the_conventions(cases):
    by = {c.name: c for c in cases}
    for reset in ("hard", "soft"):
        geq, gt = by[f"neurons/lif/{reset}_geq"], by[f"neurons/lif/{reset}_gt"]
        th = geq.inputs["v_th"][:, None]
        assert np.sum(geq.outputs["v"] == th) > 0                               # exact ties
        assert not np.array_equal(geq.outputs["s"], gt.outputs["s"])            # which fire under >= only


# ---- the stored gradients are right: directional finite differences through the stored forward

def _pairing(c, y):
    return float(sum(np.sum((np.conj(c[k]) * y[k]).real) for k in c))


def _as_dict(case, res):
    res = res if isinstance(res, tuple) else (res,)
    return dict(zip(case.outputs, res))


@pytest.mark.parametrize("name", [c.name for c in fixtures.build_cases() if c.gradient == "exact"])
def test_stored_gradients_match_finite_differences(cases, name):
    c = next(c for c in cases if c.name == name)
    rng = np.random.default_rng(0)

    def F(inputs):
        return _pairing(c.cotangents, _as_dict(c, c.forward(**inputs, **c.params)))

    for k, g in c.grads.items():
        x = c.inputs[k]
        d = rng.standard_normal(x.shape) + (1j * rng.standard_normal(x.shape) if np.iscomplexobj(x) else 0)
        if name.startswith("surrogate/"):        # not across the kinks of sigma' (0, +-w/2, +-w, 1)
            d = np.where(np.isin(np.abs(x), [0.0, 0.25, 0.375, 0.75, 1.0]), 0.0, d)
        eps = 1e-6 * max(1.0, np.abs(x).max()) if k != "dt" else 1e-7
        plus, minus = dict(c.inputs), dict(c.inputs)
        plus[k], minus[k] = x + eps * d, x - eps * d
        fd = (F(plus) - F(minus)) / (2 * eps)
        an = float(np.sum((np.conj(g) * d).real))
        assert abs(fd - an) <= 1e-6 * max(1.0, abs(an)), (name, k, fd, an)


def test_model_cases_reproduce_their_logits_and_gradients(cases):
    for c in (c for c in cases if c.name.startswith("models/")):
        logits = c.forward(**c.inputs, **c.params)
        np.testing.assert_allclose(logits, c.outputs["logits"], rtol=1e-12, atol=1e-14, err_msg=c.name)
        assert set(c.grads) == set(c.inputs), c.name                  # every parameter and the input
        assert np.abs(c.grads["x"]).max() > 0, c.name


# ---- export / check through the command line

def test_check_against_itself_passes_with_a_readable_table(ref, cases):
    r = cli("check", ref, ref)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["case", "max"]
    for c in cases:
        assert any(line.startswith(c.name + " ") and line.endswith("pass") for line in lines), c.name
    assert f"{len(cases)}/{len(cases)} cases pass" in r.stdout


def test_cli_export_writes_the_same_file_contents(tmp_path, ref):
    out = tmp_path / "again.h5"
    r = cli("export", out, "--only", "ssm/*")
    assert r.returncode == 0 and "cases" in r.stdout, r.stderr
    assert all(n.startswith("ssm/") for n in fixtures.case_names(out))
    r = cli("check", ref, out, "--only", "ssm/*")
    assert r.returncode == 0, r.stdout


def test_a_perturbed_copy_fails_naming_the_case(tmp_path, ref):
    bad = tmp_path / "bad.h5"
    shutil.copy(ref, bad)
    perturb(bad, "cases/ssm/kernel/zoh/outputs/K", (1, 3), 1e-8)
    perturb(bad, "cases/neurons/lif/soft_gt/grads/x", (0, 0, 0), 1e-7)
    r = cli("check", ref, bad)
    assert r.returncode == 1
    failed = [line for line in r.stdout.splitlines() if "  FAIL: " in line]
    assert [line.split()[0] for line in failed] == ["neurons/lif/soft_gt", "ssm/kernel/zoh"]
    assert "outputs/K[1, 3]" in r.stdout and "grads/x[0, 0, 0]" in r.stdout
    assert "FAILED: neurons/lif/soft_gt, ssm/kernel/zoh" in r.stdout
    assert cli("check", ref, bad, "--only", "ssm/kernel/zoh").returncode == 1
    assert cli("check", ref, bad, "--only", "surrogate/*").returncode == 0
    assert cli("check", ref, bad, "--only", "neurons/lif/soft_gt", "--outputs-only").returncode == 0


def test_any_stored_value_moved_beyond_its_tolerance_is_caught(ref):
    """Every compared dataset of every case: move its largest entry by twice its tolerance (spikes: flip)."""
    with h5py.File(ref, "r") as f:
        for name, g in fixtures._case_groups(f).items():
            for section in fixtures.COMPARED:
                for key, ds in g.get(section, {}).items():
                    a = np.atleast_1d(ds[()])
                    rtol, atol = fixtures._tolerances(g, ds)
                    i = np.unravel_index(np.argmax(np.abs(a)), a.shape)
                    b = a.copy()
                    b[i] = 1 - b[i] if rtol == atol == 0 else b[i] + 2 * (atol + rtol * abs(a[i])) + 1e-300
                    assert fixtures.compare(a, b, rtol, atol)[2] is not None, (name, section, key)
                    assert fixtures.compare(a, a.copy(), rtol, atol)[2] is None


def test_missing_and_extra_cases_are_named(tmp_path, ref):
    other = tmp_path / "other.h5"
    shutil.copy(ref, other)
    with h5py.File(other, "r+") as f:
        del f["cases/surrogate/atan"]
        del f["cases/models/pspikessm/grads/x"]
        f.create_dataset("cases/mine/extra/outputs/y", data=np.ones(3))
    r = cli("check", ref, other)
    assert r.returncode == 1
    assert "only in" in r.stdout and "surrogate/atan" in r.stdout and "mine/extra" in r.stdout
    assert "grads/x missing" in r.stdout


def test_minimal_foreign_writer_file_is_accepted(tmp_path, ref):
    """What validation/README.md shows another implementation writing: `format` and outputs/grads only."""
    c = fixtures.load_case(ref, "ssm/causal_conv")
    theirs = tmp_path / "theirs.h5"
    with h5py.File(theirs, "w") as f:
        f.attrs["format"] = "refssm-fixtures"
        f["cases/ssm/causal_conv/outputs/y"] = ssm.causal_conv(c.inputs["u"], c.inputs["K"])
        f["cases/ssm/causal_conv/grads/u"] = c.grads["u"] * (1 + 1e-13)
        f["cases/ssm/causal_conv/grads/K"] = c.grads["K"]
    r = cli("check", ref, theirs, "--only", "ssm/causal_conv")
    assert r.returncode == 0, r.stdout
    assert cli("check", ref, theirs).returncode == 1                            # the others are missing


@pytest.mark.parametrize("make,msg", [
    (lambda p, ref: p.write_bytes(ref.read_bytes()[:5000]), "truncated"),
    (lambda p, ref: p.write_text("not hdf5"), "not a readable HDF5 file"),
    (lambda p, ref: h5py.File(p, "w").close(), "not a refssm fixtures file"),
    (lambda p, ref: None, "no such file"),
])
def test_bad_files_give_one_clear_line(tmp_path, ref, make, msg):
    bad = tmp_path / "bad.h5"
    make(bad, ref)
    r = cli("check", ref, bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for call in (lambda: fixtures.check(bad, ref), lambda: fixtures.case_names(bad)):
        with pytest.raises(fixtures.FixtureError, match=msg):
            call()


def test_a_corrupted_reference_fails_its_checksum(tmp_path, ref):
    bad = tmp_path / "ref_bad.h5"
    shutil.copy(ref, bad)
    perturb(bad, "cases/ssm/scan/outputs/y", (0, 0, 0), 1.0)
    r = cli("check", bad, ref)
    assert r.returncode == 2 and "checksum mismatch" in r.stderr
    with h5py.File(bad, "r+") as f:                              # an attribute (a tolerance) counts too
        f["cases/ssm/scan"].attrs["rtol"] = 1.0
    with pytest.raises(fixtures.FixtureError, match="checksum"):
        fixtures.load(bad)


def test_export_is_atomic_and_reports_bad_paths(tmp_path, ref):
    r = cli("export", tmp_path / "no" / "such" / "dir" / "f.h5")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("export", tmp_path / "x.h5", "--only", "nothing/*")
    assert r.returncode == 2 and "no case matches" in r.stderr
    assert not list(tmp_path.glob("*.tmp-*"))


def test_list_prints_every_case(ref, cases):
    r = cli("list", ref)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == len(cases)


# ---- assert_matches inside someone else's pytest

def test_assert_matches_accepts_refssm_itself(ref):
    fixtures.assert_matches(ref, "ssm/kernel/zoh", ssm.kernel,
                            vjp=lambda c, **kw: dict(zip("A B C dt".split(),
                                                         ssm.kernel_vjp(ssm.kernel_fwd(**kw)[1], c["K"]))))
    fixtures.assert_matches(ref, "neurons/lif/hard_gt", neurons.lif)
    fixtures.assert_matches(ref, "fractional/gl_derivative", fractional.gl_derivative)
    def model(x, config, seed, train, **p):       # train mode: batch statistics; the running ones only updated
        state = models.init_params(config, np.random.default_rng(0))[1]
        return models.forward(p, state, config, x, None, np.random.default_rng(seed), train)[0]

    fixtures.assert_matches(ref, "models/spike_ssm", model)
    fixtures.assert_matches(ref, "conventions/snntorch_leaky/default",
                            lambda x, **p: conventions.snntorch_leaky(x, **p)[:2],
                            vjp=lambda c, x, **p: dict(x=conventions.snntorch_leaky(x, **p)[2](c["spikes"])))


def test_assert_matches_reports_a_wrong_implementation(ref):
    with pytest.raises(AssertionError, match=r"neurons/lif/hard_geq.*outputs/s"):
        fixtures.assert_matches(ref, "neurons/lif/hard_geq",                # fires at > instead of >=
                                lambda x, tau, v_th, reset, v_reset, fire_at_equality:
                                neurons.lif(x, tau, v_th, reset, v_reset, not fire_at_equality))
    with pytest.raises(AssertionError, match="grads/u"):
        fixtures.assert_matches(ref, "ssm/causal_conv", ssm.causal_conv,
                                vjp=lambda c, u, K: dict(u=ssm.causal_conv(c["y"], K)))   # not the adjoint
    with pytest.raises(AssertionError, match="returned 1 outputs"):
        fixtures.assert_matches(ref, "neurons/lif/soft_geq", lambda **kw: (np.zeros(1),))
    with pytest.raises(KeyError, match="no case"):
        fixtures.assert_matches(ref, "ssm/nothing", ssm.causal_conv)
