"""Real names for makemore: the US Census lists shipped by the PyPI package `names`.

`names` (version 0.3.0) installs `dist.all.last` (surnames) and `dist.female.first` /
`dist.male.first` (first names; the two lists overlap), one name per line followed by
frequency columns. They are read with `importlib.resources`, so nothing is downloaded.

Characters are coded as makemore codes them: `.` (start and end of a name) is 0 and `a`..`z`
are 1..26. A model reads `block_size` characters of context and predicts the next one; each
name of n letters gives n + 1 examples, the closing `.` included.
"""

import importlib.resources
import string
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet.typing import Array

PACKAGE = "names"
INSTALL = "pip install names==0.3.0"
FILES = {"surnames": ("dist.all.last",), "first": ("dist.female.first", "dist.male.first")}
ALPHABET = "." + string.ascii_lowercase
VOCAB = len(ALPHABET)  # 27
SPLIT_SEED = 42


class NamesError(RuntimeError):
    """The name lists cannot be read; the message says what is missing and how to install it."""


def _read_list(package: str, filename: str) -> str:
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise NamesError(
            f"the name lists come from the PyPI package {package!r} (version 0.3.0), which is "
            f"not installed; install it with `{INSTALL}` (or `pip install -e .` here)."
        ) from None
    path = root / filename
    if not path.is_file():
        raise NamesError(
            f"the package {package!r} has no file {filename!r} (looked in {root}); "
            f"reinstall the version this code reads with `{INSTALL}`."
        )
    return path.read_text(encoding="ascii", errors="replace")


def clean(name: str) -> str:
    """`name` lowercased, with every character outside a-z dropped ("O'Brien" -> "obrien")."""
    return "".join(c for c in name.lower() if c in string.ascii_lowercase)


def load(kind: str, *, package: str = PACKAGE) -> list[str]:
    """Every distinct name of one kind, cleaned, sorted.

    Args:
      kind: "surnames" or "first" (female and male lists together, each name once).
      package: where the lists live; only tests change it.

    Raises:
      ValueError: an unknown kind.
      NamesError: the package or one of its files is missing, or a list holds no name.
    """
    if kind not in FILES:
        raise ValueError(f"names kind {kind!r} is not one of {sorted(FILES)}.")
    words = set()
    for filename in FILES[kind]:
        lines = _read_list(package, filename).splitlines()
        words.update(clean(line.split()[0]) for line in lines if line.strip())
    words.discard("")
    if not words:
        raise NamesError(f"{package}: {FILES[kind]} hold no name; `{INSTALL}` restores them.")
    return sorted(words)


def split(
    words: Sequence[str], fractions=(0.8, 0.1), seed: int = SPLIT_SEED
) -> tuple[list[str], list[str], list[str]]:
    """(train, validation, test): a fixed shuffle, cut at 80% and 90% by default."""
    order = np.random.default_rng(seed).permutation(len(words))
    n1 = int(fractions[0] * len(words))
    n2 = int((fractions[0] + fractions[1]) * len(words))
    shuffled = [words[i] for i in order]
    return shuffled[:n1], shuffled[n1:n2], shuffled[n2:]


def encode(word: str) -> np.ndarray:
    """Codes of a cleaned word's letters: a -> 1 ... z -> 26."""
    return np.frombuffer(word.encode("ascii"), np.uint8).astype(np.int32) - (ord("a") - 1)


def decode(codes) -> str:
    """Letters up to the first `.` (code 0)."""
    out = []
    for c in np.asarray(codes).tolist():
        if c == 0:
            break
        out.append(ALPHABET[c])
    return "".join(out)


class Windows(NamedTuple):
    """Examples: x [n, block_size] int32 context codes, y [n] int32 next-character codes."""

    x: np.ndarray
    y: np.ndarray


def windows(words: Sequence[str], block_size: int) -> Windows:
    """Every (context, next character) pair of every word, the closing `.` included.

    The context starts as `block_size` dots, as makemore's does.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}.")
    if not len(words):
        return Windows(np.zeros((0, block_size), np.int32), np.zeros((0,), np.int32))
    lengths = np.array([len(w) for w in words], np.int64)
    # Each word becomes [0]*block_size + codes + [0]; a window of block_size + 1 codes
    # starting at offset k (0 <= k <= len) is (context, target).
    padded = lengths + block_size + 1
    stream = np.zeros(int(padded.sum()), np.int32)
    starts = np.concatenate([[0], np.cumsum(padded)[:-1]])
    letters = encode("".join(words))
    where = np.repeat(starts + block_size, lengths) + _within(lengths)
    stream[where] = letters
    first = np.repeat(starts, lengths + 1) + _within(lengths + 1)
    view = np.lib.stride_tricks.sliding_window_view(stream, block_size + 1)[first]
    return Windows(np.ascontiguousarray(view[:, :-1]), np.ascontiguousarray(view[:, -1]))


def _within(counts: np.ndarray) -> np.ndarray:
    """[0, 1, ..., c0 - 1, 0, 1, ..., c1 - 1, ...]."""
    ends = np.cumsum(counts)
    return np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - counts, counts)


def sample(
    key: Array,
    logits_fn: Callable[[Array], Array],
    *,
    count: int,
    block_size: int,
    max_length: int = 40,
) -> list[str]:
    """`count` names drawn from a model, all at once, one character per step.

    Args:
      key: PRNG key.
      logits_fn: contexts [count, block_size] int32 -> logits [count, 27] (eval mode).
      count, block_size: how many names, and the model's context.
      max_length: characters drawn per name; a name without `.` by then is cut there.

    Returns:
      The names, decoded up to their first `.`.
    """

    def step(context, step_key):
        code = jax.random.categorical(step_key, logits_fn(context)).astype(jnp.int32)
        return jnp.concatenate([context[:, 1:], code[:, None]], axis=1), code

    context = jnp.zeros((count, block_size), jnp.int32)
    _, codes = jax.lax.scan(step, context, jax.random.split(key, max_length))
    return [decode(row) for row in np.asarray(codes).T]
