"""Raw image sources: MNIST and CIFAR-10 as plain uint8 arrays.

This module only *reads* images and labels from a data directory; it knows nothing about
bias protocols (those build biased datasets on top of an :class:`ImageSource`).

The data directory is chosen by :func:`resolve_data_dir` (explicit argument, else the
``DEBIASKIT_DATA`` environment variable, else ``~/.cache/debiaskit``). Inside it, each
source is looked up in this order, and the first hit wins:

1. a numpy archive (``mnist.npz`` / ``cifar10.npz``), whose sha256 is verified against the
   ``SHA256SUMS`` file next to it when that file lists it, else against built-in values;
2. the standard formats users already have: MNIST idx files (plain or ``.gz``, directly in
   the directory or in torchvision's ``MNIST/raw/``), and the CIFAR-10 python pickles in
   ``cifar-10-batches-py/``;
3. with ``download=True`` only: a download through torchvision, which writes the standard
   formats of step 2, then read with the same readers.

Every failure caused by missing, truncated or altered files is a one-line
:class:`~debiaskit.errors.DataError` that names the file and says what to do.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pathlib
import pickle
import re
import struct
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from debiaskit.errors import DataError, unknown_name

__all__ = [
    "ImageSource",
    "SOURCES",
    "NPZ_SHA256",
    "resolve_data_dir",
    "load_source",
    "sha256_file",
    "read_idx",
    "read_cifar_batch",
]

ENV_VAR = "DEBIASKIT_DATA"
DEFAULT_DATA_DIR = pathlib.Path("~/.cache/debiaskit")

#: sha256 of the reference archives, used when no ``SHA256SUMS`` file lists them.
NPZ_SHA256 = {
    "mnist.npz": "094b831e432331f1f6d6829ab9bfff4551410a81e1f816c9cce482d3e9b3ba57",
    "cifar10.npz": "db83a0c3958facb6e940281ec04292f1b23ea924bc0aa4fdb9250309938bc98a",
}

NUM_CLASSES = 10
MNIST_IDX_FILES = {
    "x_train": ("train-images-idx3-ubyte", 2051),
    "y_train": ("train-labels-idx1-ubyte", 2049),
    "x_test": ("t10k-images-idx3-ubyte", 2051),
    "y_test": ("t10k-labels-idx1-ubyte", 2049),
}
CIFAR_DIRNAME = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_TARBALL = "cifar-10-python.tar.gz"
_ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True, eq=False)
class ImageSource:
    """Images and labels of one raw source, exactly as read from disk.

    Arrays are read-only (shared through an in-process cache): copy before modifying.
    ``x_*`` are uint8, ``(N, H, W)`` for MNIST and ``(N, H, W, 3)`` (RGB) for CIFAR-10;
    ``y_*`` are int64 ``(N,)``. ``origin`` says which file or folder was read, ``checksum``
    is the sha256 of the archive file (npz) or of the arrays (other formats), and
    ``extras`` holds optional arrays such as ``test_lossless`` from ``cifar10.npz``.
    Equality is identity (comparing arrays element-wise would be ambiguous).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    origin: str
    checksum: str
    extras: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        extras = ", ".join(f"{k}{tuple(np.shape(v))}" for k, v in self.extras.items())
        return (
            f"ImageSource(name={self.name!r}, x_train={self.x_train.shape}, "
            f"x_test={self.x_test.shape}, origin={self.origin!r}, "
            f"checksum={self.checksum[:12]}..., extras=[{extras}])"
        )


def _make_source(name, arrays, origin, checksum, extras=None) -> ImageSource:
    """Freeze the arrays (read-only) and build the :class:`ImageSource`."""
    extras = dict(extras or {})
    for arr in list(arrays.values()) + list(extras.values()):
        arr.setflags(write=False)
    return ImageSource(
        name=name,
        x_train=arrays["x_train"],
        y_train=arrays["y_train"],
        x_test=arrays["x_test"],
        y_test=arrays["y_test"],
        origin=origin,
        checksum=checksum,
        extras=extras,
    )


# --------------------------------------------------------------------------- helpers


def _one_line(exc: BaseException, limit: int = 240) -> str:
    """Render an exception as a short single line (type and squashed message)."""
    text = re.sub(r"\s+", " ", str(exc)).strip()
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def sha256_file(path) -> str:
    """Return the sha256 hex digest of the bytes of the file at ``path`` (read in 1 MiB chunks)."""
    path = pathlib.Path(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"cannot read {path} ({_one_line(exc)}); check that it exists and is readable") from None
    return digest.hexdigest()


def _arrays_sha256(arrays: dict) -> str:
    """sha256 over x_train, y_train, x_test, y_test: each one's name, dtype, shape, then its bytes."""
    digest = hashlib.sha256()
    for key in _ARRAY_KEYS:
        arr = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{arr.dtype.str}:{arr.shape}\n".encode())
        digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def _read_sha256sums(directory: pathlib.Path) -> dict:
    """Read ``directory/SHA256SUMS`` (``<hex>  <name>`` lines, as written by sha256sum) into
    {file name: hex}; an absent file gives {} and lines that do not parse are ignored."""
    path = directory / "SHA256SUMS"
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"cannot read {path} ({_one_line(exc)}); fix its permissions or remove it") from None
    sums = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\s*([0-9a-fA-F]{64})\s+\*?(.+?)\s*", line)
        if match:
            sums[pathlib.PurePath(match.group(2)).name] = match.group(1).lower()
    return sums


def _check_labels(labels: np.ndarray, where: str, what: str) -> np.ndarray:
    """Validate integer class labels in [0, 10) and return them as int64."""
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{where}: {what} has dtype {labels.dtype} and shape {labels.shape}, expected 1-d integer labels; re-copy it"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(
            f"{where}: {what} holds labels outside 0..{NUM_CLASSES - 1} "
            f"(min {labels.min()}, max {labels.max()}); re-copy it"
        )
    return labels.astype(np.int64, copy=False)


# --------------------------------------------------------------------------- npz archives


def _load_npz(path: pathlib.Path, name: str, image_shape: tuple, extra_keys: dict) -> ImageSource:
    """Read a verified npz archive: check its sha256 (SHA256SUMS next to it, else the built-in
    value), then its keys, dtypes and shapes. ``image_shape`` is the per-image shape;
    ``extra_keys`` maps optional-extra key -> required dtype (one entry per test image)."""
    sums = _read_sha256sums(path.parent)
    if path.name in sums:
        expected, listed_in = sums[path.name], f"{path.parent / 'SHA256SUMS'}"
    else:
        expected, listed_in = NPZ_SHA256[path.name], "the built-in checksum"
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(
            f"{path} is corrupt or altered: sha256 {actual[:16]}... does not match {expected[:16]}... "
            f"from {listed_in}; re-copy the file"
        )

    arrays, extras = {}, {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in (*_ARRAY_KEYS, *extra_keys) if k not in archive.files]
            if missing:
                raise DataError(
                    f"{path} lacks the array(s) {', '.join(missing)} (it holds {', '.join(archive.files) or 'nothing'}); "
                    f"it is not a debiaskit {name} archive: re-copy it"
                )
            for key in _ARRAY_KEYS:
                arrays[key] = archive[key]
            for key in extra_keys:
                extras[key] = archive[key]
    except DataError:
        raise
    except Exception as exc:  # zipfile, zlib, numpy format and OS errors alike
        raise DataError(f"{path} cannot be read as an npz archive ({_one_line(exc)}); re-copy the file") from None

    where = str(path)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 1 + len(image_shape) or x.shape[1:] != image_shape:
            raise DataError(
                f"{where}: x_{split} has dtype {x.dtype} and shape {x.shape}, expected uint8 (N, "
                f"{', '.join(map(str, image_shape))}); re-copy the file"
            )
        arrays[f"y_{split}"] = y = _check_labels(y, where, f"y_{split}")
        if len(y) != len(x):
            raise DataError(f"{where}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels; re-copy the file")
    for key, dtype in extra_keys.items():
        value = extras[key]
        if value.dtype != dtype or value.shape != (len(arrays["x_test"]),):
            raise DataError(
                f"{where}: {key} has dtype {value.dtype} and shape {value.shape}, expected {np.dtype(dtype)} "
                f"({len(arrays['x_test'])},); re-copy the file"
            )
    return _make_source(name, arrays, f"npz:{path}", actual, extras)


# --------------------------------------------------------------------------- MNIST idx files

_IDX_UBYTE = 0x08


def read_idx(path, expected_magic: int | None = None) -> np.ndarray:
    """Read one idx file (plain, or gzip when the name ends in ``.gz``) of unsigned bytes.

    The header is two zero bytes, a type byte (0x08 = ubyte), the number of dimensions, then
    one big-endian uint32 per dimension (so the magic number is 2051 for MNIST images and
    2049 for labels). Returns a read-only uint8 array of the header's shape; a wrong magic,
    a truncated file or trailing bytes raise :class:`DataError`.
    """
    path = pathlib.Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path} ({_one_line(exc)}); re-copy the file") from None

    if len(raw) < 4:
        raise DataError(f"{path} is too short to be an idx file ({len(raw)} bytes); re-copy the file")
    magic = struct.unpack(">I", raw[:4])[0]
    if expected_magic is not None and magic != expected_magic:
        raise DataError(
            f"{path} has idx magic number {magic}, expected {expected_magic}; "
            f"it is not the right MNIST file (or is corrupt): re-copy it"
        )
    if raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] == 0:
        raise DataError(f"{path} is not an unsigned-byte idx file (magic {magic}); re-copy the file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its idx header; re-copy the file")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(
            f"{path} is truncated or has trailing bytes: its header says {'x'.join(map(str, dims))} = "
            f"{expected} bytes of data but it holds {len(raw) - header}; re-copy the file"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx_set(directory: pathlib.Path):
    """Locate the four MNIST idx files (plain preferred over ``.gz``) in ``directory``.

    Returns ({key: path} of those found, [base names missing])."""
    found, missing = {}, []
    for key, (base, _magic) in MNIST_IDX_FILES.items():
        for candidate in (directory / base, directory / f"{base}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(base)
    return found, missing


def _read_mnist_idx(files: dict, origin: str) -> ImageSource:
    """Read and cross-check the four MNIST idx files (28x28 images, one label per image)."""
    arrays = {}
    for key, path in files.items():
        arrays[key] = read_idx(path, MNIST_IDX_FILES[key][1])
    for split in ("train", "test"):
        x_path, y_path = files[f"x_{split}"], files[f"y_{split}"]
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{x_path} holds images of shape {x.shape[1:]}, expected 28x28 MNIST images; re-copy it")
        if y.ndim != 1:
            raise DataError(f"{y_path} holds a {y.ndim}-d array, expected 1-d labels; re-copy it")
        if len(x) != len(y):
            raise DataError(
                f"{x_path} has {len(x)} images but {y_path.name} has {len(y)} labels; "
                f"the idx files do not belong together: re-copy them"
            )
        arrays[f"y_{split}"] = _check_labels(y, str(y_path), "the label file")
    return _make_source("mnist", arrays, origin, _arrays_sha256(arrays))


# --------------------------------------------------------------------------- CIFAR-10 pickles


def _numpy_reconstruct_globals() -> dict:
    """The few numpy callables a pickled ndarray needs, under both numpy 1 and 2 module names."""
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    import codecs

    table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = reconstruct
        table[(module, "scalar")] = scalar
    return table


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that only builds plain containers and numpy arrays (never runs other code)."""

    _allowed = _numpy_reconstruct_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def read_cifar_batch(path):
    """Read one CIFAR-10 python batch (a pickled dict with ``b"data"``: (N, 3072) uint8 rows
    of 1024 red, 1024 green, then 1024 blue bytes, and ``b"labels"``: N ints).

    Returns (images (N, 32, 32, 3) uint8 in RGB channel order, labels (N,) int64). The
    pickle is read with a restricted unpickler that accepts only numpy arrays and builtins.
    """
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as fh:
            batch = _BatchUnpickler(fh, encoding="bytes").load()
    except OSError as exc:
        raise DataError(f"cannot read {path} ({_one_line(exc)}); re-copy the file") from None
    except Exception as exc:  # truncated or foreign pickles
        raise DataError(
            f"{path} is not a readable CIFAR-10 python batch ({_one_line(exc)}); re-copy the file"
        ) from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, expected a CIFAR-10 batch dict; re-copy the file")

    def get(key):
        for k in (key.encode(), key):
            if k in batch:
                return batch[k]
        raise DataError(f"{path} has no {key!r} entry; it is not a CIFAR-10 python batch: re-copy it")

    try:
        data = np.asarray(get("data"))
        labels = np.asarray(get("labels"))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path} holds malformed data ({_one_line(exc)}); re-copy the file") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path}: data has dtype {data.dtype} and shape {data.shape}, expected uint8 (N, 3072); re-copy the file"
        )
    labels = _check_labels(labels, str(path), "labels")
    if len(labels) != len(data):
        raise DataError(f"{path} has {len(data)} images but {len(labels)} labels; re-copy the file")
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def _find_cifar_set(directory: pathlib.Path):
    """Locate data_batch_1..5 and test_batch in ``directory``: ({name: path}, [missing names])."""
    found, missing = {}, []
    for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
        if (directory / name).is_file():
            found[name] = directory / name
        else:
            missing.append(name)
    return found, missing


def _read_cifar_pickles(files: dict, origin: str) -> ImageSource:
    """Read the five training batches (in order) and the test batch into one source."""
    train = [read_cifar_batch(files[name]) for name in CIFAR_TRAIN_BATCHES]
    x_test, y_test = read_cifar_batch(files[CIFAR_TEST_BATCH])
    arrays = {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": x_test,
        "y_test": y_test,
    }
    return _make_source("cifar10", arrays, origin, _arrays_sha256(arrays))


# --------------------------------------------------------------------------- downloads


def _torchvision_download(label: str, dataset_cls_name: str, root: pathlib.Path) -> None:
    """Have ``torchvision.datasets.<dataset_cls_name>(root, train=True, download=True)`` fetch
    the standard files into ``root``; any failure becomes a one-line DataError."""
    advice = f"copy the {label} files into {root} instead (see the data README)"
    try:
        import torchvision.datasets as tvd
    except Exception as exc:
        raise DataError(f"cannot download {label}: torchvision does not import ({_one_line(exc)}); {advice}") from None
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create data directory {root} ({_one_line(exc)}); pass a writable --data-dir") from None
    try:
        getattr(tvd, dataset_cls_name)(root=str(root), train=True, download=True)
    except Exception as exc:  # URLError, HTTPError, RuntimeError from md5 checks, OSError, ...
        raise DataError(f"downloading {label} into {root} failed ({_one_line(exc)}); {advice}") from None


# --------------------------------------------------------------------------- the two sources


@dataclass(frozen=True)
class _Layout:
    """Where and how one source is stored: its npz archive, its standard on-disk format
    (the folders to look in, how to find and read the files) and its torchvision class."""

    name: str
    label: str
    files: str
    npz: str
    image_shape: tuple
    npz_extras: dict
    folders: Callable[[pathlib.Path], tuple]
    find: Callable[[pathlib.Path], tuple]
    read: Callable[[dict, str], ImageSource]
    origin: str
    torchvision_class: str
    download_folder: Callable[[pathlib.Path], pathlib.Path]
    expected: str
    extra_hint: Callable[[pathlib.Path], str] = lambda root: ""


def _load(layout: _Layout, root: pathlib.Path, download: bool) -> ImageSource:
    """The source from ``root``: the npz archive, else the standard files in one of the
    layout's folders, else (``download``) torchvision's download read the same way."""
    npz = root / layout.npz
    if npz.is_file():
        return _load_npz(npz, layout.name, layout.image_shape, layout.npz_extras)
    partial = None
    for directory in layout.folders(root):
        found, missing = layout.find(directory)
        if not missing:
            return layout.read(found, f"{layout.origin}:{directory}")
        if found and partial is None:
            partial = (directory, missing)
    if download:
        _torchvision_download(layout.label, layout.torchvision_class, root)
        folder = layout.download_folder(root)
        found, missing = layout.find(folder)
        if missing:
            raise DataError(
                f"the {layout.label} download into {root} finished but {folder} lacks "
                f"{', '.join(missing)}; copy {layout.npz} or the standard files into {root} instead"
            )
        return layout.read(found, f"torchvision-download:{folder}")
    if partial is not None:
        directory, missing = partial
        raise DataError(
            f"incomplete {layout.label} {layout.files} in {directory}: missing {', '.join(missing)}; "
            f"copy them there or pass --download"
        )
    raise DataError(
        f"no {layout.label} in {root}: expected {layout.npz} or {layout.expected}; copy them "
        f"there or pass --download{layout.extra_hint(root)}"
    )


def _cifar_tarball_hint(root: pathlib.Path) -> str:
    if (root / CIFAR_TARBALL).is_file():
        return f" ({CIFAR_TARBALL} is there but not extracted: run tar xzf on it, or pass --download)"
    return ""


_MNIST = _Layout(
    name="mnist", label="MNIST", files="idx files", npz="mnist.npz", image_shape=(28, 28), npz_extras={},
    folders=lambda root: (root, root / "MNIST" / "raw"), find=_find_idx_set,
    read=_read_mnist_idx, origin="idx", torchvision_class="MNIST",
    download_folder=lambda root: root / "MNIST" / "raw",
    expected="the four idx files (train-images-idx3-ubyte etc., plain or .gz) in it or in MNIST/raw/",
)
_CIFAR10 = _Layout(
    name="cifar10", label="CIFAR-10", files="batches", npz="cifar10.npz", image_shape=(32, 32, 3),
    npz_extras={"test_lossless": np.bool_},
    folders=lambda root: (root / CIFAR_DIRNAME, root), find=_find_cifar_set,
    read=_read_cifar_pickles, origin="cifar-pickle", torchvision_class="CIFAR10",
    download_folder=lambda root: root / CIFAR_DIRNAME,
    expected=f"{CIFAR_DIRNAME}/ with data_batch_1..5 and test_batch",
    extra_hint=_cifar_tarball_hint,
)


#: registry of raw sources: name -> its storage layout
SOURCES: dict[str, _Layout] = {layout.name: layout for layout in (_MNIST, _CIFAR10)}


# --------------------------------------------------------------------------- public entry points


def resolve_data_dir(data_dir=None, download: bool = False) -> pathlib.Path:
    """Choose the data directory: ``data_dir`` if given, else the ``DEBIASKIT_DATA``
    environment variable (when set and non-empty), else ``~/.cache/debiaskit``.

    Returns the absolute path. Nothing is read or created here; when the directory does not
    exist and ``download`` is false, raise :class:`DataError` saying how to point at the data.
    """
    if data_dir is not None and str(data_dir) != "":
        chosen, how = pathlib.Path(data_dir), "given"
    elif os.environ.get(ENV_VAR):
        chosen, how = pathlib.Path(os.environ[ENV_VAR]), f"from {ENV_VAR}"
    else:
        chosen, how = DEFAULT_DATA_DIR, "the default"
    path = chosen.expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise DataError(f"data directory {path} ({how}) is not a directory; pass --data-dir or set {ENV_VAR} to a folder")
    if not path.exists() and not download:
        raise DataError(
            f"data directory {path} ({how}) does not exist; pass --data-dir or set {ENV_VAR} to the folder "
            f"holding mnist.npz and cifar10.npz (or the idx / CIFAR pickle files), or pass --download"
        )
    return path


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, root: str, download: bool) -> ImageSource:
    return _load(SOURCES[name], pathlib.Path(root), download)


def load_source(name: str, data_dir=None, download: bool = False) -> ImageSource:
    """Load the raw source ``name`` ("mnist" or "cifar10") from the data directory (see
    :func:`resolve_data_dir`), reading the first of: the npz archive (sha256-verified),
    the standard idx / CIFAR pickle files, or, with ``download=True``, a torchvision
    download. Results are cached in-process per (name, directory, download); arrays are
    read-only. ``load_source.cache_clear()`` empties the cache.
    """
    if not isinstance(name, str) or name not in SOURCES:
        raise unknown_name("data source", str(name), SOURCES)
    root = resolve_data_dir(data_dir, download=download)
    return _load_cached(name, str(root), bool(download))


load_source.cache_clear = _load_cached.cache_clear
load_source.cache_info = _load_cached.cache_info
