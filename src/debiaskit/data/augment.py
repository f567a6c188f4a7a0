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


class RandomAffine:
    """Per-sample random rotation, scale and x-shear about the image centre, zero fill.

    As ``torchvision.transforms.RandomAffine(degrees, scale=scale, shear=shear)`` (nearest
    interpolation, no translation) with the parameters drawn per sample: LAD's MNIST
    augmentation uses 15 degrees, scale 0.8-1.1 and shear 15 degrees (paper 000, Sec. 5.1).
    """

    def __init__(self, degrees: float = 15.0, scale: tuple[float, float] = (0.8, 1.1),
                 shear: float = 15.0) -> None:
        self.degrees, self.scale, self.shear = degrees, scale, shear

    def matrices(self, n: int, gen: torch.Generator | None = None) -> torch.Tensor:
        """n x 2 x 2 forward maps (input -> output pixel offsets from the centre)."""
        def uniform(low, high):
            return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)
        angle = torch.deg2rad(uniform(-self.degrees, self.degrees))
        shear = torch.deg2rad(uniform(-self.shear, self.shear))
        scale = uniform(*self.scale)
        cos, sin = torch.cos(angle), torch.sin(angle)
        rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        shearing = torch.zeros(n, 2, 2, dtype=torch.float64)
        shearing[:, 0, 0] = shearing[:, 1, 1] = 1.0
        shearing[:, 0, 1] = -torch.tan(shear)
        return scale[:, None, None] * rotation @ shearing

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        n, _, h, w = x.shape
        forward = self.matrices(n, gen)
        # affine_grid wants output -> input in coordinates normalised to [-1, 1] per axis
        to_pixels = torch.diag(torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64))
        inverse = torch.linalg.inv(to_pixels) @ torch.linalg.inv(forward) @ to_pixels
        theta = torch.cat([inverse, torch.zeros(n, 2, 1, dtype=torch.float64)], 2)
        grid = F.affine_grid(theta.to(x.dtype).to(x.device), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


class Compose:
    """Apply batched augmentations in order."""

    def __init__(self, *steps) -> None:
        self.steps = steps

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        for step in self.steps:
            x = step(x, gen)
        return x


#: Named training augmentations (``RunConfig.augment``), as the papers use them.
AUGMENTATIONS = {
    "none": lambda: None,
    "crop_flip": lambda: RandomCropFlip(pad=4, flip=True),        # CIFAR (LfF, LAD, SiH)
    "crop": lambda: RandomCropFlip(pad=4, flip=False),
    "crop_affine": lambda: Compose(RandomCropFlip(pad=4, flip=False), RandomAffine()),  # LAD MNIST
}
