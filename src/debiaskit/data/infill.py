"""Batched infills for CF/F (CF/F, "Choice of infilling value"; docs/methods/cff.md).

Every infill takes float images ``x`` (N x C x H x W, values in [0, 1]), a bool ``region``
(N x H x W: the pixels to replace) and a ``torch.Generator`` (drawn on its own device and
moved to the images', :func:`debiaskit.device.draw`: a CPU generator gives a GPU run the
numbers a CPU run gets), and returns new images equal to ``x`` outside the region. A counterfactual infill replaces the causal region (the
foreground's bounding box); a factual infill replaces the background (``~mask``), which
:func:`factual` does.

- ``grey``: 0.5 (0 after normalising to [-1, 1]).
- ``random``: one uniform colour per image and channel plus N(0, 0.2^2) per pixel and
  channel, clipped to [0, 1] (low- plus high-frequency noise).
- ``shuffle``: the paper's: the region's pixels (RGB vectors kept together) permuted
  within each image, so the region keeps its colour histogram and loses its layout.
- ``shuffle_batch``: the authors' code: every value of the whole batch tensor permuted,
  then read inside the region (the region gets values of all images and channels).
- ``tile``: the largest full-height or full-width band of the image that does not meet the
  region, repeated over the image and read inside the region; an image whose region
  meets every row and every column has no such band and falls back to ``grey``.
- ``telea`` / ``ns``: OpenCV's inpainting (Telea 2004; Navier-Stokes, Bertalmio et al.
  2001) with radius 3, the real inpainting method standing in for the paper's CAGAN,
  whose ImageNet weights cannot be had offline.
- ``mixed_rand`` (factual only): the background of a random image of another class in the
  same batch, after that image's own foreground was replaced by ``tile`` (the paper's
  "randomly-chosen tiled background from images of other classes within the same
  batch"); an image with no other class in its batch gets ``random``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..device import draw
from ..errors import ConfigError, unknown_name

COUNTERFACTUAL = ("grey", "random", "shuffle", "shuffle_batch", "tile", "telea", "ns")
FACTUAL = ("random", "shuffle", "shuffle_batch", "mixed_rand")
RANDOM_NOISE_STD = 0.2
INPAINT_RADIUS = 3


def mask_boxes(mask: torch.Tensor) -> torch.Tensor:
    """Bool (N, H, W) box regions: for every mask, the tight rectangle around its pixels
    (all False for an empty mask)."""
    return _fill(mask.any(2))[:, :, None] & _fill(mask.any(1))[:, None, :]


def _fill(line: torch.Tensor) -> torch.Tensor:
    """(N, L) bool: True from the first to the last True of each row, inclusive."""
    line = line.int()
    return (line.cumsum(1) > 0) & (line.flip(1).cumsum(1).flip(1) > 0)


def _check(x: torch.Tensor, region: torch.Tensor) -> None:
    if x.dim() != 4 or region.shape != (x.shape[0],) + tuple(x.shape[2:]):
        raise ConfigError(f"infill: the region has shape {tuple(region.shape)}, the images "
                          f"{tuple(x.shape)}; give one (H, W) mask per image")


def grey(x, region, gen=None):
    return torch.where(region[:, None], torch.full_like(x, 0.5), x)


def random_fill(x, region, gen=None):
    n, c = x.shape[:2]
    colour = draw(torch.rand, n, c, 1, 1, generator=gen, like=x, dtype=x.dtype)
    noise = draw(torch.randn, x.shape, generator=gen, like=x, dtype=x.dtype)
    fill = (colour + RANDOM_NOISE_STD * noise).clamp(0.0, 1.0)
    return torch.where(region[:, None], fill, x)


def shuffle(x, region, gen=None):
    out = x.clone()
    for i in range(len(x)):
        where = region[i].nonzero(as_tuple=True)
        count = len(where[0])
        if count > 1:
            perm = draw(torch.randperm, count, generator=gen, like=x)
            pixels = x[i][:, where[0], where[1]]
            out[i][:, where[0], where[1]] = pixels[:, perm]
    return out


def shuffle_batch(x, region, gen=None):
    flat = x.reshape(-1)
    perm = draw(torch.randperm, flat.numel(), generator=gen, like=x)
    return torch.where(region[:, None], flat[perm].view_as(x), x)


def _longest_run(free: torch.Tensor) -> tuple[int, int]:
    """(start, length) of the longest run of True in a 1-D bool tensor (length 0 if none)."""
    best, start = (0, 0), None
    for k, v in enumerate(free.tolist() + [False]):
        if v and start is None:
            start = k
        elif not v and start is not None:
            if k - start > best[1]:
                best = (start, k - start)
            start = None
    return best


def tile(x, region, gen=None):
    out = x.clone()
    h, w = x.shape[2:]
    for i in range(len(x)):
        if not region[i].any():
            continue
        col_start, col_len = _longest_run(~region[i].any(0))
        row_start, row_len = _longest_run(~region[i].any(1))
        if col_len == 0 and row_len == 0:
            out[i] = grey(x[i:i + 1], region[i:i + 1])[0]
            continue
        if col_len * h >= row_len * w:  # a full-height band of columns
            band = x[i][:, :, col_start:col_start + col_len]
            tiled = band.repeat(1, 1, -(-w // col_len))[:, :, :w]
        else:  # a full-width band of rows
            band = x[i][:, row_start:row_start + row_len, :]
            tiled = band.repeat(1, -(-h // row_len), 1)[:, :h, :]
        out[i] = torch.where(region[i][None], tiled, x[i])
    return out


def _inpaint(x, region, flag: str):
    """OpenCV inpainting (``flag``: cv2.INPAINT_TELEA or cv2.INPAINT_NS) of every image."""
    import cv2
    flag = getattr(cv2, flag)
    images = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    images = images.permute(0, 2, 3, 1).numpy()
    masks = region.cpu().numpy().astype(np.uint8)
    filled = np.stack([cv2.inpaint(np.ascontiguousarray(img), m, INPAINT_RADIUS, flag)
                       .reshape(img.shape) for img, m in zip(images, masks)])
    filled = torch.from_numpy(filled).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0
    return torch.where(region[:, None], filled, x)


def telea(x, region, gen=None):
    return _inpaint(x, region, "INPAINT_TELEA")


def navier_stokes(x, region, gen=None):
    return _inpaint(x, region, "INPAINT_NS")


def mixed_rand(x, foreground, y, gen=None):
    """Factual Mixed-Rand: each image's background (``~foreground``) from another class's
    image of the batch, with that image's own foreground tiled over."""
    if y is None:
        raise ConfigError("the mixed_rand infill needs the batch's labels")
    region = ~foreground
    backgrounds = tile(x, foreground)  # every image's foreground replaced by its own tile
    out = random_fill(x, region, gen)
    for i in range(len(x)):
        others = (y != y[i]).nonzero(as_tuple=True)[0]
        if len(others):
            j = others[draw(torch.randint, len(others), (1,), generator=gen, like=x)]
            out[i] = torch.where(region[i][None], backgrounds[j][0], x[i])
    return out


INFILLS = {"grey": grey, "random": random_fill, "shuffle": shuffle,
           "shuffle_batch": shuffle_batch, "tile": tile, "telea": telea, "ns": navier_stokes}


def counterfactual(name: str, x, box, gen=None):
    """``x`` with its causal ``box`` region replaced by infill ``name``."""
    if name not in COUNTERFACTUAL:
        raise unknown_name("counterfactual infill", name, COUNTERFACTUAL)
    _check(x, box)
    return INFILLS[name](x, box, gen)


def factual(name: str, x, foreground, gen=None, y=None):
    """``x`` with its background (``~foreground``) replaced by infill ``name``."""
    if name not in FACTUAL:
        raise unknown_name("factual infill", name, FACTUAL)
    _check(x, foreground)
    if name == "mixed_rand":
        return mixed_rand(x, foreground, y, gen)
    return INFILLS[name](x, ~foreground, gen)


def mixed_background_view(ds, seed: int, name: str = "val_mixed"):
    """A copy of dataset ``ds`` (with masks) in which every image keeps its foreground and
    takes the background of a random image of another class of ``ds`` (that image's own
    foreground tiled over: :func:`mixed_rand` over the whole set, drawn with ``seed``).
    Its bias labels are dropped (the background's class is not the image's bias value).
    A held-out split seen so measures background reliance without bias labels."""
    from .dataset import BiasedDataset

    if ds.mask is None:
        raise ConfigError(f"{ds.name} has no foreground masks; a mixed-background view needs "
                          "them")
    gen = torch.Generator().manual_seed(seed)
    x = mixed_rand(ds.x.float().div(255.0), ds.mask, ds.y, gen)
    return BiasedDataset(name=name, x=x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8),
                         y=ds.y.clone(), num_classes=ds.num_classes, mask=ds.mask.clone(),
                         meta={**ds.meta, "view": "mixed background (mixed_rand infill)",
                               "view_seed": seed})
