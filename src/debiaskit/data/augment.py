"""Batched augmentation: random parameters per sample, one tensor operation per batch.

torchvision's transforms draw one set of random parameters per call, so applied to a
batch they would crop every image the same way; these draw per-sample parameters and keep
the loop free of per-sample Python.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class RandomCropFlip:
    """Random crop after zero padding (``pad`` pixels) and optional horizontal flip.

    The CIFAR augmentation of LfF/ResNet-20 training: ``RandomCrop(32, padding=4)`` and
    ``RandomHorizontalFlip()`` per sample.
    """

    def __init__(self, pad: int = 4, flip: bool = True) -> None:
        self.pad = pad
        self.flip = flip

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.pad
        if p:
            xp = F.pad(x, (p, p, p, p))
            oy = torch.randint(0, 2 * p + 1, (n,), generator=gen).to(x.device)
            ox = torch.randint(0, 2 * p + 1, (n,), generator=gen).to(x.device)
            rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
            x = xp[torch.arange(n, device=x.device)[:, None, None, None],
                   torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
        if self.flip:
            flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)[:, None, None, None]
            x = torch.where(flip, x.flip(3), x)
        return x
