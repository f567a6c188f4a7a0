"""Measured facts about maps and images that the naming's plain-language lines are built
from: the peak region of a map and the share of the map it holds, where two mean images
differ most, and how an image's spectral energy splits over frequency bands.

Every function here is plain numpy on arrays already computed; nothing is trained.
"""

from __future__ import annotations

import numpy as np
import torch

#: A pixel belongs to a map's peak region when its value is at least this fraction of the
#: map's largest value (and it is 8-connected to the largest pixel through such pixels).
PEAK_FRACTION = 0.5

#: Radial frequency bands of :func:`band_energies`: (low, high] in cycles per pixel of the
#: frequency vector's length, named by the period of the waves they hold.
RADIAL_BANDS = ((0.0, 1 / 16, "periods over 16 px"), (1 / 16, 1 / 8, "periods of 8-16 px"),
                (1 / 8, 1 / 4, "periods of 4-8 px"), (1 / 4, 1.0, "periods under 4 px"))

#: Orientation sectors of :func:`band_energies` (the direction of the frequency vector,
#: modulo 180 degrees, within 22.5 degrees of the named angle), named by the stripes the
#: waves draw (rows grow downwards).
ORIENTATIONS = ((0.0, "vertical stripes"), (45.0, "stripes rising to the right (/)"),
                (90.0, "horizontal stripes"), (135.0, "stripes falling to the right (\\)"))


def peak_region(m: np.ndarray, fraction: float = PEAK_FRACTION) -> dict | None:
    """The peak region of a non-negative H x W map: the bounding box of the 8-connected
    component of the pixels at ``fraction`` of the map's largest value or above that holds
    the largest pixel (the first one in row-major order on ties), with :func:`region_share`
    of the map in it. None for a map with no positive value."""
    from scipy import ndimage

    m = np.asarray(m, dtype=np.float64)
    peak = float(m.max()) if m.size else 0.0
    if not peak > 0:
        return None
    labels, _ = ndimage.label(m >= fraction * peak, structure=np.ones((3, 3), dtype=bool))
    r, c = np.unravel_index(int(np.argmax(m)), m.shape)
    rows, cols = np.nonzero(labels == labels[r, c])
    box = {"rows": [int(rows.min()), int(rows.max())], "cols": [int(cols.min()), int(cols.max())]}
    return {**box, **region_share(m, box)}


def region_share(m: np.ndarray, box: dict) -> dict:
    """How much of a non-negative map the box (``rows`` and ``cols``: first and last,
    inclusive) holds: ``share`` (its sum over the map's sum), ``area`` (its pixels over the
    map's) and ``enrichment`` (share / area: 1 for a uniform map)."""
    m = np.asarray(m, dtype=np.float64)
    (r0, r1), (c0, c1) = box["rows"], box["cols"]
    total = float(m.sum())
    share = float(m[r0:r1 + 1, c0:c1 + 1].sum()) / total if total > 0 else 0.0
    area = (r1 - r0 + 1) * (c1 - c0 + 1) / m.size
    return {"share": share, "area": area, "enrichment": share / area}


def box_size(box: dict) -> tuple[int, int]:
    """(height, width) in pixels of a box with inclusive ``rows`` and ``cols``."""
    return box["rows"][1] - box["rows"][0] + 1, box["cols"][1] - box["cols"][0] + 1


def mean_images(x: torch.Tensor, groups: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
    """Mean image in [0, 1] (k x C x H x W, float64) of each group 0..k-1 of the uint8
    images ``x``; a group with no image gets zeros."""
    sums = torch.zeros((k, *x.shape[1:]), dtype=torch.float64)
    counts = np.bincount(groups, minlength=k)
    g = torch.from_numpy(np.asarray(groups, dtype=np.int64))
    for lo in range(0, len(x), chunk):
        sums.index_add_(0, g[lo:lo + chunk], x[lo:lo + chunk].double())
    return (sums / 255.0).numpy() / np.maximum(counts, 1)[:, None, None, None]


def colour_distance(a, b) -> np.ndarray:
    """The colour distance between ``a`` and ``b`` (colours or images, channels first, in
    [0, 1]): the root mean square over the channels of their difference, in [0, 1]. For
    grey images it is the difference in brightness; from pure red to pure green it is
    0.82."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return np.sqrt((diff ** 2).mean(0))


def band_names() -> list[str]:
    """The names of :func:`band_energies`' columns: radial band, orientation sector."""
    return [f"{radial}, {orient}" for *_, radial in RADIAL_BANDS for _, orient in ORIENTATIONS]


def _band_index(h: int, w: int) -> np.ndarray:
    """Per frequency of an H x W real FFT (rows: fftfreq(h), columns: rfftfreq(w)), its
    band (radial band x orientation sector) or -1 for the constant term."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    radius = np.sqrt(fy ** 2 + fx ** 2)
    angle = np.degrees(np.arctan2(fy, fx)) % 180.0
    sector = np.round(angle / 45.0).astype(np.int64) % len(ORIENTATIONS)
    radial = np.full(radius.shape, -1, dtype=np.int64)
    for i, (low, high, _) in enumerate(RADIAL_BANDS):
        radial[(radius > low) & (radius <= high)] = i
    index = radial * len(ORIENTATIONS) + sector
    index[radial < 0] = -1
    return index


def band_energies(x: torch.Tensor, chunk: int = 2048) -> np.ndarray:
    """Per uint8 image (N x C x H x W), the share of its spectral energy in each band of
    :func:`band_names` (N x bands, rows summing to 1; 0 for a uniform image): the squared
    magnitude of the 2-D FFT of its brightness (mean over channels) without the constant
    term, summed per band. Frequencies counted once by the real FFT's half-plane are
    weighted twice, as their mirror images carry the same energy."""
    h, w = x.shape[2:]
    index = _band_index(h, w).ravel()
    weight = np.full((h, w // 2 + 1), 2.0)
    weight[:, 0] = 1.0
    if w % 2 == 0:
        weight[:, -1] = 1.0
    weight = weight.ravel()
    bands = len(RADIAL_BANDS) * len(ORIENTATIONS)
    keep = index >= 0
    out = np.zeros((len(x), bands))
    for lo in range(0, len(x), chunk):
        grey = x[lo:lo + chunk].double().mean(1).numpy() / 255.0
        power = (np.abs(np.fft.rfft2(grey)) ** 2).reshape(len(grey), -1) * weight
        for b in range(bands):
            out[lo:lo + chunk, b] = power[:, keep & (index == b)].sum(1)
    total = out.sum(1, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)
