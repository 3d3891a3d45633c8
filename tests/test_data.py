"""Loaders refuse every bad file with a message naming it; the downloader checks SHA-256."""

import codecs
import functools
import gzip
import hashlib
import http.server
import pickle
import pickletools
import shlex
import struct
import threading
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from jaxnet.training import data


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, n_train=12, n_test=5, gz=True, **overrides) -> Path:
    """Writes the four IDX files of a tiny MNIST; overrides replace a file's bytes."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28)),
        "train_labels": rng.integers(0, 10, n_train),
        "test_images": rng.integers(0, 256, (n_test, 28, 28)),
        "test_labels": rng.integers(0, 10, n_test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in data.IDX_FILES.items():
        raw = overrides.get(key, idx_bytes(arrays[key]))
        path = folder / (stem + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(raw) if gz else raw)
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_any_count(tmp_path, gz):
    ds = data.load_idx_folder(write_idx_set(tmp_path, n_train=7, n_test=3, gz=gz), "mnist")
    assert ds.x_train.shape == (7, 784) and ds.x_test.shape == (3, 784)
    assert ds.y_train.dtype == np.int32 and ds.num_classes == 10


def _header(magic, *dims):
    return bytes(magic) + struct.pack(f">{len(dims)}I", *dims)


BAD_IDX = {
    "magic": ("train_images", _header([0, 0, 0x42, 3], 12, 28, 28) + bytes(12 * 784),
              "bad IDX magic number"),
    "truncated payload": ("train_images", _header([0, 0, 8, 3], 12, 28, 28) + bytes(100),
                          "truncated or corrupt"),
    "image size": ("train_images", _header([0, 0, 8, 3], 12, 27, 28) + bytes(12 * 27 * 28),
                   r"expected \[n, 28, 28\]"),
    "count mismatch": ("train_labels", _header([0, 0, 8, 1], 11) + bytes(11),
                       "11 labels for 12 images"),
    "label range": ("test_labels", _header([0, 0, 8, 1], 5) + bytes([1, 2, 10, 3, 200]),
                    r"2 labels outside \[0, 10\)"),
    "html": ("test_images", b"<!DOCTYPE html><html><body>Moved</body></html>", "HTML page"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_IDX))
def test_bad_idx_files_are_refused_with_file_and_fault(tmp_path, case):
    key, raw, message = BAD_IDX[case]
    folder = write_idx_set(tmp_path, **{key: raw})
    with pytest.raises(data.DataError, match=message) as info:
        data.load_idx_folder(folder, "mnist")
    assert data.IDX_FILES[key] in str(info.value)  # the message names the file


def test_html_saved_as_gz_is_refused(tmp_path):
    folder = write_idx_set(tmp_path)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"\n  <html><head>404</head></html>")
    with pytest.raises(data.DataError, match="train-labels-idx1-ubyte.gz: is an HTML page"):
        data.load_idx_folder(folder, "mnist")


def test_truncated_gzip_is_refused(tmp_path):
    folder = write_idx_set(tmp_path)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(data.DataError, match="train-images.*truncated gzip"):
        data.load_idx_folder(folder, "mnist")


def _gzip_bomb(header: bytes, mebibytes: int) -> bytes:
    """gzip of header then `mebibytes` MiB of zeros, made a MiB at a time."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    parts = [packer.compress(header)]
    parts += [packer.compress(bytes(1 << 20)) for _ in range(mebibytes)]
    return b"".join([*parts, packer.flush()])


def test_a_gzip_bomb_is_refused_after_reading_what_the_header_declares(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(_gzip_bomb(_header([0, 0, 8, 3], 7, 28, 28), 64))
    tracemalloc.start()
    try:
        with pytest.raises(data.DataError, match=r"idx3-ubyte.gz: .*\(7, 28, 28\).*holds more"):
            data.read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # the whole file unpacks to 64 MiB


def test_a_pickle_bomb_stops_at_the_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_MAX_BYTES", 4 << 20)
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(_gzip_bomb(b"", 16))
    with pytest.raises(data.DataError, match="mnist.pkl.gz: holds more than 4 MiB unpacked"):
        data.load_pickle(path)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dims", [(2**32 - 1,) * 3, (60000, 28, 28, 28, 28)])
def test_absurd_idx_dims_are_refused_naming_the_file(tmp_path, gz, dims):
    raw = _header([0, 0, 8, len(dims)], *dims) + bytes(100)
    path = tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte.*more than 1024 MiB"):
        data.read_idx(path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(data.DataError, match="expected the four IDX files"):
        data.load_idx_folder(tmp_path, "mnist")


def _mnist_pickle(path: Path, x_scale=1 / 255, label=3):
    rng = np.random.default_rng(1)

    def part(n):
        x = (rng.integers(0, 256, (n, 784)) * x_scale).astype(np.float32)
        return x, np.full(n, label, np.int64)

    with gzip.open(path, "wb") as f:
        pickle.dump((part(6), part(2), part(3)), f)
    return path


def test_pickle_loads_and_merges_validation(tmp_path):
    ds = data.load_pickle(_mnist_pickle(tmp_path / "mnist.pkl.gz"))
    assert ds.x_train.shape == (8, 784) and ds.x_test.shape == (3, 784)
    assert ds.x_train.max() <= 1 and (ds.y_train == 3).all()


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(((Evil(), 1), (2, 3), (4, 5)), f)
    with pytest.raises(data.DataError, match=r"refused to load global pathlib"):
        data.load_pickle(path)
    assert not (tmp_path / "pwned").exists()


def test_pickle_bad_values_are_refused(tmp_path):
    with pytest.raises(data.DataError, match=r"expected \[0, 1\]"):
        data.load_pickle(_mnist_pickle(tmp_path / "a.pkl.gz", x_scale=1.0))
    with pytest.raises(data.DataError, match="labels outside"):
        data.load_pickle(_mnist_pickle(tmp_path / "b.pkl.gz", label=12))
    for name, x, message in [
        ("nan", np.full((2, 784), np.nan, np.float32), "NaN or infinite"),
        ("range", np.full((2, 784), 2.5, np.float32), r"pixels range over \[2.5, 2.5\]"),
        ("int16", np.full((2, 784), 7, np.int16), r"pixels range over \[7, 7\]"),
    ]:
        path = tmp_path / f"{name}.pkl.gz"
        with gzip.open(path, "wb") as f:
            pickle.dump(((x, np.zeros(2, int)),) * 3, f)
        with pytest.raises(data.DataError, match=message):
            data.load_pickle(path)


# ------------------------------------------------- pickles as they circulate, and hostile ones


def _three_splits():
    """((x_train, y_train), (x_valid, y_valid), (x_test, y_test)); uint8 train pixels."""
    rng = np.random.default_rng(3)
    x_train = rng.integers(0, 256, (4, 784), dtype=np.uint8)
    x_valid, x_test = (rng.random((n, 784), dtype=np.float32) for n in (3, 2))
    return tuple((x, rng.integers(0, 10, len(x))) for x in (x_train, x_valid, x_test))


def _numpy1_names(blob: bytes) -> bytes:
    """The pickle as numpy 1.x writes it: numpy.core... for numpy._core... (frames dropped)."""
    ops = list(pickletools.genops(blob))
    out = []
    for (op, arg, pos), (_, _, end) in zip(ops, [*ops[1:], (None, None, len(blob))]):
        raw = blob[pos:end]
        if op.name == "FRAME":  # frames are optional, and renaming changes their lengths
            continue
        if op.name == "SHORT_BINUNICODE" and arg.startswith("numpy._core"):
            name = arg.replace("numpy._core", "numpy.core").encode()
            raw = b"\x8c" + bytes([len(name)]) + name
        out.append(raw.replace(b"numpy._core", b"numpy.core") if op.name == "GLOBAL" else raw)
    return b"".join(out)


def _assert_loads_as(path, splits):
    ds = data.load_pickle(path)
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = splits
    want_train = np.concatenate([x_train.astype(np.float32) / 255, x_valid])
    assert ds.x_train.dtype == np.float32 and np.array_equal(ds.x_train, want_train)
    assert np.array_equal(ds.x_test, x_test) and 0 <= ds.x_train.min() < ds.x_train.max() <= 1
    assert np.array_equal(ds.y_train, np.concatenate([y_train, y_valid]))
    assert np.array_equal(ds.y_test, y_test)


@pytest.mark.parametrize("numpy1", [False, True], ids=["numpy2_names", "numpy1_names"])
@pytest.mark.parametrize("protocol", range(6))
def test_pickle_loads_at_every_protocol(tmp_path, protocol, numpy1):
    splits = _three_splits()
    blob = pickle.dumps(splits, protocol=protocol)
    if numpy1:
        blob = _numpy1_names(blob)
        assert b"numpy._core" not in blob and b"numpy.core" in blob
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(blob))
    _assert_loads_as(path, splits)


def test_pickle_with_an_empty_validation_split_loads(tmp_path):
    (train, _, test), empty = _three_splits(), np.zeros((0, 784), np.float32)
    path = tmp_path / "mnist.pkl"  # below protocol 3, b"" pickles as a call of bytes()
    path.write_bytes(pickle.dumps((train, (empty, np.zeros(0, int)), test), protocol=2))
    assert len(data.load_pickle(path).x_train) == len(train[0])


def _py2_array(a: np.ndarray) -> bytes:
    """An array as Python 2's cPickle wrote it at protocol 2: its data in a BINSTRING."""

    def glob(module, name):
        return b"c" + module + b"\n" + name + b"\n"

    def short(s: bytes):  # SHORT_BINSTRING
        return b"U" + bytes([len(s)]) + s

    minus_one = b"J" + struct.pack("<i", -1)
    dtype = (
        glob(b"numpy", b"dtype")
        + short(a.dtype.str[1:].encode())
        + b"K\x00K\x01\x87R"
        + b"(K\x03"
        + short(a.dtype.str[:1].encode())
        + b"NNN"
        + 2 * minus_one
        + b"K\x00tb"
    )
    shape = b"(" + b"".join(b"J" + struct.pack("<i", n) for n in a.shape) + b"t"
    data_ = b"T" + struct.pack("<I", a.nbytes) + a.tobytes()  # BINSTRING: a Python 2 str
    return (glob(b"numpy.core.multiarray", b"_reconstruct") + glob(b"numpy", b"ndarray")
            + b"K\x00\x85" + short(b"b") + b"\x87R"
            + b"(K\x01" + shape + dtype + b"\x89" + data_ + b"tb")  # fmt: skip


def test_python2_pickle_loads(tmp_path):
    splits = _three_splits()
    pairs = b"".join(_py2_array(x) + _py2_array(y) + b"\x86" for x, y in splits)
    blob = b"\x80\x02" + pairs + b"\x87."
    assert {op.name for op, _, _ in pickletools.genops(blob)} >= {"BINSTRING", "GLOBAL"}
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(blob))
    _assert_loads_as(path, splits)


MARKER_CODEC = "jaxnet_test_marker"


@pytest.fixture
def marker(tmp_path):
    """A file that hostile pickles try to create; a codec named MARKER_CODEC creates it too."""
    path = tmp_path / "ran"

    def search(name):
        if name == MARKER_CODEC:
            path.touch()

    codecs.register(search)
    yield path
    codecs.unregister(search)


class _ObjectArray:
    def __reduce__(self):
        return np.ndarray, ((2, 784), "O")


def _hostile(case: str, marker: Path) -> bytes:
    """A hostile or broken pickle; the first three, written out, would create `marker` if run."""
    if case == "os.system":
        return b"cos\nsystem\n(S%r\ntR." % f"touch {shlex.quote(str(marker))}".encode()
    if case == "builtins.eval":
        return b"cbuiltins\neval\n(S%r\ntR." % f"open({str(marker)!r}, 'w').close()".encode()
    if case == "_codecs.encode":  # looking the codec up creates the marker (the fixture)
        return b"c_codecs\nencode\n(Vx\nV%s\ntR." % MARKER_CODEC.encode()
    if case == "object array":
        return pickle.dumps(np.array([marker, "x"], dtype=object), protocol=2)
    if case == "object array, no dtype call":  # ndarray(shape, "O") called directly
        return pickle.dumps(((_ObjectArray(), np.zeros(2, int)),) * 3, protocol=2)
    if case == "truncated":
        return pickle.dumps(_three_splits(), protocol=2)[:-500]
    raise ValueError(case)


HOSTILE = {
    "os.system": "refused to load global os.system",
    "builtins.eval": "refused to load global builtins.eval",
    "_codecs.encode": f"refused _codecs.encode with encoding '{MARKER_CODEC}'",
    "object array": r"refused an object array \(dtype object\)",
    "object array, no dtype call": "pixels have dtype object",
    "truncated": "is truncated or not a pickle",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_pickles_are_refused_before_anything_runs(tmp_path, marker, case):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(_hostile(case, marker)))
    with pytest.raises(data.DataError, match=HOSTILE[case]) as info:
        data.load_pickle(path)
    assert not marker.exists()
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message  # one line, naming the file


def test_hostile_pickles_would_run_under_plain_pickle(marker):
    """The refusals above mean something: plain pickle runs what the loader refuses."""
    with pytest.raises(LookupError):  # the lookup touched the marker, then found no codec
        pickle.loads(_hostile("_codecs.encode", marker))
    assert marker.exists()


def test_npz(tmp_path):
    rng = np.random.default_rng(2)
    arrays = dict(x_train=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), y_train=np.arange(4),
                  x_test=np.zeros((2, 28, 28), np.uint8), y_test=[1, 2])  # fmt: skip
    np.savez(tmp_path / "mnist.npz", **arrays)
    ds = data.load_npz(tmp_path / "mnist.npz")
    assert ds.x_train.shape == (4, 784) and ds.y_test.tolist() == [1, 2]
    np.savez(tmp_path / "bad.npz", x_train=arrays["x_train"])
    with pytest.raises(data.DataError, match="bad.npz: has no array 'y_train'"):
        data.load_npz(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(data.DataError, match="junk.npz: is not a readable"):
        data.load_npz(tmp_path / "junk.npz")


def _write_npz(path: Path) -> bytes:
    arrays = dict(x_train=np.zeros((4, 28, 28), np.uint8), y_train=np.arange(4),
                  x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.arange(2))  # fmt: skip
    np.savez_compressed(path, **arrays)
    return path.read_bytes()


def test_a_truncated_or_bit_flipped_npz_is_refused(tmp_path):
    path = tmp_path / "mnist.npz"
    good = _write_npz(path)
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0x10  # inside the first array's deflate stream
    for broken in (good[: len(good) // 2], bytes(flipped)):
        path.write_bytes(broken)
        with pytest.raises(data.DataError, match=r"mnist.npz: is not a readable .npz.*again"):
            data.load_npz(path)


def test_a_npy_file_is_refused_as_no_npz(tmp_path):
    np.save(tmp_path / "mnist.npy", np.zeros((4, 784), np.uint8))
    with pytest.raises(data.DataError, match=r"mnist.npy: is a single .npy array.*numpy.savez"):
        data.load_npz(tmp_path / "mnist.npy")


def test_load_looks_in_data_dir_then_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    write_idx_set(tmp_path / "cache" / "mnist", n_train=9)
    assert len(data.load("mnist", download_ok=False).x_train) == 9
    write_idx_set(tmp_path / "mine", n_train=4)
    assert len(data.load("mnist", tmp_path / "mine", download_ok=False).x_train) == 4
    (tmp_path / "pkl").mkdir()
    _mnist_pickle(tmp_path / "pkl" / "mnist.pkl.gz")
    assert len(data.load("mnist", tmp_path / "pkl", download_ok=False).x_train) == 8


def test_offline_error_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(data.DataError, match=r"mnist not found in .*Put the four IDX files"):
        data.load("mnist", download_ok=False)
    with pytest.raises(data.DataError, match="unknown dataset 'cifar'"):
        data.load("cifar")


def test_digits_and_synthetic_need_no_files():
    digits = data.load("digits")
    assert digits.x_train.shape[1] == 64 and len(digits.x_train) + len(digits.x_test) == 1797
    assert set(np.unique(digits.y_test)) == set(range(10))
    synthetic = data.load("synthetic")
    assert synthetic.x_train.shape == (64, 1000) and synthetic.y_train.shape == (64, 10)


def test_normalizer_uses_training_statistics():
    x_train = np.array([[0.0, 2.0], [4.0, 6.0]])
    norm = data.fit_normalizer(x_train)
    assert norm.mean == 3.0 and np.isclose(norm(x_train).std(), 1.0)
    assert np.allclose(norm(np.array([[3.0]])), 0.0)  # the test set is shifted by train stats
    (x, y), (xv, yv) = data.validation_split(np.arange(10)[:, None], np.arange(10), 0.2)
    assert len(xv) == 2 and sorted([*y, *yv]) == list(range(10))


# ------------------------------------------------------------------ the downloader


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    httpd.shutdown()
    thread.join()


def _sha(b):
    return hashlib.sha256(b).hexdigest()


def test_download_good_file(server, tmp_path):
    url, root = server
    (root / "f.gz").write_bytes(b"payload")
    dest = data.download(url + "f.gz", tmp_path / "cache" / "f.gz", _sha(b"payload"))
    assert dest.read_bytes() == b"payload"
    assert [p.name for p in dest.parent.iterdir()] == ["f.gz"]  # no temporary left behind


def test_download_wrong_hash_keeps_nothing(server, tmp_path):
    url, root = server
    (root / "f.gz").write_bytes(b"tampered")
    with pytest.raises(data.DataError, match="does not match the published"):
        data.download(url + "f.gz", tmp_path / "cache" / "f.gz", _sha(b"payload"))
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_404_and_truncated_body(server, tmp_path):
    url, root = server
    with pytest.raises(data.DataError, match="404"):
        data.download(url + "missing.gz", tmp_path / "c" / "x", _sha(b""))

    class Truncating(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # claims 1000 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Truncating)
    thread = threading.Thread(target=httpd.handle_request, daemon=True)
    thread.start()
    with pytest.raises(data.DataError, match="download failed|does not match"):
        data.download(f"http://127.0.0.1:{httpd.server_address[1]}/x", tmp_path / "c" / "y",
                      _sha(b"0123456789" + bytes(990)))  # fmt: skip
    thread.join()
    httpd.server_close()
    assert not (tmp_path / "c" / "y").exists()


def test_load_downloads_into_cache_from_mirror(server, tmp_path, monkeypatch):
    url, root = server
    write_idx_set(root, n_train=6)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    hashes = {f.name: _sha(f.read_bytes()) for f in root.iterdir()}
    monkeypatch.setitem(data.SHA256, "mnist", hashes)
    ds = data.load("mnist", mirrors=["http://127.0.0.1:9/dead/", url])  # first mirror fails
    assert len(ds.x_train) == 6
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(hashes)


def test_published_hashes_are_wellformed():
    for name in ("mnist", "fashion_mnist"):
        assert sorted(data.SHA256[name]) == sorted(s + ".gz" for s in data.IDX_FILES.values())
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in data.SHA256[name].values())


FASHION = data.find_idx_files(data.DEBIAN_FASHION_MNIST)


@pytest.mark.skipif(FASHION is None, reason="Debian's dataset-fashion-mnist is not installed "
                    "(apt-get install dataset-fashion-mnist)")  # fmt: skip
def test_debian_fashion_mnist_loads():
    ds = data.load_idx_folder(data.DEBIAN_FASHION_MNIST, "fashion_mnist")
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
