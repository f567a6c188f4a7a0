"""MNIST in its standard on-disk format: the four idx files (plain or gzip)."""

from __future__ import annotations

import gzip
import pathlib
import struct

import numpy as np

from ...errors import DataError
from ..image_source import ImageSource, two_split_source
from .files import arrays_sha256, check_labels, one_line

MNIST_IDX_FILES = {
    "x_train": ("train-images-idx3-ubyte", 2051),
    "y_train": ("train-labels-idx1-ubyte", 2049),
    "x_test": ("t10k-images-idx3-ubyte", 2051),
    "y_test": ("t10k-labels-idx1-ubyte", 2049),
}
CLASSES = tuple(str(d) for d in range(10))
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
        raise DataError(f"cannot read {path} ({one_line(exc)}); re-copy the file") from None

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


def find_idx_set(directory: pathlib.Path):
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


def read_mnist_idx(files: dict, origin: str) -> ImageSource:
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
        arrays[f"y_{split}"] = check_labels(y, str(y_path), "the label file")
    return two_split_source("mnist", arrays, origin, arrays_sha256(arrays), CLASSES)

