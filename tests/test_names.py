"""The name lists load from the installed package, split reproducibly, and window correctly.

Counts are read from the package's files here, independently of the loader, never typed in.
"""

import importlib.util
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnet.lessons import names


def _package_dir() -> Path:
    return Path(importlib.util.find_spec("names").origin).parent


def _first_tokens(filename: str) -> list[str]:
    lines = (_package_dir() / filename).read_text().splitlines()
    return [line.split()[0].lower() for line in lines if line.strip()]


def test_surnames_are_every_line_of_the_census_list_once():
    words = names.load("surnames")
    raw = _first_tokens("dist.all.last")
    assert len(words) == len(set(raw)) > 0
    assert all(re.fullmatch("[a-z]+", w) for w in words)
    assert words == sorted(set(words))


def test_first_names_are_deduplicated_across_the_two_lists():
    female, male = _first_tokens("dist.female.first"), _first_tokens("dist.male.first")
    words = names.load("first")
    assert set(words) == set(female) | set(male)
    assert len(words) < len(female) + len(male)  # the lists overlap; each name counts once


def test_clean_keeps_lowercase_letters_only():
    assert names.clean("O'Brien-Smith 2") == "obriensmith"


def _fake_package(root: Path, name: str, files: dict[str, str]) -> str:
    """A package `name` under root (each test its own name: imports are cached)."""
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for filename, text in files.items():
        (package / filename).write_text(text)
    return name


def test_loader_reads_a_package_given_by_name(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    package = _fake_package(
        tmp_path,
        "fake_names_both",
        {"dist.female.first": "MARY 2.6 2.6 1\nANN 0.1 2.7 2\n\n",
         "dist.male.first": "JAMES 3.3 3.3 1\nMARY 0.1 3.4 2\nO'NEIL 0.1 3.5 3\n"},
    )  # fmt: skip
    assert names.load("first", package=package) == ["ann", "james", "mary", "oneil"]


def test_a_missing_package_says_how_to_install_it():
    with pytest.raises(names.NamesError, match=re.escape("pip install names==0.3.0")):
        names.load("surnames", package="no_such_names_package")


def test_a_missing_file_is_named(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    files = {"dist.female.first": "MARY 2.6 2.6 1\n"}
    package = _fake_package(tmp_path, "fake_names_female", files)
    with pytest.raises(names.NamesError, match="dist.male.first.*pip install names==0.3.0"):
        names.load("first", package=package)


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="surnames"):
        names.load("last")


def test_split_is_a_fixed_partition():
    words = [f"w{i}" for i in range(1003)]
    train, val, test = names.split(words)
    assert (len(train), len(val), len(test)) == (802, 100, 101)
    assert sorted(train + val + test) == sorted(words)
    assert names.split(words) == (train, val, test)
    assert names.split(words, seed=1)[0] != train


def test_windows_of_two_words():
    pairs = names.windows(["ab", "c"], block_size=2)
    x = [[0, 0], [0, 1], [1, 2], [0, 0], [0, 3]]
    np.testing.assert_array_equal(pairs.x, x)
    np.testing.assert_array_equal(pairs.y, [1, 2, 0, 3, 0])
    assert pairs.x.dtype == pairs.y.dtype == np.int32


def test_windows_of_the_real_lists_give_one_example_per_letter_and_end():
    words = names.split(names.load("first"))[1]
    pairs = names.windows(words, block_size=3)
    assert len(pairs.y) == sum(len(w) + 1 for w in words)
    assert (pairs.y == 0).sum() == len(words)  # one closing `.` per name
    ends = np.flatnonzero(pairs.y == 0)
    starts = np.concatenate([[0], ends[:-1] + 1])
    decoded = [names.decode(pairs.y[s : e + 1]) for s, e in zip(starts, ends)]
    assert decoded == list(words)


def test_windows_refuse_an_empty_context_and_accept_no_words():
    with pytest.raises(ValueError, match="block_size"):
        names.windows(["ab"], block_size=0)
    empty = names.windows([], block_size=3)
    assert empty.x.shape == (0, 3) and empty.y.shape == (0,)


def _counting_model(context):
    """Puts all mass on the letter after the context's last one; `.` after `e`."""
    last = context[:, -1]
    following = jnp.where(last == 5, 0, last + 1)
    return 50.0 * jax.nn.one_hot(following, names.VOCAB)


def test_sample_follows_the_model_and_stops_at_the_dot():
    out = names.sample(jax.random.key(0), _counting_model, count=4, block_size=3)
    assert out == ["abcde"] * 4


def test_sample_cuts_a_name_that_never_ends():
    def never_ends(context):
        return 50.0 * jax.nn.one_hot(jnp.ones(len(context), jnp.int32), names.VOCAB)

    out = names.sample(jax.random.key(0), never_ends, count=2, block_size=2, max_length=7)
    assert out == ["aaaaaaa"] * 2
