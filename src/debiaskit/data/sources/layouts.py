"""Shared helpers of the readers of published folder layouts (IN-9, Waterbirds, CelebA):
images and masks read and resized to one side, one-line errors naming the file."""

from __future__ import annotations

import pathlib

import numpy as np

from ...errors import DataError
from .files import one_line


def read_image(path: pathlib.Path, size: int, mode: str = "RGB") -> np.ndarray:
    """The image at ``path`` as uint8 ``size`` x ``size`` (RGB bilinear, masks nearest)."""
    from PIL import Image
    if not path.is_file():
        raise DataError(f"{path} not found; the folder layout is incomplete (copy the file "
                        "or use the dataset's original archive)")
    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if img.size != (size, size):
                resample = (Image.Resampling.NEAREST if mode == "L"
                            else Image.Resampling.BILINEAR)
                img = img.resize((size, size), resample)
            return np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except Exception as exc:  # PIL.UnidentifiedImageError, truncated files, OSError
        raise DataError(f"cannot read {path} ({one_line(exc)}); replace the file") from None


def read_npy_mask(path: pathlib.Path, size: int) -> np.ndarray:
    """A foreground mask stored as a .npy array (non-zero = foreground), resized (nearest)."""
    from PIL import Image
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot read mask {path} ({one_line(exc)}); replace the file") from None
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = arr.any(-1) if arr.shape[-1] in (1, 3, 4) else arr.any(0)
    if arr.ndim != 2:
        raise DataError(f"mask {path} has shape {arr.shape}; masks must be (H, W)")
    img = Image.fromarray((arr != 0).astype(np.uint8) * 255)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(img) > 0


def find_folder(root: pathlib.Path, names: tuple[str, ...], what: str) -> pathlib.Path:
    """The first of ``root/<name>`` that is a folder, else a one-line DataError."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"no {what} in {root}: expected one of the folders "
                    f"{', '.join(names)}; copy the dataset there")
