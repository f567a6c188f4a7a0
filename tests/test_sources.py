"""Tests for debiaskit.data.sources: real archives, standard on-disk formats, downloads."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from debiaskit.data import sources
from debiaskit.data.sources import ImageSource, load_source, resolve_data_dir, sha256_file
from debiaskit.errors import ConfigError, DataError
from parity import DATA_DIR as REAL_DIR  # the real archives (tests/parity/__init__.py)
from parity import require_data


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """No cached sources and no DEBIASKIT_DATA leak into or out of a test."""
    monkeypatch.delenv("DEBIASKIT_DATA", raising=False)
    load_source.cache_clear()
    yield
    load_source.cache_clear()


# --------------------------------------------------------------------------- writers of tiny data


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    """Write ``arr`` (uint8) as an idx file, gzip-compressed when ``gz``."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    payload = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def tiny_mnist(seed=0, n_train=7, n_test=4):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train).astype(np.int64),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test).astype(np.int64),
    }


IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def write_mnist_idx(directory: Path, arrays: dict, gz=False) -> dict:
    return {key: write_idx(directory / IDX_NAMES[key], arrays[key], gz=gz) for key in IDX_NAMES}


class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 ``str`` (BINSTRING), like the official CIFAR files."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def write_cifar_batch(path: Path, data: np.ndarray, labels, py2_style=True) -> None:
    batch = {"batch_label": "tiny batch", "data": data, "labels": [int(v) for v in labels],
             "filenames": [f"img_{i}.png" for i in range(len(labels))]}
    if py2_style:  # byte-for-byte what Python 2 cPickle wrote, numpy 1 module name included
        buf = io.BytesIO()
        _Py2Pickler(buf, protocol=2).dump(batch)
        raw = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    else:  # a Python 3 pickle with bytes keys
        raw = pickle.dumps({k.encode(): v for k, v in batch.items()}, protocol=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)


def planes_to_nhwc(data: np.ndarray) -> np.ndarray:
    """Independent reference: stack the R, G and B planes of each 3072-byte row."""
    n = len(data)
    r, g, b = (data[:, i * 1024:(i + 1) * 1024].reshape(n, 32, 32) for i in range(3))
    return np.stack([r, g, b], axis=-1)


def write_tiny_cifar(directory: Path, n_per_batch=3, py2_style=True):
    rng = np.random.default_rng(1)
    datas, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        lab = rng.integers(0, 10, n_per_batch)
        if name == "data_batch_1":  # image 0: pure red at (row 3, col 5), pure blue at (31, 0)
            data[0, [3 * 32 + 5, 1024 + 3 * 32 + 5, 2048 + 3 * 32 + 5]] = [255, 0, 0]
            data[0, [31 * 32, 1024 + 31 * 32, 2048 + 31 * 32]] = [0, 0, 255]
        write_cifar_batch(directory / name, data, lab, py2_style=py2_style)
        datas.append(data)
        labels.append(lab)
    return datas, labels


# --------------------------------------------------------------------------- the real archives


def test_real_mnist_archive():
    require_data("mnist.npz")
    src = load_source("mnist", REAL_DIR)
    assert isinstance(src, ImageSource) and src.name == "mnist"
    assert src.x_train.shape == (60000, 28, 28) and src.x_test.shape == (10000, 28, 28)
    assert src.x_train.dtype == np.uint8 and src.x_test.dtype == np.uint8
    assert src.y_train.shape == (60000,) and src.y_test.shape == (10000,)
    assert src.y_train.dtype == np.int64 and src.y_test.dtype == np.int64
    assert src.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert src.y_test[:5].tolist() == [7, 2, 1, 0, 4]
    assert src.checksum == sha256_file(REAL_DIR / "mnist.npz") == sources.NPZ_SHA256["mnist.npz"]
    assert src.origin == f"npz:{(REAL_DIR / 'mnist.npz').resolve()}"
    assert src.extras == {}
    # read-only and cached: the second call is the same object
    assert not src.x_train.flags.writeable and not src.y_test.flags.writeable
    with pytest.raises(ValueError):
        src.x_train[0, 0, 0] = 1
    assert load_source("mnist", REAL_DIR) is src
    assert "60000" in repr(src)


@pytest.mark.slow
def test_real_cifar10_archive():
    require_data("cifar10.npz")
    src = load_source("cifar10", REAL_DIR)
    assert src.x_train.shape == (50000, 32, 32, 3) and src.x_test.shape == (10000, 32, 32, 3)
    assert src.x_train.dtype == np.uint8 and src.y_train.dtype == np.int64
    lossless = src.extras["test_lossless"]
    assert lossless.dtype == np.bool_ and lossless.shape == (10000,) and lossless.sum() == 1000
    assert np.bincount(src.y_train, minlength=10).tolist() == [5000] * 10
    assert src.checksum == sources.NPZ_SHA256["cifar10.npz"]
    assert not lossless.flags.writeable


def test_real_archive_through_env_var(monkeypatch, tmp_path):
    require_data("mnist.npz")
    # env var picks the directory; a link keeps the real file and its SHA256SUMS next to each other
    (tmp_path / "mnist.npz").symlink_to(REAL_DIR / "mnist.npz")
    monkeypatch.setenv("DEBIASKIT_DATA", str(tmp_path))
    src = load_source("mnist")
    assert src.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert src.checksum == sources.NPZ_SHA256["mnist.npz"]  # verified against the built-in value


# --------------------------------------------------------------------------- data directory


def test_resolve_data_dir_order(monkeypatch, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.setenv("DEBIASKIT_DATA", str(b))
    assert resolve_data_dir(a) == a.resolve()
    assert resolve_data_dir() == b.resolve()
    monkeypatch.delenv("DEBIASKIT_DATA")
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataError, match=r"\.cache/debiaskit.*does not exist.*DEBIASKIT_DATA"):
        resolve_data_dir()
    assert resolve_data_dir(download=True) == (tmp_path / ".cache" / "debiaskit").resolve()


def test_missing_dir_and_file_as_dir(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="does not exist") as info:
        load_source("mnist", missing)
    assert str(missing) in str(info.value) and "--data-dir" in str(info.value)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        load_source("mnist", tmp_path / "afile")


def test_unknown_source_name(tmp_path):
    with pytest.raises(ConfigError, match="mnist") as info:
        load_source("svhn", tmp_path)
    assert "cifar10" in str(info.value) and "'svhn'" in str(info.value)


def test_nothing_found(tmp_path):
    with pytest.raises(DataError) as info:
        load_source("mnist", tmp_path)
    msg = str(info.value)
    assert "no MNIST" in msg and "mnist.npz" in msg and "MNIST/raw" in msg and "--download" in msg
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"x")
    with pytest.raises(DataError, match="no CIFAR-10.*cifar10.npz.*tar xzf"):
        load_source("cifar10", tmp_path)


# --------------------------------------------------------------------------- npz archives


def _sums(directory: Path, **entries):
    (directory / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in entries.items()))


def test_npz_random_bytes_fail_builtin_checksum(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(os.urandom(2048))
    with pytest.raises(DataError, match="corrupt or altered") as info:
        load_source("mnist", tmp_path)
    assert str(tmp_path / "mnist.npz") in str(info.value) and "built-in" in str(info.value)
    assert "\n" not in str(info.value)


def test_npz_listed_in_sha256sums(tmp_path):
    arrays = tiny_mnist()
    path = tmp_path / "mnist.npz"
    np.savez_compressed(path, **arrays)
    _sums(tmp_path, **{"mnist.npz": sha256_file(path), "other.npz": "0" * 64})
    src = load_source("mnist", tmp_path)
    for key, value in arrays.items():
        np.testing.assert_array_equal(getattr(src, key), value)
    assert src.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert src.origin == f"npz:{path.resolve()}"

    # the same archive with altered content no longer matches its SHA256SUMS entry
    load_source.cache_clear()
    arrays["x_train"][0, 0, 0] ^= 1
    np.savez_compressed(path, **arrays)
    with pytest.raises(DataError, match="corrupt or altered.*re-copy") as info:
        load_source("mnist", tmp_path)
    assert str(path) in str(info.value) and "SHA256SUMS" in str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "wrong_keys", "wrong_dtype", "bad_labels", "length_mismatch"])
def test_npz_with_valid_checksum_but_bad_content(tmp_path, damage):
    arrays = tiny_mnist()
    path = tmp_path / "mnist.npz"
    if damage == "wrong_keys":
        arrays["images"] = arrays.pop("x_train")
    elif damage == "wrong_dtype":
        arrays["x_train"] = arrays["x_train"].astype(np.float32)
    elif damage == "bad_labels":
        arrays["y_test"][0] = 10
    elif damage == "length_mismatch":
        arrays["y_train"] = arrays["y_train"][:-1]
    np.savez_compressed(path, **arrays)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    _sums(tmp_path, **{"mnist.npz": sha256_file(path)})
    with pytest.raises(DataError) as info:
        load_source("mnist", tmp_path)
    msg = str(info.value)
    assert str(path) in msg and "re-copy" in msg and "\n" not in msg


def test_cifar_npz_test_lossless_validated(tmp_path):
    rng = np.random.default_rng(2)
    arrays = {
        "x_train": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), "y_train": np.arange(4),
        "x_test": rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8), "y_test": np.arange(3),
        "test_lossless": np.array([True, False, True]),
    }
    path = tmp_path / "cifar10.npz"
    np.savez_compressed(path, **arrays)
    _sums(tmp_path, **{"cifar10.npz": sha256_file(path)})
    src = load_source("cifar10", tmp_path)
    assert src.extras["test_lossless"].tolist() == [True, False, True]
    np.testing.assert_array_equal(src.x_test, arrays["x_test"])

    load_source.cache_clear()
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if k != "test_lossless"})
    _sums(tmp_path, **{"cifar10.npz": sha256_file(path)})
    with pytest.raises(DataError, match="test_lossless"):
        load_source("cifar10", tmp_path)


# --------------------------------------------------------------------------- MNIST idx files


@pytest.mark.parametrize("layout,gz", [(".", False), (".", True), ("MNIST/raw", False), ("MNIST/raw", True)])
def test_idx_round_trip(tmp_path, layout, gz):
    arrays = tiny_mnist(seed=3)
    write_mnist_idx(tmp_path / layout, arrays, gz=gz)
    src = load_source("mnist", tmp_path)
    for key, value in arrays.items():
        got = getattr(src, key)
        np.testing.assert_array_equal(got, value)
        assert got.dtype == value.dtype and not got.flags.writeable
    assert src.origin == f"idx:{(tmp_path / layout).resolve()}"
    assert len(src.checksum) == 64 and src.checksum == sources._arrays_sha256(arrays)


def test_idx_checksum_depends_on_content(tmp_path):
    a, b = tiny_mnist(seed=4), tiny_mnist(seed=4)
    b["y_test"][0] = (b["y_test"][0] + 1) % 10
    write_mnist_idx(tmp_path / "a", a)
    write_mnist_idx(tmp_path / "b", b, gz=True)
    write_mnist_idx(tmp_path / "c", a, gz=True)
    ca, cb, cc = (load_source("mnist", tmp_path / d).checksum for d in "abc")
    assert ca != cb and ca == cc


def test_idx_errors(tmp_path):
    arrays = tiny_mnist(seed=5)
    files = write_mnist_idx(tmp_path, arrays)

    # truncated image file
    good = files["x_train"].read_bytes()
    files["x_train"].write_bytes(good[:-10])
    with pytest.raises(DataError, match="truncated") as info:
        load_source("mnist", tmp_path)
    assert str(files["x_train"]) in str(info.value)
    files["x_train"].write_bytes(good)

    # a label file where the image file should be: magic 2049 instead of 2051
    shutil.copy(files["y_train"], files["x_train"])
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        load_source("mnist", tmp_path)
    files["x_train"].write_bytes(good)

    # label count does not match image count
    write_idx(files["y_test"], arrays["y_test"][:-1])
    with pytest.raises(DataError, match="4 images but t10k-labels-idx1-ubyte has 3 labels"):
        load_source("mnist", tmp_path)
    write_idx(files["y_test"], arrays["y_test"])

    # a broken gzip
    files["y_test"].unlink()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz"):
        load_source("mnist", tmp_path)

    # an incomplete set
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="incomplete MNIST idx files.*t10k-labels-idx1-ubyte"):
        load_source("mnist", tmp_path)


def test_read_idx_generic(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "cube", arr, gz=True)
    np.testing.assert_array_equal(sources.read_idx(path), arr)
    (tmp_path / "int32").write_bytes(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 1) + b"\0\0\0\1")
    with pytest.raises(DataError, match="unsigned-byte"):
        sources.read_idx(tmp_path / "int32")


# --------------------------------------------------------------------------- CIFAR-10 pickles


@pytest.mark.parametrize("py2_style,layout", [(True, "cifar-10-batches-py"), (False, "cifar-10-batches-py"), (True, ".")])
def test_cifar_pickle_round_trip(tmp_path, py2_style, layout):
    datas, labels = write_tiny_cifar(tmp_path / layout, py2_style=py2_style)
    src = load_source("cifar10", tmp_path)
    assert src.x_train.shape == (15, 32, 32, 3) and src.x_test.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(src.x_train, np.concatenate([planes_to_nhwc(d) for d in datas[:5]]))
    np.testing.assert_array_equal(src.y_train, np.concatenate(labels[:5]))
    np.testing.assert_array_equal(src.x_test, planes_to_nhwc(datas[5]))
    np.testing.assert_array_equal(src.y_test, labels[5])
    assert src.y_train.dtype == np.int64 and src.x_train.dtype == np.uint8
    assert src.x_train[0, 3, 5].tolist() == [255, 0, 0]  # red stays red
    assert src.x_train[0, 31, 0].tolist() == [0, 0, 255]  # blue stays blue
    assert src.origin == f"cifar-pickle:{(tmp_path / layout).resolve()}"
    assert src.checksum == sources._arrays_sha256(
        {"x_train": src.x_train, "y_train": src.y_train, "x_test": src.x_test, "y_test": src.y_test})


def test_cifar_pickle_errors(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_tiny_cifar(folder)

    # a pickle that would call arbitrary code is refused, not executed
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": os.path.join, b"labels": []}))
    with pytest.raises(DataError, match="data_batch_3.*refusing to load global"):
        load_source("cifar10", tmp_path)

    # truncated
    write_cifar_batch(folder / "data_batch_3", np.zeros((2, 3072), np.uint8), [0, 1])
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="data_batch_3.*re-copy"):
        load_source("cifar10", tmp_path)

    # wrong row length
    write_cifar_batch(folder / "data_batch_3", np.zeros((2, 3000), np.uint8), [0, 1])
    with pytest.raises(DataError, match=r"data_batch_3.*\(2, 3000\)"):
        load_source("cifar10", tmp_path)

    # missing batch
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="incomplete CIFAR-10 batches.*data_batch_3"):
        load_source("cifar10", tmp_path)


# --------------------------------------------------------------------------- downloads (loopback only)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path, monkeypatch):
    """A loopback HTTP server serving the files in the returned folder; yields (folder, base url, log)."""
    root = tmp_path / "served"
    root.mkdir()
    log = []

    class Handler(_QuietHandler):
        def do_GET(self):
            log.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def tv_mnist(monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    return torchvision.datasets.MNIST


def _serve_mnist(monkeypatch, tv_mnist, served: Path, url: str, arrays: dict):
    paths = write_mnist_idx(served, arrays, gz=True)
    resources = [(p.name, hashlib.md5(p.read_bytes()).hexdigest()) for p in paths.values()]
    monkeypatch.setattr(tv_mnist, "mirrors", [url])
    monkeypatch.setattr(tv_mnist, "resources", resources)


def test_download_mnist_from_loopback(tmp_path, monkeypatch, http_root, tv_mnist):
    served, url, log = http_root
    arrays = tiny_mnist(seed=6, n_train=9, n_test=5)
    _serve_mnist(monkeypatch, tv_mnist, served, url, arrays)
    target = tmp_path / "new" / "data"  # does not exist yet: download creates it
    src = load_source("mnist", target, download=True)
    for key, value in arrays.items():
        np.testing.assert_array_equal(getattr(src, key), value)
    raw = (target / "MNIST" / "raw").resolve()
    assert src.origin == f"torchvision-download:{raw}"
    assert {p.rsplit("/", 1)[-1] for p in log} >= {f"{n}.gz" for n in IDX_NAMES.values()}
    assert (raw / "train-images-idx3-ubyte").is_file()

    # once the files are there, no further download happens (step 2 wins over step 3)
    load_source.cache_clear()
    n_requests = len(log)
    again = load_source("mnist", target, download=True)
    assert len(log) == n_requests and again.origin == f"idx:{raw}" and again.checksum == src.checksum


def test_download_not_used_when_npz_present(tmp_path, monkeypatch, http_root, tv_mnist):
    served, url, log = http_root
    monkeypatch.setattr(tv_mnist, "mirrors", [url])
    arrays = tiny_mnist(seed=7)
    np.savez_compressed(tmp_path / "mnist.npz", **arrays)
    _sums(tmp_path, **{"mnist.npz": sha256_file(tmp_path / "mnist.npz")})
    src = load_source("mnist", tmp_path, download=True)
    assert src.origin.startswith("npz:") and log == []


def test_download_failure_is_a_data_error(tmp_path, monkeypatch, http_root, tv_mnist):
    served, url, log = http_root  # serves an empty folder: every request is a 404
    monkeypatch.setattr(tv_mnist, "mirrors", [url])
    target = tmp_path / "dl"
    with pytest.raises(DataError, match="downloading MNIST into .* failed") as info:
        load_source("mnist", target, download=True)
    msg = str(info.value)
    assert "404" in msg and "copy" in msg and str(target) in msg and "\n" not in msg
    assert log  # the server was really asked


def test_download_md5_mismatch_is_a_data_error(tmp_path, monkeypatch, http_root, tv_mnist):
    served, url, log = http_root
    _serve_mnist(monkeypatch, tv_mnist, served, url, tiny_mnist(seed=8))
    bad = [(name, "0" * 32) for name, _ in tv_mnist.resources]
    monkeypatch.setattr(tv_mnist, "resources", bad)
    with pytest.raises(DataError, match="failed.*copy the MNIST files"):
        load_source("mnist", tmp_path / "dl2", download=True)
