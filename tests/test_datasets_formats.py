"""Real-format loaders read small files written here in the real formats, and reject malformed ones."""

import gzip
import struct

import numpy as np
import pytest
from scipy.io import wavfile

import refssm.datasets as D
from refssm.datasets import images, listops, speech, text


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)


def write_idx(path, array, code, compress=False):
    """The IDX format by hand: 0, 0, type code, ndim, big-endian uint32 sizes, big-endian data."""
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    data = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += np.asarray(array, dtype=dtype).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def write_mnist_dir(directory, n_train=40, n_test=7, compress=False, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        pictures = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        names = images.IDX_FILES[split]
        write_idx(directory / (names[0] + (".gz" if compress else "")), pictures, 0x08, compress)
        write_idx(directory / (names[1] + (".gz" if compress else "")), labels, 0x08, compress)
        written[split] = (pictures, labels)
    return written


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("array, code", [(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08),
                                         (np.array([[-300, 7], [12, 32000]]), 0x0B),
                                         (np.array([1.5, -2.25, 1e-3]), 0x0D)])
def test_read_idx_gives_back_what_was_written(tmp_path, array, code, compress):
    write_idx(tmp_path / "f", array, code, compress)
    got = images.read_idx(tmp_path / "f")
    assert got.shape == array.shape and got.dtype.isnative
    dtype = {0x08: np.uint8, 0x0B: np.int16, 0x0D: np.float32}[code]
    np.testing.assert_array_equal(got, np.asarray(array, dtype=dtype))


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_loader_reads_idx_files(tmp_path, compress):
    written = write_mnist_dir(tmp_path / "mnist", compress=compress)
    ds = D.load("mnist", data_dir=tmp_path / "mnist", val_fraction=0.25)
    pictures, labels = written["test"]
    np.testing.assert_array_equal(ds.test.x[:, :, 0], pictures.reshape(7, 784) / 255.0)
    np.testing.assert_array_equal(ds.test.y, labels)
    assert (len(ds.train), len(ds.val)) == (30, 10) and ds.train.x.shape[1:] == (784, 1)
    pictures, labels = written["train"]
    rows = {(int(y), x.tobytes()) for x, y in zip(pictures.reshape(40, 784).astype(np.float64) / 255, labels)}
    mine = {(int(y), x[:, 0].tobytes()) for split in (ds.train, ds.val) for x, y in zip(split.x, split.y)}
    assert mine == rows


def test_fashion_reads_its_default_or_given_directory(tmp_path):
    write_mnist_dir(tmp_path / "fashion", n_train=20, n_test=5, compress=True)
    ds = D.load("fashion", data_dir=tmp_path / "fashion")
    assert (len(ds.train) + len(ds.val), len(ds.test)) == (20, 5)
    if not images.DEBIAN_FASHION_MNIST.is_dir():
        with pytest.raises(FileNotFoundError, match="fashion-mnist: expected train-images-idx3-ubyte"):
            D.load("fashion")


def test_malformed_idx_files_are_named_in_the_error(tmp_path):
    write_mnist_dir(tmp_path / "m")
    bad = tmp_path / "m" / "t10k-images-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 7, 28, 28) + b"\x00" * 100)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte: IDX header gives shape"):
        D.load("mnist", data_dir=tmp_path / "m")
    bad.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte: not an IDX file"):
        D.load("mnist", data_dir=tmp_path / "m")
    bad.unlink()
    with pytest.raises(FileNotFoundError, match="expected t10k-images-idx3-ubyte or .*ubyte.gz"):
        D.load("mnist", data_dir=tmp_path / "m")


def test_idx_labels_must_match_the_images(tmp_path):
    write_mnist_dir(tmp_path / "m")
    write_idx(tmp_path / "m" / "t10k-labels-idx1-ubyte", np.zeros(6, dtype=np.uint8), 0x08)
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte: expected 7 labels"):
        D.load("mnist", data_dir=tmp_path / "m")
    write_idx(tmp_path / "m" / "t10k-labels-idx1-ubyte", np.full(7, 12, dtype=np.uint8), 0x08)
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        D.load("mnist", data_dir=tmp_path / "m")


# ---------------------------------------------------------------- CIFAR-10 binary batches


def write_cifar(directory, records_per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in images.CIFAR_TRAIN + (images.CIFAR_TEST,):
        labels = rng.integers(0, 10, size=records_per_batch, dtype=np.uint8)
        rgb = rng.integers(0, 256, size=(records_per_batch, 3, 32, 32), dtype=np.uint8)
        rgb[0] = 0
        rgb[0, :, 0, :4] = [[255, 255, 0, 0], [255, 0, 255, 0], [255, 0, 0, 255]]  # white, red, green, blue
        records = np.concatenate([labels[:, None], rgb.reshape(records_per_batch, -1)], axis=1)
        (directory / name).write_bytes(records.tobytes())
        written[name] = (rgb, labels)
    return written


def test_cifar10_reads_binary_batches_as_lra_grey(tmp_path):
    written = write_cifar(tmp_path / "c")
    ds = D.load("cifar10", data_dir=tmp_path / "c")
    rgb, labels = written[images.CIFAR_TEST]
    np.testing.assert_array_equal(ds.test.y, labels)
    # hand-checked grey levels, floor(255.5 * w . rgb / 255): white 255, red 76, green 149, blue 29
    np.testing.assert_array_equal(ds.test.x[0, :4, 0] * 255, [255, 76, 149, 29])
    w = np.array([0.2989, 0.5870, 0.1140])
    expected = np.floor(255.5 * np.einsum("c,nchw->nhw", w, rgb / 255.0)).reshape(4, 1024) / 255
    np.testing.assert_allclose(ds.test.x[:, :, 0], expected, rtol=0, atol=1e-12)
    train_labels = np.concatenate([written[name][1] for name in images.CIFAR_TRAIN])
    np.testing.assert_array_equal(np.concatenate([ds.train.y, ds.val.y]), train_labels)
    assert (len(ds.train), len(ds.val)) == (18, 2) and ds.train.x.shape[1:] == (1024, 1)


def test_malformed_cifar_batches_are_named(tmp_path):
    write_cifar(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3.bin").write_bytes(b"\x01" * 3000)
    with pytest.raises(ValueError, match="data_batch_3.bin: a CIFAR-10 binary batch holds records of 3073"):
        D.load("cifar10", data_dir=tmp_path / "c")
    (tmp_path / "c" / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3.bin: no such file"):
        D.load("cifar10", data_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="data_dir is required for task 'cifar10'"):
        D.load("cifar10")


# ---------------------------------------------------------------- LRA ListOps TSV


def write_listops_tsv(directory, rows_by_split):
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in rows_by_split.items():
        lines = ["Source\tTarget"] + [f"{source}\t{target}" for source, target in rows]
        (directory / f"basic_{split}.tsv").write_text("\n".join(lines) + "\n")


def test_listops_reads_lra_tsv(tmp_path):
    rows = {"train": [("( ( ( [MAX 2 ) 9 ) ] )", 9), ("( ( ( ( [SM 9 ) 8 ) 7 ) ] )", 4)],
            "val": [("( ( ( [MED 3 ) 4 ) ] )", 3)], "test": [("7", 7)]}
    write_listops_tsv(tmp_path / "lo", rows)
    ds = D.load("listops", data_dir=tmp_path / "lo", max_length=6)
    # ids: '0'..'9' -> 1..10, MIN 11, MAX 12, MED 13, SM 14, X 15; 0 pads
    np.testing.assert_array_equal(ds.train.x, [[12, 3, 10, 15, 0, 0], [14, 10, 9, 8, 15, 0]])
    np.testing.assert_array_equal(ds.train.lengths, [4, 5])
    np.testing.assert_array_equal(ds.train.y, [9, 4])
    np.testing.assert_array_equal(ds.val.x, [[13, 4, 5, 15, 0, 0]])
    np.testing.assert_array_equal(ds.test.x, [[8, 0, 0, 0, 0, 0]])
    assert ds.vocab_size == 16 and ds.n_classes == 10


def test_listops_tsv_truncates_to_max_length(tmp_path):
    write_listops_tsv(tmp_path / "lo", {"train": [("( ( ( ( [SM 9 ) 8 ) 7 ) ] )", 4)], "val": [], "test": []})
    ds = D.load("listops", data_dir=tmp_path / "lo", max_length=3)
    np.testing.assert_array_equal(ds.train.x, [[14, 10, 9]])
    np.testing.assert_array_equal(ds.train.lengths, [3])


@pytest.mark.parametrize("content, match", [
    ("Src\tTgt\n7\t7\n", "line 1 must be the header"),
    ("Source\tTarget\n7\tseven\n", "line 2: expected"),
    ("Source\tTarget\n7\t7\n( ( ( [MAX 2 ) 9 ) ] )\t12\n", "line 3: expected"),
    ("Source\tTarget\n( ( ( [MOD 2 ) 9 ) ] )\t1\n", r"line 2: ListOps source has the unknown token '\[MOD'"),
    # unbalanced brackets: each would otherwise be a silently trained (wrong) example
    ("Source\tTarget\n7\t7\n( ( ( [MAX 2 ) 9 ) )\t9\n", "line 3: .*exactly 2 items, this one holds 1"),
    ("Source\tTarget\n( ( ( [MAX 2 ) 9 ) ] ] )\t9\n", "line 2: .*exactly 2 items, this one holds 3"),
    ("Source\tTarget\n( ( ( [MAX 2 ) 9 ) ]\t9\n", r"line 2: .*1 '\(' never closed"),
    ("Source\tTarget\n( ( ( [MAX 2 ) 9 ) ] ) )\t9\n", r"line 2: .*'\)' closes nothing at token 11 of 11"),
    ("Source\tTarget\n( ( [MAX ] )\t9\n", r"line 2: .*never closed"),
    ("Source\tTarget\n( ( [MAX ] ) )\t9\n", r"line 2: .*exactly 2 items"),
    ("Source\tTarget\n( ( ( [MAX 2 ) 9 ) ] ) 7\t9\n", "line 2: .*extra tokens after the tree"),
    ("Source\tTarget\n[MAX 2 9 ]\t9\n", "line 2: .*must start with '\\('"),
])
def test_malformed_listops_tsv(tmp_path, content, match):
    write_listops_tsv(tmp_path / "lo", {"val": [], "test": []})
    (tmp_path / "lo" / "basic_train.tsv").write_text(content)
    with pytest.raises(ValueError, match=match) as error:
        D.load("listops", data_dir=tmp_path / "lo")
    assert "basic_train.tsv" in str(error.value)  # the file, then the line
    with pytest.raises(ValueError, match=match):
        listops.read_tsv(tmp_path / "lo" / "basic_train.tsv")  # the reader on its own refuses it too


def test_listops_tokens_are_uint8_and_models_take_them(tmp_path):
    from refssm import models
    rows = {"train": [("( ( ( [MAX 2 ) 9 ) ] )", 9), ("( ( ( ( [SM 9 ) 8 ) 7 ) ] )", 4)],
            "val": [("7", 7)], "test": [("( ( ( [MED 3 ) 4 ) ] )", 3)]}
    write_listops_tsv(tmp_path / "lo", rows)
    ds = D.load("listops", data_dir=tmp_path / "lo", max_length=8)
    assert all(s.x.dtype == np.uint8 for s in ds.splits.values())
    (x, y, mask), = D.batches(ds.train, 2, shuffle=False)
    cfg = models.make_config("spikingssm", vocab_size=ds.vocab_size, n_classes=10, H=4, N=4, n_layers=1,
                             backend="numpy")
    params, state = models.init_params(cfg, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    narrow = models.forward(params, state, cfg, x, mask, rng, train=False)[0]
    wide = models.forward(params, state, cfg, x.astype(np.int64), mask, np.random.default_rng(1), train=False)[0]
    np.testing.assert_array_equal(narrow, wide)  # uint8 tokens give the int64 result bit for bit


def test_missing_listops_tsv_is_named(tmp_path):
    write_listops_tsv(tmp_path / "lo", {"train": [], "val": []})
    with pytest.raises(FileNotFoundError, match="basic_test.tsv: no such file"):
        D.load("listops", data_dir=tmp_path / "lo")


# ---------------------------------------------------------------- IMDb and AAN (bytes)


def write_imdb(directory, reviews):
    for (split, polarity), texts in reviews.items():
        folder = directory / split / polarity
        folder.mkdir(parents=True, exist_ok=True)
        for i, t in enumerate(texts):
            (folder / f"{i}_7.txt").write_bytes(t.encode("utf-8"))


def test_imdb_reads_bytes_from_an_aclimdb_tree(tmp_path):
    reviews = {("train", "neg"): ["bad", "awful film", "no", "meh"],
               ("train", "pos"): ["good", "great", "yes!", "fine"],
               ("test", "neg"): ["dull"], ("test", "pos"): ["café"]}
    write_imdb(tmp_path / "aclImdb", reviews)
    ds = D.load("imdb", data_dir=tmp_path / "aclImdb", max_length=5, val_fraction=0.25)
    np.testing.assert_array_equal(ds.test.y, [0, 1])
    # bytes + 1: d=100 u=117 l=108; "café" is c a f 0xC3 0xA9 in UTF-8
    np.testing.assert_array_equal(ds.test.x, [[101, 118, 109, 109, 0], [100, 98, 103, 196, 170]])
    np.testing.assert_array_equal(ds.test.lengths, [4, 5])
    assert (len(ds.train), len(ds.val), ds.vocab_size) == (6, 2, 257)
    texts = sorted(bytes((row[:n] - 1).tolist())
                   for s in (ds.train, ds.val) for row, n in zip(s.x, s.lengths))
    written = [t.encode()[:5] for (split, _), ts in reviews.items() if split == "train" for t in ts]
    assert texts == sorted(written)


def test_imdb_missing_folder_is_named(tmp_path):
    write_imdb(tmp_path / "aclImdb", {("train", "neg"): ["x"], ("train", "pos"): ["y"],
                                      ("test", "neg"): ["z"]})
    with pytest.raises(FileNotFoundError, match="test/pos: expected .txt reviews"):
        D.load("imdb", data_dir=tmp_path / "aclImdb")


def write_aan(directory, lines_by_split):
    directory.mkdir(parents=True, exist_ok=True)
    for split, lines in lines_by_split.items():
        (directory / text.AAN_FILES[split]).write_text("".join(line + "\n" for line in lines))


def test_aan_reads_pairs_as_two_documents(tmp_path):
    write_aan(tmp_path / "aan", {"train": ["1.0\tp1\tp2\tab\tcde", "0\tp3\tp4\tz\t"],
                                 "val": ["0.0\tp5\tp6\tq\tr"], "test": ["1\tp7\tp8\thi\tthere"]})
    ds = D.load("aan", data_dir=tmp_path / "aan", max_length=3)
    assert ds.train.x.shape == (2, 2, 3) and ds.train.lengths.shape == (2, 2)
    np.testing.assert_array_equal(ds.train.x, [[[98, 99, 0], [100, 101, 102]], [[123, 0, 0], [0, 0, 0]]])
    np.testing.assert_array_equal(ds.train.lengths, [[2, 3], [1, 0]])
    np.testing.assert_array_equal(ds.train.y, [1, 0])
    np.testing.assert_array_equal(ds.test.x[0, 1], [117, 105, 102])  # "the", truncated
    (x, y, mask), = D.batches(ds.train, 2, shuffle=False)
    np.testing.assert_array_equal(mask, [[[1, 1, 0], [1, 1, 1]], [[1, 0, 0], [0, 0, 0]]])


def test_malformed_aan_line_is_named(tmp_path):
    write_aan(tmp_path / "aan", {"train": ["1\tp1\tp2\tab\tcd", "2\tp1\tp2\tab\tcd"], "val": [], "test": []})
    with pytest.raises(ValueError, match="new_aan_pairs.train.tsv, line 2: expected 5 tab-separated fields"):
        D.load("aan", data_dir=tmp_path / "aan")
    write_aan(tmp_path / "aan", {"train": ["1\tp1\tp2\tab"]})
    with pytest.raises(ValueError, match="line 1: expected 5 tab-separated fields"):
        D.load("aan", data_dir=tmp_path / "aan")


# ---------------------------------------------------------------- Speech Commands


def write_speech(directory, clips, val=(), test=(), rate=16000):
    """clips: {"word/name.wav": int16 samples}; val and test: names listed in the official lists."""
    for name, samples in clips.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        wavfile.write(directory / name, rate, np.asarray(samples, dtype=np.int16))
    (directory / "validation_list.txt").write_text("".join(f"{n}\n" for n in val))
    (directory / "testing_list.txt").write_text("".join(f"{n}\n" for n in test))


def test_speechcommands_reads_wavs_and_the_official_lists(tmp_path):
    rng = np.random.default_rng(0)
    clips = {"yes/a_nohash_0.wav": rng.integers(-32768, 32768, 16000), "yes/b_nohash_0.wav": [1, -2, 3],
             "bed/c_nohash_0.wav": rng.integers(-100, 100, 8000), "go/d_nohash_0.wav": [32767, -32768],
             "_background_noise_/noise.wav": rng.integers(-5, 5, 20000)}
    write_speech(tmp_path / "sc", clips, val=["bed/c_nohash_0.wav"], test=["go/d_nohash_0.wav"])
    ds = D.load("speechcommands", data_dir=tmp_path / "sc")
    assert ds.n_classes == 35 and ds.train.x.shape == (2, 16000, 1)
    assert ds.train.y.tolist() == [speech.KEYWORDS_35.index("yes")] * 2
    np.testing.assert_array_equal(ds.train.x[0, :, 0], clips["yes/a_nohash_0.wav"] / 32768)
    np.testing.assert_array_equal(ds.train.x[1, :4, 0], [1 / 32768, -2 / 32768, 3 / 32768, 0])
    np.testing.assert_array_equal(ds.train.lengths, [16000, 3])
    assert ds.val.y.tolist() == [1] and ds.val.lengths.tolist() == [8000]  # "bed" is keyword 1 of 35
    np.testing.assert_array_equal(ds.test.x[0, :2, 0], [32767 / 32768, -1.0])
    ten = D.load("speechcommands", data_dir=tmp_path / "sc", classes=10)
    assert (len(ten.train), len(ten.val), len(ten.test)) == (2, 0, 1)
    assert ten.test.y.tolist() == [9] and ten.train.y.tolist() == [0, 0]  # go, yes in yes..go order


def test_speechcommands_errors_name_the_file(tmp_path):
    write_speech(tmp_path / "sc", {"yes/a.wav": [1, 2, 3]}, rate=8000)
    with pytest.raises(ValueError, match="a.wav: expected 16-bit PCM mono at 16000 Hz"):
        D.load("speechcommands", data_dir=tmp_path / "sc")
    (tmp_path / "sc" / "yes" / "a.wav").write_bytes(b"RIFF0000WAVE junk")
    with pytest.raises(ValueError, match="a.wav: not a readable WAV file"):
        D.load("speechcommands", data_dir=tmp_path / "sc")
    (tmp_path / "sc" / "testing_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="testing_list.txt: missing"):
        D.load("speechcommands", data_dir=tmp_path / "sc")
    with pytest.raises(ValueError, match="classes must be one of 35, 10"):
        D.load("speechcommands", data_dir=tmp_path / "sc", classes=12)
