"""Character-level text for language models: Debian's fortune cookies, or any UTF-8 file.

`load(text)` returns a `Corpus`: the text's distinct characters, sorted, as its vocabulary,
and its characters as int32 ids, split the way nanoGPT's `data/shakespeare_char/prepare.py`
splits: train is the first int(0.9 * n) characters, val the rest.

  fortunes   Debian's `fortunes` package (`apt-get install fortunes`): the regular files of
             /usr/share/games/fortunes/ whose names do not end in `.dat`, in sorted name
             order, concatenated. The `.dat` files are fortune's indexes and the `.u8` names
             are links to the texts, so neither is read. About 2.58 million characters, 113
             of them distinct.
  any path   a UTF-8 text file of your own, e.g. tiny Shakespeare's `input.txt`.

A corpus name wins over a file of the same name in the working folder: write `./fortunes`
for the file. Files are decoded as strict UTF-8, with no newline translation; a byte-order
mark, if any, stays in the text as the character U+FEFF.
"""

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "CORPORA",
    "Corpus",
    "FORTUNES_DIR",
    "INSTALL",
    "MIN_CHARS",
    "MIN_VAL",
    "TRAIN_FRACTION",
    "TextError",
    "fortunes_files",
    "fortunes_text",
    "from_string",
    "load",
    "read_text",
]

CORPORA = ("fortunes",)
FORTUNES_DIR = Path("/usr/share/games/fortunes")
INSTALL = "apt-get install fortunes"
TRAIN_FRACTION = 0.9
MIN_VAL = 2  # one character of context and the one that follows it
MIN_CHARS = 11  # the shortest text whose last 10% holds MIN_VAL characters: int(0.9 * 11) = 9


class TextError(ValueError):
    """A text cannot be read or coded; the message says what is wrong and what to do."""


class Corpus(NamedTuple):
    """A text coded as characters.

    chars holds the vocabulary, sorted by code point: id i is chars[i]. train [int(0.9 * n)]
    and val [n - int(0.9 * n)] are int32 ids of the first 90% of the text and the rest.
    """

    name: str
    chars: str
    train: np.ndarray
    val: np.ndarray

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """int32 ids [len(text)] of text's characters; each must be in the vocabulary."""
        return _encode(_code_points(self.chars), text, self.name)

    def decode(self, ids) -> str:
        """The characters of ids, any integer array of values in [0, vocab_size)."""
        return _decode(self.chars, np.asarray(ids), self.name)


# ------------------------------------------------------------------------------- coding


def _code_points(text: str) -> np.ndarray:
    """uint32 code points [len(text)]; lone surrogates pass through as their own values."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), "<u4")


def _from_code_points(points: np.ndarray) -> str:
    return points.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


def _encode(vocab: np.ndarray, text: str, name: str) -> np.ndarray:
    points = _code_points(text)
    ids = np.minimum(np.searchsorted(vocab, points), max(len(vocab) - 1, 0))
    missing = (vocab[ids] != points) if len(vocab) else np.ones(len(points), bool)
    if missing.any():
        at = int(np.argmax(missing))
        raise TextError(
            f"character {text[at]!r} (U+{ord(text[at]):04X}, at index {at}) is not in the "
            f"vocabulary of {name}; encode only text made of its {len(vocab)} characters."
        )
    return ids.astype(np.int32)


def _decode(chars: str, ids: np.ndarray, name: str) -> str:
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise TextError(f"ids have dtype {ids.dtype}; decode takes integer ids.")
    bad = ids[(ids < 0) | (ids >= len(chars))]
    if bad.size:
        raise TextError(
            f"id {int(bad.flat[0])} is outside the vocabulary of {name}, ids 0 to "
            f"{len(chars) - 1}; decode only ids this corpus encoded."
        )
    return _from_code_points(_code_points(chars)[ids.reshape(-1).astype(np.intp)])


def from_string(text: str, name: str = "text") -> Corpus:
    """A corpus of text: its sorted characters, train the first 90%, val the rest.

    Raises:
      TextError: text is shorter than MIN_CHARS, so val would hold under MIN_VAL characters.
    """
    if len(text) < MIN_CHARS:
        what = "is empty" if not text else f"holds {len(text)} characters"
        raise TextError(
            f"{name} {what}; a corpus needs at least {MIN_CHARS}, so that its last 10% "
            f"(val) holds at least {MIN_VAL}. Use a longer text."
        )
    vocab, ids = np.unique(_code_points(text), return_inverse=True)
    ids = ids.reshape(-1).astype(np.int32)
    n_train = int(TRAIN_FRACTION * len(text))  # as prepare.py: data[:int(n*0.9)]
    return Corpus(name, _from_code_points(vocab), ids[:n_train], ids[n_train:])


# ------------------------------------------------------------------------------ reading


def _read_utf8(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TextError(f"{path}: cannot be read ({e.strerror or e}).") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TextError(
            f"{path}: not UTF-8 at byte offset {e.start} (byte 0x{data[e.start]:02x}: "
            f"{e.reason}); convert it, e.g. `iconv -f latin1 -t utf-8`, or pass another file."
        ) from None


def fortunes_files(root: str | os.PathLike = FORTUNES_DIR) -> list[Path]:
    """The fortune texts in root: regular files, not links, not `.dat`, sorted by name.

    Raises:
      TextError: root is missing or holds no such file.
    """
    root = Path(root)
    if not root.is_dir():
        raise TextError(
            f"{root} does not exist: the fortunes corpus is Debian's fortunes package; install "
            f"it with `{INSTALL}`, or pass the path of a UTF-8 text file instead."
        )
    files = sorted(
        (p for p in root.iterdir() if p.is_file() and not p.is_symlink()),
        key=lambda p: p.name,
    )
    files = [p for p in files if not p.name.endswith(".dat")]
    if not files:
        raise TextError(f"{root} holds no fortune files; reinstall them with `{INSTALL}`.")
    return files


def fortunes_text(root: str | os.PathLike = FORTUNES_DIR) -> str:
    """The fortune texts of root (see `fortunes_files`), each read as UTF-8, concatenated."""
    return "".join(_read_utf8(p) for p in fortunes_files(root))


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of the file at path.

    Raises:
      TextError: no such file, a folder, unreadable, or not UTF-8 (naming the byte offset).
    """
    path = Path(path)
    if not path.exists():
        raise TextError(
            f"{path}: no such file; pass a corpus name ({', '.join(CORPORA)}) or the path of "
            "a UTF-8 text file."
        )
    if path.is_dir():
        raise TextError(f"{path} is a folder; pass the path of one UTF-8 text file.")
    return _read_utf8(path)


def load(text: str | os.PathLike = "fortunes") -> Corpus:
    """The corpus called text, or the UTF-8 file at that path, coded and split 90/10.

    Args:
      text: a name in CORPORA, or the path of a UTF-8 text file.

    Raises:
      TextError: saying what is wrong and what to do (see `fortunes_files`, `read_text`,
        `from_string`).
    """
    if text in CORPORA:
        return from_string(fortunes_text(FORTUNES_DIR), str(text))
    return from_string(read_text(text), str(text))
