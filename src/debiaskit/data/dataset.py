"""BiasedDataset: images with a target label, an optional bias attribute and mask.

A sample is *bias-aligned* when its bias value equals its class (the protocols here pair
class c with colour c) and *bias-conflicting* otherwise. Everything is held in memory as
tensors so that training never touches per-sample Python.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError


@dataclass
class BiasedDataset:
    """Images ``x`` (uint8, N x C x H x W), targets ``y`` and, where known, bias ``b``.

    ``mask`` is the foreground mask (bool, N x H x W) when the protocol knows it.
    ``num_bias`` is the number of bias values (0 when ``b`` is unknown).
    ``aligned_bias[c]`` is the bias value aligned with class c (default: c itself).
    ``meta`` records how the dataset was built (protocol, parameters, seed).
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    b: torch.Tensor | None = None
    num_bias: int = 0
    mask: torch.Tensor | None = None
    aligned_bias: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.x)
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise ConfigError(f"dataset {self.name}: images must be uint8 N x C x H x W")
        for label, t in (("y", self.y), ("b", self.b), ("mask", self.mask)):
            if t is not None and len(t) != n:
                raise ConfigError(f"dataset {self.name}: {label} has {len(t)} rows, images {n}")
        if self.b is not None and self.num_bias <= 0:
            raise ConfigError(f"dataset {self.name}: bias labels given without num_bias")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def has_bias(self) -> bool:
        return self.b is not None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])

    @property
    def aligned(self) -> torch.Tensor:
        """Bool mask of bias-aligned samples (b == y)."""
        self._need_bias("aligned")
        if self.aligned_bias is None:
            return self.b == self.y
        return self.b == self.aligned_bias[self.y]

    @property
    def groups(self) -> torch.Tensor:
        """Group id ``y * num_bias + b`` of every sample (needs bias labels)."""
        self._need_bias("groups")
        return self.y * self.num_bias + self.b

    @property
    def num_groups(self) -> int:
        return self.num_classes * self.num_bias

    def _need_bias(self, what: str) -> None:
        if self.b is None:
            raise ConfigError(f"dataset {self.name} has no bias labels, so {what} is undefined")

    def subset(self, index: torch.Tensor, name: str | None = None) -> "BiasedDataset":
        """The samples at ``index``, as a new dataset sharing no storage with this one."""
        pick = (lambda t: None if t is None else t[index].clone())
        return BiasedDataset(
            name=name or self.name, x=pick(self.x), y=pick(self.y), num_classes=self.num_classes,
            b=pick(self.b), num_bias=self.num_bias, mask=pick(self.mask),
            aligned_bias=self.aligned_bias, meta=dict(self.meta),
        )

    @staticmethod
    def concatenate(parts: list["BiasedDataset"], name: str) -> "BiasedDataset":
        """The samples of ``parts`` one after another (same classes and bias values)."""
        def cat(attr):
            values = [getattr(p, attr) for p in parts]
            return None if any(v is None for v in values) else torch.cat(values)
        first, b = parts[0], cat("b")
        return BiasedDataset(name=name, x=cat("x"), y=cat("y"), num_classes=first.num_classes,
                             b=b, num_bias=first.num_bias if b is not None else 0,
                             mask=cat("mask"), aligned_bias=first.aligned_bias,
                             meta={**first.meta, "parts": [p.name for p in parts]})

    def without_bias(self) -> "BiasedDataset":
        """The same images and targets with the bias labels removed (a practitioner's view)."""
        return BiasedDataset(name=self.name, x=self.x, y=self.y, num_classes=self.num_classes,
                             mask=self.mask, meta={**self.meta, "bias_labels": "removed"})

    def checksum(self) -> str:
        """SHA-256 over images, targets, bias labels and masks: equal data, equal checksum."""
        h = hashlib.sha256()
        for t in (self.x, self.y, self.b, self.mask):
            if t is None:
                h.update(b"none")
            else:
                h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
                h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()

    def counts(self) -> np.ndarray:
        """Number of samples per (class, bias) cell, shape (num_classes, num_bias)."""
        self._need_bias("counts")
        flat = torch.bincount(self.groups, minlength=self.num_groups)
        return flat.reshape(self.num_classes, self.num_bias).numpy()

    def summary(self) -> str:
        """A text table of counts per (class y, bias b), with aligned/conflicting totals."""
        lines = [f"{self.name}: {len(self)} images {tuple(self.image_shape)}, "
                 f"{self.num_classes} classes"]
        if self.b is None:
            lines.append("no bias labels")
            counts = torch.bincount(self.y, minlength=self.num_classes).tolist()
            lines.append("per class: " + " ".join(str(c) for c in counts))
            return "\n".join(lines)
        c = self.counts()
        n_al = int(self.aligned.sum())
        lines.append(f"aligned {n_al} ({100 * n_al / len(self):.2f} %), conflicting "
                     f"{len(self) - n_al} ({100 * (len(self) - n_al) / len(self):.2f} %)")
        width = max(5, len(str(c.max())) + 1)
        lines.append("y \\ b".ljust(6) + "".join(str(j).rjust(width) for j in range(self.num_bias)))
        for i in range(self.num_classes):
            lines.append(str(i).ljust(6) + "".join(str(v).rjust(width) for v in c[i]))
        return "\n".join(lines)


@dataclass
class DataBundle:
    """What a protocol builds: the biased training set and named evaluation splits."""

    train: BiasedDataset
    evals: dict[str, BiasedDataset]
    protocol: str
    params: dict
