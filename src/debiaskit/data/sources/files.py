"""Checksummed files: sha256 of files and arrays, SHA256SUMS lists, verified npz archives.

Every failure caused by missing, truncated or altered files is a one-line
:class:`~debiaskit.errors.DataError` that names the file and says what to do.
"""

from __future__ import annotations

import hashlib
import pathlib
import re

import numpy as np

from ...errors import DataError
from ..image_source import two_split_source

#: sha256 of the reference archives, used when no ``SHA256SUMS`` file lists them.
NPZ_SHA256 = {
    "mnist.npz": "094b831e432331f1f6d6829ab9bfff4551410a81e1f816c9cce482d3e9b3ba57",
    "cifar10.npz": "db83a0c3958facb6e940281ec04292f1b23ea924bc0aa4fdb9250309938bc98a",
}
ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")


def one_line(exc: BaseException, limit: int = 240) -> str:
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
        raise DataError(f"cannot read {path} ({one_line(exc)}); check that it exists and is readable") from None
    return digest.hexdigest()



def arrays_sha256(arrays: dict, keys=ARRAY_KEYS) -> str:
    """sha256 over the named arrays: each one's name, dtype, shape, then its bytes."""
    digest = hashlib.sha256()
    for key in keys:
        arr = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{arr.dtype.str}:{arr.shape}\n".encode())
        digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def read_sha256sums(directory: pathlib.Path) -> dict:
    """Read ``directory/SHA256SUMS`` (``<hex>  <name>`` lines, as written by sha256sum) into
    {file name: hex}; an absent file gives {} and lines that do not parse are ignored."""
    path = directory / "SHA256SUMS"
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"cannot read {path} ({one_line(exc)}); fix its permissions or remove it") from None
    sums = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\s*([0-9a-fA-F]{64})\s+\*?(.+?)\s*", line)
        if match:
            sums[pathlib.PurePath(match.group(2)).name] = match.group(1).lower()
    return sums


def check_labels(labels: np.ndarray, where: str, what: str, num_classes: int = 10) -> np.ndarray:
    """Validate integer class labels in [0, num_classes) and return them as int64."""
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{where}: {what} has dtype {labels.dtype} and shape {labels.shape}, expected 1-d integer labels; re-copy it"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{where}: {what} holds labels outside 0..{num_classes - 1} "
            f"(min {labels.min()}, max {labels.max()}); re-copy it"
        )
    return labels.astype(np.int64, copy=False)


def verify_file(path: pathlib.Path, builtin: dict | None = None) -> str:
    """sha256 of ``path``, checked against ``SHA256SUMS`` next to it when that lists the file,
    else against ``builtin[name]`` when given; returns the digest."""
    sums = read_sha256sums(path.parent)
    if path.name in sums:
        expected, listed_in = sums[path.name], f"{path.parent / 'SHA256SUMS'}"
    elif builtin and path.name in builtin:
        expected, listed_in = builtin[path.name], "the built-in checksum"
    else:
        return sha256_file(path)
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(
            f"{path} is corrupt or altered: sha256 {actual[:16]}... does not match {expected[:16]}... "
            f"from {listed_in}; re-copy the file"
        )
    return actual


def read_npz(path: pathlib.Path, keys, name: str) -> dict:
    """The arrays ``keys`` of the npz archive at ``path`` (no pickles)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise DataError(
                    f"{path} lacks the array(s) {', '.join(missing)} (it holds {', '.join(archive.files) or 'nothing'}); "
                    f"it is not a debiaskit {name} archive: re-copy it"
                )
            return {key: archive[key] for key in keys}
    except DataError:
        raise
    except Exception as exc:  # zipfile, zlib, numpy format and OS errors alike
        raise DataError(f"{path} cannot be read as an npz archive ({one_line(exc)}); re-copy the file") from None


def load_npz(path: pathlib.Path, name: str, image_shape: tuple, extra_keys: dict,
             classes=(), num_classes: int = 10):
    """Read a verified two-split npz archive (``x_train, y_train, x_test, y_test``): check its
    sha256 (SHA256SUMS next to it, else the built-in value), then its keys, dtypes and
    shapes. ``image_shape`` is the per-image shape; ``extra_keys`` maps optional-extra key
    (``test_<name>``) -> required dtype (one entry per test image)."""
    actual = verify_file(path, NPZ_SHA256)
    arrays = read_npz(path, (*ARRAY_KEYS, *extra_keys), name)
    where = str(path)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 1 + len(image_shape) or x.shape[1:] != image_shape:
            raise DataError(
                f"{where}: x_{split} has dtype {x.dtype} and shape {x.shape}, expected uint8 (N, "
                f"{', '.join(map(str, image_shape))}); re-copy the file"
            )
        arrays[f"y_{split}"] = y = check_labels(y, where, f"y_{split}", num_classes)
        if len(y) != len(x):
            raise DataError(f"{where}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels; re-copy the file")
    extras = {}
    for key, dtype in extra_keys.items():
        value = arrays[key]
        if value.dtype != dtype or value.shape != (len(arrays["x_test"]),):
            raise DataError(
                f"{where}: {key} has dtype {value.dtype} and shape {value.shape}, expected {np.dtype(dtype)} "
                f"({len(arrays['x_test'])},); re-copy the file"
            )
        extras[key.removeprefix("test_")] = value
    return two_split_source(name, arrays, f"npz:{path}", actual, classes, extras)
