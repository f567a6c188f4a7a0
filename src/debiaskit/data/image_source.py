"""ImageSource: the raw images of a data set, by named split, before any bias protocol.

One shape serves every image set: each named split (``train``, ``val``, ``test``, ...)
holds uint8 images, integer targets ``y``, any number of integer attribute columns (a bias
attribute, a domain, a place), optional foreground masks and optional file names. MNIST
and CIFAR-10 have two splits and no attributes; a Waterbirds-style set has ``place`` and
masks; a CelebA-style set has many binary attributes; an IN-9-style set has several test
splits of the same images (Original, Mixed-Rand, ...). Protocols build biased datasets
from it (:mod:`debiaskit.data.protocols`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np

from ..errors import DataError


def _freeze(arr):
    if arr is not None:
        arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Split:
    """One split of an image source. Arrays are read-only: copy before modifying.

    ``x``: uint8 images, ``(N, H, W)`` grey or ``(N, H, W, C)`` colour (RGB).
    ``y``: int64 targets ``(N,)``.
    ``attributes``: name -> int64 ``(N,)`` column (e.g. ``bias``, ``domain``, ``place``).
    ``masks``: bool ``(N, H, W)`` foreground masks, or None.
    ``names``: file names ``(N,)`` (str), or None.
    ``extras``: other per-sample arrays, e.g. ``lossless`` (bool) in CIFAR-10's test split.
    """

    x: np.ndarray
    y: np.ndarray
    attributes: Mapping[str, np.ndarray] = field(default_factory=dict)
    masks: np.ndarray | None = None
    names: np.ndarray | None = None
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.x)
        if self.x.dtype != np.uint8 or self.x.ndim not in (3, 4):
            raise DataError(f"split images must be uint8 (N, H, W[, C]), got {self.x.dtype} "
                            f"{self.x.shape}; convert them first")
        columns = {"y": self.y, "masks": self.masks, "names": self.names,
                   **{f"attribute {k}": v for k, v in self.attributes.items()},
                   **{f"extra {k}": v for k, v in self.extras.items()}}
        for label, arr in columns.items():
            if arr is not None and len(arr) != n:
                raise DataError(f"split has {n} images but {label} has {len(arr)} rows; "
                                "the columns do not belong together")
        if self.masks is not None and self.masks.shape != self.x.shape[:3]:
            raise DataError(f"masks have shape {self.masks.shape}, images {self.x.shape}; "
                            "masks must be (N, H, W) like the images")
        for arr in (self.x, self.y, self.masks, self.names, *self.attributes.values(),
                    *self.extras.values()):
            _freeze(arr)
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))
        object.__setattr__(self, "extras", MappingProxyType(dict(self.extras)))

    def __len__(self) -> int:
        return len(self.x)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.x.shape[1:])


@dataclass(frozen=True, eq=False)
class ImageSource:
    """The splits of one raw image set, exactly as read from disk.

    ``classes`` names the targets (index = label); ``attribute_values`` names the values
    of an attribute column where they have names (e.g. ``place``: ("land", "water")).
    ``origin`` says which file or folder was read; ``checksum`` is the sha256 of the
    archive file or of the decoded arrays. Equality is identity.
    """

    name: str
    splits: Mapping[str, Split]
    origin: str
    checksum: str
    classes: tuple = ()
    attribute_values: Mapping[str, tuple] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "splits", MappingProxyType(dict(self.splits)))
        object.__setattr__(self, "attribute_values",
                           MappingProxyType(dict(self.attribute_values)))
        object.__setattr__(self, "classes", tuple(self.classes))

    def split(self, name: str) -> Split:
        """The split ``name``; an unknown name is a one-line DataError listing the splits."""
        if name not in self.splits:
            raise DataError(f"source {self.name} has no split {name!r}; it has: "
                            f"{', '.join(self.splits)}")
        return self.splits[name]

    @property
    def num_classes(self) -> int:
        if self.classes:
            return len(self.classes)
        return int(max(int(s.y.max()) for s in self.splits.values() if len(s)) + 1)

    # The two-split view of MNIST-like sources (train / test), used by the MNIST protocols.
    @property
    def x_train(self) -> np.ndarray:
        return self.split("train").x

    @property
    def y_train(self) -> np.ndarray:
        return self.split("train").y

    @property
    def x_test(self) -> np.ndarray:
        return self.split("test").x

    @property
    def y_test(self) -> np.ndarray:
        return self.split("test").y

    @property
    def extras(self) -> dict:
        """Per-sample extras of every split, keyed ``<split>_<name>`` (``test_lossless``)."""
        return {f"{s}_{k}": v for s, split in self.splits.items() for k, v in split.extras.items()}

    def __repr__(self) -> str:
        splits = ", ".join(f"{k}={tuple(v.x.shape)}" for k, v in self.splits.items())
        return (f"ImageSource(name={self.name!r}, {splits}, origin={self.origin!r}, "
                f"checksum={self.checksum[:12]}...)")


def two_split_source(name: str, arrays: dict, origin: str, checksum: str, classes=(),
                     test_extras: dict | None = None) -> ImageSource:
    """An ImageSource from ``x_train, y_train, x_test, y_test`` arrays (MNIST, CIFAR-10)."""
    return ImageSource(
        name=name, origin=origin, checksum=checksum, classes=classes,
        splits={"train": Split(arrays["x_train"], arrays["y_train"]),
                "test": Split(arrays["x_test"], arrays["y_test"], extras=test_extras or {})})


def as_nchw(images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` -> ``(N, 1, H, W)``; ``(N, H, W, C)`` -> ``(N, C, H, W)`` (a view)."""
    return images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
