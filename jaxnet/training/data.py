"""Datasets for the MLP lessons: loaders that validate every file, and a checked downloader.

`load(name)` returns a `Dataset` of numpy arrays (images flattened to [n, features]):
  digits         scikit-learn's bundled 8x8 digits; needs no download (the offline default).
  mnist          MNIST: IDX files (gzipped or raw), the lessons' mnist.pkl.gz, or mnist.npz.
  fashion_mnist  Fashion-MNIST: IDX files.
  synthetic      lesson 001's random regression: 64 x 1000 inputs, 10 float targets.

MNIST and Fashion-MNIST are looked for in `data_dir`, then the cache folder
(`$JAXNET_DATA_DIR`, else `$XDG_CACHE_HOME/jaxnet`, else `~/.cache/jaxnet`), then for
Fashion-MNIST Debian's `/usr/share/datasets/fashion-mnist/`, and are then downloaded into the
cache: to a temporary file, checked against the published SHA-256, and renamed only on a match.

Every loader refuses a bad file with a `DataError` naming the file and what is wrong with it.
"""

import functools
import gzip
import hashlib
import http.client
import io
import math
import os
import pickle
import struct
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet.training.files import atomic_writer

try:  # the functions numpy's arrays pickle themselves with, named numpy._core since numpy 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

DATASETS = ("digits", "mnist", "fashion_mnist", "synthetic")
CACHE_ENV = "JAXNET_DATA_DIR"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# File names, and the SHA-256 of each file as published beside the public mirrors.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_GZ_FILES = tuple(stem + ".gz" for stem in IDX_FILES.values())
SHA256 = {
    "mnist": dict(zip(_GZ_FILES, (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ))),
    "fashion_mnist": dict(zip(_GZ_FILES, (
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    ))),
}  # fmt: skip
_MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
_MAX_BYTES = 1 << 30  # the most a data file may hold unpacked; MNIST's largest holds 47 MB
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(ValueError):
    """A data file is missing, corrupt or not what it claims to be."""


class Dataset(NamedTuple):
    """Train and test arrays, as numpy, with images flattened to [n, features].

    y holds integer labels [n] for classification (`num_classes` > 0) and float targets
    [n, outputs] for regression (`num_classes` == 0).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


# ------------------------------------------------------------------------- reading files


def _fault(path, what: str) -> DataError:
    return DataError(f"{path}: {what}")


def _looks_like_html(data: bytes) -> bool:
    head = data[:512].lstrip().lower()
    return head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body"))


def _refuse_html(data: bytes, path) -> bytes:
    if _looks_like_html(data):
        raise _fault(path, "is an HTML page, not a data file; a download probably saved an "
                           "error or login page. Delete it and fetch the file again.")  # fmt: skip
    return data


def _read_at_most(stream, size: int) -> bytes:
    """Up to `size` bytes of stream, a block at a time: memory follows what the file holds,
    not what a header claims."""
    blocks = []
    while size > 0 and (block := stream.read(min(size, 1 << 20))):
        blocks.append(block)
        size -= len(block)
    return b"".join(blocks)


def _read(path: str | os.PathLike, reader: Callable[[BinaryIO], Any]):
    """reader(stream) over the file's bytes, gunzipped as they are read when it is gzip.

    Raises:
      DataError: the file cannot be read, or its gzip stream is damaged or cut short.
    """
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            return reader(gzip.GzipFile(fileobj=f, mode="rb") if gzipped else f)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise _fault(path, f"is a damaged or truncated gzip file ({e}); fetch it again.") from None
    except OSError as e:
        raise _fault(path, f"cannot be read ({e.strerror or e}).") from None


def _read_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes, gunzipped when it is gzip; refuses HTML pages, truncated gzip and
    more than `_MAX_BYTES` unpacked (a gzip bomb stops there)."""
    data = _read(path, lambda stream: _read_at_most(stream, _MAX_BYTES + 1))
    if len(data) > _MAX_BYTES:
        raise _fault(path, f"holds more than {_MAX_BYTES >> 20} MiB unpacked, more than any "
                           "dataset jaxnet loads; it is corrupt or not a data file.")  # fmt: skip
    return _refuse_html(data, path)


def _idx_header(stream, path) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape an IDX header declares, checking the magic number and the size."""
    magic = stream.read(4)
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in _IDX_DTYPES or magic[3] == 0:
        _refuse_html(magic + stream.read(508), path)
        raise _fault(
            path,
            f"bad IDX magic number {magic.hex() or 'missing'}; expected "
            "00 00 <type> <ndim>, e.g. 00000803 for images, 00000801 for labels.",
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[magic[2]]), magic[3]
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise _fault(path, f"IDX header is cut short: {4 + len(dims)} bytes for {ndim} "
                           "dimensions; the file is truncated or corrupt.")  # fmt: skip
    shape = struct.unpack(f">{ndim}I", dims)
    if math.prod(shape) * dtype.itemsize > _MAX_BYTES:  # Python ints: no overflow
        raise _fault(path, f"IDX header says shape {shape} of {dtype.name}, more than "
                           f"{_MAX_BYTES >> 20} MiB; the header is corrupt. Fetch the file "
                           "again.")  # fmt: skip
    return dtype, shape


def _read_idx_stream(stream, path) -> np.ndarray:
    """An IDX array, reading no more than its header declares (and one byte to see more)."""
    dtype, shape = _idx_header(stream, path)
    expected = math.prod(shape) * dtype.itemsize
    payload = _read_at_most(stream, expected + 1)
    if len(payload) != expected:
        holds = (f"{len(payload)}; the file is truncated or corrupt" if len(payload) < expected
                 else "more; the file is corrupt or not one IDX array")  # fmt: skip
        raise _fault(path, f"IDX header says shape {shape} ({expected} bytes of {dtype}) but "
                           f"the file holds {holds}.")  # fmt: skip
    return np.frombuffer(payload, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file, gzipped or raw, unpacking no more than its header declares."""
    return _read(path, functools.partial(_read_idx_stream, path=path))


# --------------------------------------------------------------- checking image sets


def _check_images(images: np.ndarray, path, side: int = 28) -> np.ndarray:
    """Images [n, side, side] or [n, side*side], finite; returns them as [n, side*side]."""
    if images.ndim == 3 and images.shape[1:] == (side, side):
        images = images.reshape(len(images), side * side)
    if images.ndim != 2 or images.shape[1] != side * side:
        raise _fault(path, f"images have shape {images.shape}; expected [n, {side}, {side}].")
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        raise _fault(
            path, f"{np.size(images) - np.isfinite(images).sum()} pixel values are NaN or infinite."
        )
    return images


def _check_labels(labels: np.ndarray, path, num_classes: int, count: int) -> np.ndarray:
    """Integer labels [count] in [0, num_classes); returns them as int32."""
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise _fault(
            path,
            f"labels have shape {labels.shape} and dtype {labels.dtype}; "
            "expected one integer per example.",
        )
    if len(labels) != count:
        raise _fault(path, f"{len(labels)} labels for {count} images; the counts must match.")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise _fault(
            path, f"{bad.size} labels outside [0, {num_classes}), e.g. {bad[:5].tolist()}."
        )
    return labels.astype(np.int32)


def _split(images, labels, paths, num_classes):
    images = _check_images(images, paths[0])
    return images, _check_labels(labels, paths[1], num_classes, len(images))


# ----------------------------------------------------------------------- file formats


def find_idx_files(folder: str | os.PathLike) -> dict[str, Path] | None:
    """The four IDX files in `folder`, gzipped or raw, or None if any is missing."""
    found = {}
    for key, stem in IDX_FILES.items():
        candidates = [Path(folder) / (stem + ext) for ext in (".gz", "")]
        found[key] = next((p for p in candidates if p.is_file()), None)
    return found if all(found.values()) else None


def load_idx_folder(folder: str | os.PathLike, name: str, num_classes: int = 10) -> Dataset:
    """A dataset from the four IDX files in `folder`."""
    paths = find_idx_files(folder)
    if paths is None:
        raise DataError(
            f"{folder}: expected the four IDX files {list(IDX_FILES.values())} (each raw or .gz)."
        )
    parts = []
    for split in ("train", "test"):
        images, labels = paths[f"{split}_images"], paths[f"{split}_labels"]
        parts += _split(read_idx(images), read_idx(labels), (images, labels), num_classes)
    return Dataset(name, *parts, num_classes)


class _Refused(pickle.UnpicklingError):
    """The pickle asks for something that numpy arrays never need."""


def _dtype(*args):
    """numpy.dtype, refusing object dtypes: their elements would be arbitrary Python objects."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise _Refused(f"refused an object array (dtype {dtype})")
    return dtype


def _latin1_encode(text: str, encoding: str) -> bytes:
    """_codecs.encode(text, "latin1"), as pickles below protocol 3 rebuild bytes; no other codec.

    The codec is checked at call time, before it is looked up: other codecs decompress, and
    looking one up can import modules.
    """
    if encoding not in ("latin1", "latin-1"):
        raise _Refused(f"refused _codecs.encode with encoding {encoding!r}, not 'latin1'")
    return str.encode(text, "latin-1")  # str.encode: text must be a str


def _empty_bytes():
    """bytes(), the call that pickles below protocol 3 write for b''."""
    return b""


class _ArraysOnly(pickle.Unpickler):
    """Builds numpy arrays, bytes, tuples and lists; refuses every other global.

    A pickle can call any importable function while it loads. This one can call only what
    numpy arrays need at protocols 0-5, under numpy 1.x and 2.x module names (protocol 5
    rebuilds them with _frombuffer from an in-band bytearray), and each of those refuses
    object dtypes or anything but latin-1.
    """

    _GLOBALS = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("__builtin__", "bytes"): _empty_bytes,
        ("builtins", "bytes"): _empty_bytes,
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1.x names
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol 5
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    }

    def find_class(self, module, name):
        if (module, name) not in self._GLOBALS:
            raise _Refused(f"refused to load global {module}.{name}")
        return self._GLOBALS[module, name]


# What unpickling a damaged or foreign file raises, from the unpickler and numpy's constructors.
_BAD_PICKLE = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError, IndexError,
    OverflowError, MemoryError,
)  # fmt: skip

_ARRAYS_ONLY = (
    "this loader builds numpy arrays only, since a pickle can run any code. If you trust the "
    "file, load it with pickle and save the arrays with numpy.savez."
)


def _unpickle_arrays(data: bytes, path):
    try:
        return _ArraysOnly(io.BytesIO(data), encoding="latin1").load()
    except _Refused as e:
        raise _fault(path, f"{e}: {_ARRAYS_ONLY}") from None
    except _BAD_PICKLE as e:
        raise _fault(
            path, f"is truncated or not a pickle of numpy arrays ({e}); get it again."
        ) from None


def _is_three_splits(parts) -> bool:
    pairs = isinstance(parts, tuple | list) and len(parts) == 3
    pairs = pairs and all(isinstance(p, tuple | list) and len(p) == 2 for p in parts)
    return pairs and all(isinstance(a, np.ndarray) for p in parts for a in p)


def _unit_pixels(x: np.ndarray, path) -> np.ndarray:
    """Pixels as floats in [0, 1]: uint8 0..255 is scaled, other numbers must lie in [0, 1]."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255
    if x.dtype.kind not in "iuf":
        raise _fault(path, f"pixels have dtype {x.dtype}; expected uint8 or floats in [0, 1].")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise _fault(path, f"pixels range over [{x.min()}, {x.max()}]; expected [0, 1] "
                           "(or uint8 0..255).")  # fmt: skip
    return x


def load_pickle(path: str | os.PathLike, num_classes: int = 10) -> Dataset:
    """The lessons' mnist.pkl.gz: ((x_train, y_train), (x_valid, y_valid), (x_test, y_test)).

    Loads any pickle protocol 0-5, Python 2 pickles and numpy 1.x or 2.x arrays, and builds
    numpy arrays only. Pixels come back as floats in [0, 1] (uint8 0..255 is scaled). The
    validation third is appended to the training set; the trainer makes its own validation
    split.
    """
    parts = _unpickle_arrays(_read_bytes(path), path)
    if not _is_three_splits(parts):
        raise _fault(path, "expected ((x_train, y_train), (x_valid, y_valid), (x_test, y_test)) "
                           "of numpy arrays.")  # fmt: skip
    splits = [_split(x, y, (path, path), num_classes) for x, y in parts]
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = ((_unit_pixels(x, path), y) for x, y in splits)
    x_train, y_train = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    return Dataset("mnist", x_train, y_train, x_te, y_te, num_classes)


# What np.load raises on a damaged .npz: the zip (a flipped compression method: not
# implemented), the deflate stream, or the .npy header (a shape too large: no memory).
_BAD_NPZ = (
    OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile, NotImplementedError, MemoryError,
)  # fmt: skip


def _npz_fault(path, error: Exception) -> DataError:
    return _fault(path, f"is not a readable .npz file ({error}); it is truncated or corrupt. "
                        "Fetch it again.")  # fmt: skip


def _npz_arrays(path, keys: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """(the arrays of `keys` found in the .npz at path, the keys missing)."""
    try:
        opened = np.load(path, allow_pickle=False)
    except _BAD_NPZ as e:
        raise _npz_fault(path, e) from None
    if not isinstance(opened, np.lib.npyio.NpzFile):
        raise _fault(path, f"is a single .npy array, not an .npz archive of {list(keys)}; "
                           "save them with numpy.savez(path, x_train=..., ...).")  # fmt: skip
    with opened as f:
        try:
            return {k: f[k] for k in keys if k in f.files}, [k for k in keys if k not in f.files]
        except _BAD_NPZ as e:
            raise _npz_fault(path, e) from None


def load_npz(path: str | os.PathLike, name: str = "mnist", num_classes: int = 10) -> Dataset:
    """A keras-style .npz with x_train, y_train, x_test, y_test (never unpickles objects)."""
    keys = ("x_train", "y_train", "x_test", "y_test")
    arrays, missing = _npz_arrays(path, keys)
    if missing:
        raise _fault(path, f"has no array {missing[0]!r}; expected the keys {list(keys)}.")
    x_train, y_train = _split(arrays["x_train"], arrays["y_train"], (path, path), num_classes)
    x_test, y_test = _split(arrays["x_test"], arrays["y_test"], (path, path), num_classes)
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes)


# ------------------------------------------------------------------------- downloading


def _cache_dir() -> Path:
    """$JAXNET_DATA_DIR, else $XDG_CACHE_HOME/jaxnet, else ~/.cache/jaxnet."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jaxnet"


def download(url: str, dest: str | os.PathLike, sha256: str, *, timeout: float = 30.0) -> Path:
    """Fetches url into dest via a temporary file, renamed into place only if SHA-256 matches.

    Raises:
      DataError: the server fails or the bytes do not match; nothing is left at dest.
    """
    digest = hashlib.sha256()
    try:
        with (
            atomic_writer(dest, suffix=".part") as f,
            urllib.request.urlopen(url, timeout=timeout) as r,
        ):
            while block := r.read(1 << 20):
                digest.update(block)
                f.write(block)
            if digest.hexdigest() != sha256:  # raising here removes the temporary file
                raise DataError(
                    f"{url}: SHA-256 {digest.hexdigest()} does not match the published "
                    f"{sha256}; the download is corrupt or the mirror changed. Nothing was kept."
                )
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise DataError(f"{url}: download failed ({e}).") from None
    return Path(dest)


def _fetch(name: str, folder: Path, mirrors: Sequence[str] | None = None) -> Path:
    """Downloads the four IDX files of `name` into folder, trying each mirror in turn."""
    errors = []
    for file, digest in SHA256[name].items():
        if (folder / file).is_file():
            continue
        for base in _MIRRORS[name] if mirrors is None else mirrors:
            try:
                download(base.rstrip("/") + "/" + file, folder / file, digest)
                break
            except DataError as e:
                errors.append(str(e))
        else:
            raise DataError(f"could not download {name} file {file}:\n  " + "\n  ".join(errors))
    return folder


# ---------------------------------------------------------------------- the datasets


def _digits() -> Dataset:
    """scikit-learn's 1797 8x8 digits (pixels 0..16), split 80/20 by a fixed shuffle."""
    from sklearn.datasets import load_digits  # deferred: a second or so to import

    bunch = load_digits()
    x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    n_test = len(x) // 5
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", x[train], y[train], x[test], y[test], 10)


def _synthetic(seed: int = 0) -> Dataset:
    """Lesson 001: x ~ N(0, 1) [64, 1000], y ~ N(0, 1) [64, 10]; a fresh draw as test set."""
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((2, 64, 1000)), rng.standard_normal((2, 64, 10))
    return Dataset("synthetic", *(a.astype(np.float32) for a in (x[0], y[0], x[1], y[1])), 0)


def _from_folder(folder: Path, name: str) -> Dataset | None:
    """The dataset from the first of IDX files, mnist.pkl.gz or mnist.npz found in folder."""
    if find_idx_files(folder):
        return load_idx_folder(folder, name)
    if name == "mnist" and (folder / "mnist.pkl.gz").is_file():
        return load_pickle(folder / "mnist.pkl.gz")
    if name == "mnist" and (folder / "mnist.npz").is_file():
        return load_npz(folder / "mnist.npz")
    return None


def _search_path(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders looked in for `name`, in order."""
    folders = [Path(data_dir)] if data_dir else []
    folders.append(_cache_dir() / name)
    if name == "fashion_mnist":
        folders.append(DEBIAN_FASHION_MNIST)
    return folders


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download_ok: bool = True,
    mirrors: Sequence[str] | None = None,
) -> Dataset:
    """Loads a dataset by name, from disk or, for MNIST and Fashion-MNIST, the mirrors.

    Args:
      name: one of `DATASETS`.
      data_dir: a folder looked in first.
      download_ok: whether to download when no folder holds the files.
      mirrors: base URLs to download from, instead of `_MIRRORS[name]`.

    Raises:
      DataError: unknown name, a bad file, or no files and no download (saying where to
        put them).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}.")
    if name == "digits":
        return _digits()
    if name == "synthetic":
        return _synthetic()
    folders = _search_path(name, data_dir)
    for folder in folders:
        if (found := _from_folder(folder, name)) is not None:
            return found
    if not download_ok:
        raise DataError(
            f"{name} not found in {[str(f) for f in folders]}. Put the four IDX files "
            f"{sorted(SHA256[name])} in one of them (or set ${CACHE_ENV}), or allow downloads."
        )
    try:
        return load_idx_folder(_fetch(name, _cache_dir() / name, mirrors), name)
    except DataError as e:
        raise DataError(f"{e}\nOffline? Put the files {sorted(SHA256[name])} in "
                        f"{folders[0]} or set ${CACHE_ENV}.") from None  # fmt: skip


# ------------------------------------------------------------------ preparing for training


class Normalizer(NamedTuple):
    """x -> (x - mean) / std, with the training set's scalar statistics (lesson 003)."""

    mean: float
    std: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


def fit_normalizer(x_train: np.ndarray) -> Normalizer:
    """The training set's mean and std; a constant set is left unscaled."""
    x = np.asarray(x_train)
    x = x.reshape(len(x), -1)
    mean = float(x.mean(dtype=np.float64))
    # Two passes in float64, a block of rows at a time: a float64 copy of all of
    # Fashion-MNIST would take 376 MB and seconds.
    rows = max(1, 2**20 // max(1, x.shape[1]))
    squares = sum(float(np.square(x[i : i + rows] - mean).sum()) for i in range(0, len(x), rows))
    std = (squares / max(1, x.size)) ** 0.5
    return Normalizer(mean, std if std > 0 else 1.0)


def validation_split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int = 0):
    """((x_train, y_train), (x_valid, y_valid)): a fixed random `fraction` held out."""
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must lie in [0, 1), got {fraction}.")
    order = np.random.default_rng(seed).permutation(len(x))
    n_valid = int(round(fraction * len(x)))
    valid, train = order[:n_valid], order[n_valid:]
    return (x[train], y[train]), (x[valid], y[valid])


def random_flip(key, x, side: int = 28):
    """Mirrors a random half of the images [n, side*side] left to right (inside jit).

    Clothes and shoes look alike mirrored, so for Fashion-MNIST this doubles the data
    for free; never use it on digits, where a mirrored 2 is no 2.
    """
    images = x.reshape(x.shape[0], -1, side)
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1))
    return jnp.where(flip, images[:, :, ::-1], images).reshape(x.shape)
