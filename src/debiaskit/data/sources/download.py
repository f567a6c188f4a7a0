"""Downloads through torchvision, for machines with a network (never needed offline)."""

from __future__ import annotations

import pathlib

from ...errors import DataError
from .files import one_line


def torchvision_download(label: str, dataset_cls_name: str, root: pathlib.Path) -> None:
    """Have ``torchvision.datasets.<dataset_cls_name>(root, train=True, download=True)`` fetch
    the standard files into ``root``; any failure becomes a one-line DataError."""
    advice = f"copy the {label} files into {root} instead (see the data README)"
    try:
        import torchvision.datasets as tvd
    except Exception as exc:
        raise DataError(f"cannot download {label}: torchvision does not import ({one_line(exc)}); {advice}") from None
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create data directory {root} ({one_line(exc)}); pass a writable --data-dir") from None
    try:
        getattr(tvd, dataset_cls_name)(root=str(root), train=True, download=True)
    except Exception as exc:  # URLError, HTTPError, RuntimeError from md5 checks, OSError, ...
        raise DataError(f"downloading {label} into {root} failed ({one_line(exc)}); {advice}") from None


