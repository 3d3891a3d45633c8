"""Loaders refuse every bad file with a message naming it; the downloader checks SHA-256."""

import functools
import gzip
import hashlib
import http.server
import pickle
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from jaxnet import data


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
    nan = tmp_path / "c.pkl.gz"
    x = np.full((2, 784), np.nan, np.float32)
    with gzip.open(nan, "wb") as f:
        pickle.dump(((x, np.zeros(2, int)),) * 3, f)
    with pytest.raises(data.DataError, match="NaN or infinite"):
        data.load_pickle(nan)


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
