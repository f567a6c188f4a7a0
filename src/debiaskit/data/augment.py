"""Batched augmentation: random parameters per sample, one tensor operation per batch.

torchvision's transforms draw one set of random parameters per call, so applied to a
batch they would crop every image the same way; these draw per-sample parameters and keep
the loop free of per-sample Python. Every transform moves foreground masks with the
images: ``apply(x, gen, mask) -> (x, mask)`` takes float images N x C x H x W and bool
masks N x H x W (or None) and gives both the same geometry (masks resampled nearest);
``transform(x, gen)`` returns the images only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Transform:
    """Base of the batched transforms: ``apply`` moves images and masks together."""

    def apply(self, x: torch.Tensor, gen: torch.Generator | None = None,
              mask: torch.Tensor | None = None):
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(x, gen, None)[0]


def _sample(x: torch.Tensor, grid: torch.Tensor, mode: str, mask: torch.Tensor | None):
    """Resample images (``mode``) and masks (nearest) at ``grid`` (N x H' x W' x 2)."""
    out = F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode="zeros",
                        align_corners=False)
    if mask is not None:
        m = F.grid_sample(mask[:, None].to(x.dtype), grid.to(x.dtype), mode="nearest",
                          padding_mode="zeros", align_corners=False)
        mask = m[:, 0] > 0.5
    return out, mask


class RandomCropFlip(Transform):
    """Random crop after zero padding (``pad`` pixels) and optional horizontal flip.

    The CIFAR augmentation of LfF/ResNet-20 training: ``RandomCrop(32, padding=4)`` and
    ``RandomHorizontalFlip()`` per sample. Padded mask pixels are background.
    """

    def __init__(self, pad: int = 4, flip: bool = True) -> None:
        self.pad = pad
        self.flip = flip

    def apply(self, x, gen=None, mask=None):
        n, c, h, w = x.shape
        p = self.pad
        if p:
            oy = torch.randint(0, 2 * p + 1, (n,), generator=gen).to(x.device)
            ox = torch.randint(0, 2 * p + 1, (n,), generator=gen).to(x.device)
            rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
            batch = torch.arange(n, device=x.device)[:, None, None, None]
            x = F.pad(x, (p, p, p, p))[batch, torch.arange(c, device=x.device)[None, :, None, None],
                                       rows, cols]
            if mask is not None:
                mask = F.pad(mask, (p, p, p, p))[batch[:, 0], rows[:, 0], cols[:, 0]]
        if self.flip:
            flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            if mask is not None:
                mask = torch.where(flip[:, None, None], mask.flip(2), mask)
        return x, mask


class RandomAffine(Transform):
    """Per-sample random rotation, scale and x-shear about the image centre, zero fill.

    As ``torchvision.transforms.RandomAffine(degrees, scale=scale, shear=shear)`` (nearest
    interpolation, no translation) with the parameters drawn per sample: LAD's MNIST
    augmentation uses 15 degrees, scale 0.8-1.1 and shear 15 degrees (LAD, Sec. 5.1).
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

    def apply(self, x, gen=None, mask=None):
        n, _, h, w = x.shape
        forward = self.matrices(n, gen)
        # affine_grid wants output -> input in coordinates normalised to [-1, 1] per axis
        to_pixels = torch.diag(torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64))
        inverse = torch.linalg.inv(to_pixels) @ torch.linalg.inv(forward) @ to_pixels
        theta = torch.cat([inverse, torch.zeros(n, 2, 1, dtype=torch.float64)], 2)
        grid = F.affine_grid(theta.to(x.dtype).to(x.device), list(x.shape), align_corners=False)
        return _sample(x, grid, "nearest", mask)


class RandomResizedCrop(Transform):
    """Per-sample ``RandomResizedCrop(size, scale, ratio)`` and optional horizontal flip.

    As torchvision's: up to ten tries per image of an area share in ``scale`` and a
    log-uniform aspect ratio in ``ratio`` whose box fits the image; an image with no
    fitting try takes the centre crop clamped to ``ratio``. The box is resampled bilinearly
    to ``size`` (default: the input size); masks nearest. Without antialiasing, so boxes
    much larger than ``size`` alias (torchvision antialiases tensors since 0.17). SiH's
    CIFAR augmentation is scale (0.5, 1) with a flip; the ImageNet one (BAR) (0.08, 1).
    """

    def __init__(self, size=None, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip: bool = True,
                 tries: int = 10) -> None:
        self.size = (size, size) if isinstance(size, int) else size
        self.scale, self.ratio, self.flip, self.tries = scale, ratio, flip, tries

    def boxes(self, n: int, h: int, w: int, gen=None) -> torch.Tensor:
        """n x 4 boxes (top, left, height, width) in pixels, float64."""
        area = h * w
        shares = torch.empty(n, self.tries, dtype=torch.float64).uniform_(*self.scale, generator=gen)
        log_r = torch.empty(n, self.tries, dtype=torch.float64).uniform_(
            math.log(self.ratio[0]), math.log(self.ratio[1]), generator=gen)
        aspect = torch.exp(log_r)
        bw = torch.round(torch.sqrt(area * shares * aspect))
        bh = torch.round(torch.sqrt(area * shares / aspect))
        fits = (bw > 0) & (bh > 0) & (bw <= w) & (bh <= h)
        first = torch.where(fits.any(1), fits.double().argmax(1), torch.full((n,), -1))
        pick = first.clamp(min=0)
        bh = bh.gather(1, pick[:, None])[:, 0]
        bw = bw.gather(1, pick[:, None])[:, 0]
        # fallback: centre crop of the whole image, clamped to the ratio range
        in_ratio = w / h
        fb_w, fb_h = (w, h)
        if in_ratio < self.ratio[0]:
            fb_w, fb_h = w, round(w / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            fb_w, fb_h = round(h * self.ratio[1]), h
        ok = first >= 0
        bh = torch.where(ok, bh, torch.full_like(bh, fb_h))
        bw = torch.where(ok, bw, torch.full_like(bw, fb_w))
        top = torch.floor(torch.rand(n, generator=gen, dtype=torch.float64) * (h - bh + 1))
        left = torch.floor(torch.rand(n, generator=gen, dtype=torch.float64) * (w - bw + 1))
        top = torch.where(ok, top, torch.round((h - bh) / 2))
        left = torch.where(ok, left, torch.round((w - bw) / 2))
        return torch.stack([top, left, bh, bw], 1)

    def apply(self, x, gen=None, mask=None):
        n, c, h, w = x.shape
        out_h, out_w = self.size or (h, w)
        top, left, bh, bw = self.boxes(n, h, w, gen).unbind(1)
        sx, sy = bw / w, bh / h
        cx, cy = (2 * left + bw) / w - 1, (2 * top + bh) / h - 1
        if self.flip:
            flip = torch.rand(n, generator=gen, dtype=torch.float64) < 0.5
            sx = torch.where(flip, -sx, sx)
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, sy, cy
        grid = F.affine_grid(theta.to(x.dtype).to(x.device), [n, c, out_h, out_w],
                             align_corners=False)
        return _sample(x, grid, "bilinear", mask)


class Compose(Transform):
    """Apply batched augmentations in order."""

    def __init__(self, *steps) -> None:
        self.steps = steps

    def apply(self, x, gen=None, mask=None):
        for step in self.steps:
            x, mask = step.apply(x, gen, mask)
        return x, mask


#: Named training augmentations (``RunConfig.augment``), as the papers use them.
AUGMENTATIONS = {
    "none": lambda: None,
    "crop_flip": lambda: RandomCropFlip(pad=4, flip=True),        # CIFAR (LfF, LAD, GBA)
    "crop": lambda: RandomCropFlip(pad=4, flip=False),
    "crop2_flip": lambda: RandomCropFlip(pad=2, flip=True),  # crop_flip for 16-px CIFAR
    "crop2": lambda: RandomCropFlip(pad=2, flip=False),  # 16-px images of digits (bg_shift)
    "crop_affine": lambda: Compose(RandomCropFlip(pad=4, flip=False), RandomAffine()),  # LAD MNIST
    "resized_crop_flip": lambda: RandomResizedCrop(scale=(0.5, 1.0)),  # SiH CIFAR
    "imagenet_crop_flip": lambda: RandomResizedCrop(scale=(0.08, 1.0)),  # BAR (LfF Table 6)
}
