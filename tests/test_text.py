"""jaxnet.text: the fortunes corpus and UTF-8 files, coded by character and split 90/10."""

import pickle

import numpy as np
import pytest

from benchmarks import nanogpt_bench
from jaxnet import text

SAMPLE = "To be, or not to be: that is the question.\nCafé, naïve, 🙂 and\ttabs.\n" * 3


def write(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def fake_fortunes(root):
    """A fortunes folder as Debian lays it out: texts, .dat indexes, .u8 links; plus a folder."""
    root.mkdir()
    write(root / "zen", "Zen fortune.\n%\n")
    write(root / "art", "Art fortune.\n%\n")
    write(root / "art.dat", b"\x00\x00\x00\x02binary index")
    (root / "art.u8").symlink_to("art")
    (root / "sub").mkdir()
    write(root / "sub" / "inside", "never read\n")
    return root


def test_a_file_is_coded_and_split_as_nanogpts_prepare():
    corpus = text.from_string(SAMPLE, "sample")
    n = len(SAMPLE)
    assert corpus.chars == "".join(sorted(set(SAMPLE)))
    assert corpus.vocab_size == len(set(SAMPLE))
    assert len(corpus.train) == int(n * 0.9) and len(corpus.val) == n - int(n * 0.9)
    assert corpus.train.dtype == corpus.val.dtype == np.int32
    assert corpus.decode(corpus.train) == SAMPLE[: int(n * 0.9)]
    assert corpus.decode(corpus.val) == SAMPLE[int(n * 0.9) :]
    np.testing.assert_array_equal(corpus.encode(SAMPLE[5:40]), corpus.train[5:40])


def test_load_reads_a_path(tmp_path):
    path = write(tmp_path / "input.txt", SAMPLE)
    for given in (path, str(path)):
        corpus = text.load(given)
        assert corpus.name == str(path)
        assert corpus.decode(np.concatenate([corpus.train, corpus.val])) == SAMPLE


@pytest.mark.parametrize("n", [11, 12, 19, 20, 21, 100, 1001])
def test_the_split_is_int_of_point_nine_n(n):
    corpus = text.from_string(("ab" * n)[:n])
    assert (len(corpus.train), len(corpus.val)) == (int(n * 0.9), n - int(n * 0.9))
    assert len(corpus.val) >= text.MIN_VAL


def test_fortunes_reads_regular_non_dat_files_in_name_order(tmp_path):
    root = fake_fortunes(tmp_path / "fortunes")
    assert [p.name for p in text.fortunes_files(root)] == ["art", "zen"]
    assert text.fortunes_text(root) == "Art fortune.\n%\nZen fortune.\n%\n"


def test_load_fortunes_reads_the_fortunes_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "FORTUNES_DIR", fake_fortunes(tmp_path / "fortunes"))
    corpus = text.load("fortunes")
    assert corpus.name == "fortunes" and text.CORPORA == ("fortunes",)
    assert corpus.decode(np.concatenate([corpus.train, corpus.val])).startswith("Art fortune.")


def test_a_missing_fortunes_dir_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "FORTUNES_DIR", tmp_path / "absent")
    with pytest.raises(text.TextError, match=r"absent does not exist.*apt-get install fortunes"):
        text.load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(text.TextError, match="holds no fortune files.*apt-get install fortunes"):
        text.fortunes_text(tmp_path / "empty")


def test_a_missing_path_or_a_folder_is_refused(tmp_path):
    with pytest.raises(text.TextError, match=r"nope.txt: no such file; pass a corpus name"):
        text.load(tmp_path / "nope.txt")
    with pytest.raises(text.TextError, match="is a folder"):
        text.load(tmp_path)


def test_a_file_that_is_not_utf8_names_the_byte_offset(tmp_path):
    path = write(tmp_path / "latin1.txt", b"Caf\xe9 au lait, s'il vous plait")
    with pytest.raises(text.TextError, match=r"latin1.txt: not UTF-8 at byte offset 3 \(byte 0xe9"):
        text.load(path)
    root = fake_fortunes(tmp_path / "fortunes")
    write(root / "bad", b"fine text\nthen \xff")
    with pytest.raises(text.TextError, match=r"bad: not UTF-8 at byte offset 15"):
        text.fortunes_text(root)


def test_an_empty_or_too_short_text_is_refused(tmp_path):
    with pytest.raises(text.TextError, match=r"empty.txt is empty; a corpus needs at least 11"):
        text.load(write(tmp_path / "empty.txt", ""))
    with pytest.raises(text.TextError, match=r"holds 10 characters; .* at least 11.* at least 2"):
        text.load(write(tmp_path / "short.txt", "0123456789"))
    assert len(text.load(write(tmp_path / "ok.txt", "0123456789a")).val) == 2


def test_encode_names_a_character_outside_the_vocabulary():
    corpus = text.from_string(SAMPLE, "sample")
    with pytest.raises(text.TextError, match=r"'€' \(U\+20AC, at index 2\) is not in the vocab"):
        corpus.encode("To€")
    with pytest.raises(text.TextError, match=r"'\\ud800'"):  # a lone surrogate, named too
        corpus.encode("\ud800")
    assert corpus.encode("").shape == (0,) and corpus.decode([]) == ""


def test_decode_refuses_ids_outside_the_vocabulary():
    corpus = text.from_string(SAMPLE, "sample")
    for bad in (corpus.vocab_size, -1):
        with pytest.raises(text.TextError, match=rf"id {bad} is outside the vocabulary"):
            corpus.decode([0, bad])
    with pytest.raises(text.TextError, match="integer ids"):
        corpus.decode(np.array([0.5]))
    assert corpus.decode(np.array([[0, 1], [1, 0]])) == corpus.chars[:2] + corpus.chars[1::-1]


def test_a_vocabulary_past_uint16_still_codes():
    chars = "".join(chr(c) for c in range(0x20, 0x20 + 70_000) if not 0xD800 <= c < 0xE000)
    corpus = text.from_string(chars + chars[:1000], "wide")
    assert corpus.vocab_size == len(chars) > 65535
    assert int(np.concatenate([corpus.train, corpus.val]).max()) == corpus.vocab_size - 1
    assert corpus.decode(corpus.train) + corpus.decode(corpus.val) == chars + chars[:1000]
    with pytest.raises(ValueError, match="nanoGPT stores ids as uint16"):
        nanogpt_bench.write_nanogpt_data(corpus, "/nonexistent")


NO_FORTUNES = (
    f"{text.FORTUNES_DIR} is absent: Debian's fortunes package is not installed "
    "(apt-get install fortunes)"
)


@pytest.mark.skipif(not text.FORTUNES_DIR.is_dir(), reason=NO_FORTUNES)
def test_the_real_fortunes_corpus():
    corpus = text.load("fortunes")
    n = len(corpus.train) + len(corpus.val)
    assert corpus.vocab_size == 113
    assert 2_400_000 < n < 2_800_000
    assert len(corpus.train) == int(0.9 * n)


def test_nanogpt_data_is_what_prepare_py_writes(tmp_path):
    corpus = text.from_string(SAMPLE, "sample")
    folder = nanogpt_bench.write_nanogpt_data(corpus, tmp_path / "data" / "sample_char")
    assert sorted(p.name for p in folder.iterdir()) == ["meta.pkl", "train.bin", "val.bin"]
    for split in ("train", "val"):
        ids = np.fromfile(folder / f"{split}.bin", dtype=np.uint16)  # as train.py memmaps it
        np.testing.assert_array_equal(ids, getattr(corpus, split))
    with open(folder / "meta.pkl", "rb") as f:
        meta = pickle.load(f)
    assert sorted(meta) == ["itos", "stoi", "vocab_size"]
    assert meta["vocab_size"] == corpus.vocab_size
    assert "".join(meta["itos"][i] for i in range(meta["vocab_size"])) == corpus.chars
    assert all(meta["itos"][meta["stoi"][c]] == c for c in corpus.chars)
