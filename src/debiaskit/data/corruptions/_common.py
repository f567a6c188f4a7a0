"""Shared pieces of the CIFAR-10-C corruptions: the Corruption record, float/uint8
conversions, draws, Gaussian filtering, the clipped zoom and the ImageMagick-style
motion blur.

Every function here works on a whole batch ``(N, H, W, C)`` at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

__all__ = ["Corruption", "to_unit", "to_unit32", "to_uint8", "uniform_from", "sk_gaussian",
           "clipped_zoom", "zoom_plane", "to_planes", "from_planes", "motion_blur_offsets",
           "motion_blur_weights", "im_motion_blur"]


@dataclass(frozen=True, eq=False)
class Corruption:
    """One CIFAR-10-C corruption.

    ``severities`` holds the constants of Hendrycks severities 1..5 (element s-1 for
    severity s), exactly as in ``make_cifar_c.py``. ``deterministic`` is true when the
    corruption makes no random draws (the ``rng`` argument is then ignored).
    ``image_size`` is the side the corruption needs (32, CIFAR) or ``None`` when any
    ``H x W`` works. ``func(images, constants, rng)`` does the work on a validated batch;
    call it through :func:`debiaskit.data.corruptions.corrupt`.
    """

    name: str
    family: str
    severities: tuple
    description: str
    deterministic: bool
    image_size: int | None = None
    func: Callable = field(default=None, repr=False, compare=False)

    def __call__(self, images, severity: int, rng=None) -> np.ndarray:
        from debiaskit.data.corruptions import corrupt
        return corrupt(images, self.name, severity, rng)


# --------------------------------------------------------------------------- conversions


def to_unit(images: np.ndarray) -> np.ndarray:
    """``np.array(x) / 255.``: float64 in [0, 1]."""
    return images / 255.0


def to_unit32(images: np.ndarray) -> np.ndarray:
    """``np.array(x, dtype=np.float32) / 255.``: float32 in [0, 1]."""
    return images.astype(np.float32) / np.float32(255.0)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """``np.uint8(v)`` of values already in [0, 255]: truncation toward zero, as the
    original's final cast does (254.9999 becomes 254)."""
    return np.ascontiguousarray(values.astype(np.uint8))


def uniform_from(u: np.ndarray, low: float, high: float) -> np.ndarray:
    """Turn ``random_sample`` draws into ``uniform(low, high)`` draws exactly as the
    legacy ``RandomState.uniform`` computes them (``low + (high - low) * u``), so one bulk
    ``random_sample`` can stand in for a sequence of ``uniform`` calls."""
    return low + (high - low) * u


# --------------------------------------------------------------------------- filters


def sk_gaussian(x: np.ndarray, sigma: float, axes=(1, 2), mode: str = "nearest",
                truncate: float = 4.0) -> np.ndarray:
    """``skimage.filters.gaussian`` on every image of a batch: a separable Gaussian of
    ``sigma`` along ``axes`` only (batch and channel axes untouched), boundary ``mode``
    ('nearest' is scikit-image's default), kernel cut at ``truncate`` sigmas. The output
    dtype is the input's (float32 stays float32, as in scikit-image)."""
    sigmas = [0.0] * x.ndim
    for axis in axes:
        sigmas[axis] = float(sigma)
    return ndi.gaussian_filter(x, sigmas, mode=mode, truncate=truncate)


def _zoom_axis(size: int, factor: float, keep: int):
    """Source indices and linear weights that ``scipy.ndimage.zoom(order=1)`` uses along
    one axis of length ``size`` zoomed by ``factor`` (output length ``round(size*factor)``,
    ``grid_mode=False``), for the ``keep`` central output samples that survive the trim."""
    out = int(round(size * factor))
    trim = (out - keep) // 2
    ratio = (size - 1) / (out - 1) if out > 1 else 0.0
    coord = np.arange(trim, trim + keep, dtype=np.float64) * ratio
    lo = np.floor(coord).astype(np.intp)
    t = coord - lo
    lo = np.minimum(lo, size - 1)
    hi = np.minimum(lo + 1, size - 1)  # where t == 0 the upper neighbour has weight 0
    return lo, hi, 1.0 - t, t


def zoom_plane(xt: np.ndarray, factor: float, out: np.ndarray | None = None,
               tmp: np.ndarray | None = None) -> np.ndarray:
    """:func:`clipped_zoom` on a spatial-first float64 stack ``xt`` (S, S, M), M = images x
    channels, a layout in which every gather copies contiguous rows. Returns the float64
    result (S, S, M), written into ``out`` if given (``tmp``: optional scratch buffer of
    the same shape); the caller casts it to the dtype scipy would return."""
    size = xt.shape[0]
    ch = int(math.ceil(size / factor))
    top = (size - ch) // 2
    crop = xt[top:top + ch, top:top + ch]
    lo, hi, w_lo, w_hi = _zoom_axis(ch, factor, size)
    rows_lo, rows_hi = crop[lo], crop[hi]
    wr0, wr1 = w_lo[:, None, None], w_hi[:, None, None]
    wc0, wc1 = w_lo[None, :, None], w_hi[None, :, None]
    out = np.empty(xt.shape, dtype=np.float64) if out is None else out
    tmp = np.empty(xt.shape, dtype=np.float64) if tmp is None else tmp
    # scipy's order-1 sum over the 2 x 2 footprint, term by term in its order:
    # ((v00*r0)*c0 + (v01*r0)*c1) + (v10*r1)*c0 + (v11*r1)*c1, in float64.
    np.multiply(rows_lo[:, lo], wr0, out=out)
    out *= wc0
    for rows, wr, cols, wc in ((rows_lo, wr0, hi, wc1), (rows_hi, wr1, lo, wc0),
                               (rows_hi, wr1, hi, wc1)):
        np.multiply(rows[:, cols], wr, out=tmp)
        tmp *= wc
        out += tmp
    return out


def to_planes(x: np.ndarray) -> np.ndarray:
    """(N, S, S, C) -> spatial-first (S, S, N*C)."""
    n, h, w, c = x.shape
    return np.ascontiguousarray(x.transpose(1, 2, 0, 3)).reshape(h, w, n * c)


def from_planes(xt: np.ndarray, n: int) -> np.ndarray:
    """Spatial-first (S, S, N*C) -> (N, S, S, C)."""
    h, w, m = xt.shape
    return np.ascontiguousarray(xt.reshape(h, w, n, m // n).transpose(2, 0, 1, 3))


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom every image of ``x`` (N, S, S, C) about its centre by ``factor`` and keep the
    central S x S: crop the central ``ceil(S/factor)`` square (top offset
    ``(S - ch) // 2``), zoom it bilinearly as ``scipy.ndimage.zoom(crop, (f, f, 1),
    order=1)`` does, and trim ``(out - S) // 2`` from the top/left.

    The bilinear sum is written out in the order SciPy evaluates it (in float64, then cast
    to the input dtype), which reproduces ``scipy.ndimage.zoom`` bit for bit while doing
    the whole batch with a few array operations.
    """
    planes = to_planes(x).astype(np.float64, copy=False)
    return from_planes(zoom_plane(planes, factor).astype(x.dtype, copy=False), x.shape[0])


# --------------------------------------------------------------------------- motion blur


def motion_blur_weights(radius: float, sigma: float) -> np.ndarray:
    """ImageMagick ``MotionBlurImage`` weights: ``width = 2*ceil(radius) + 1`` taps,
    ``w_i = exp(-i^2 / (2 sigma^2)) / (sqrt(2 pi) sigma)`` for i = 0..width-1, normalised
    to sum 1 (one-sided: tap 0 is the pixel itself)."""
    width = int(2 * math.ceil(radius) + 1)
    i = np.arange(width, dtype=np.float64)
    w = np.exp(-(i * i) / (2.0 * sigma * sigma)) / (math.sqrt(2.0 * math.pi) * sigma)
    return w / w.sum()


def motion_blur_offsets(width: int, angles_deg: np.ndarray):
    """Per-image tap offsets for angle(s) in degrees: ``dx_i = ceil(i*cos(a) - 0.5)``,
    ``dy_i = ceil(i*sin(a) - 0.5)`` (x = column, y = row, y down), computed as ImageMagick
    does, through ``(width*sin, width*cos)`` divided by their hypotenuse."""
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))[:, None]
    px = width * np.sin(a)
    py = width * np.cos(a)
    hyp = np.hypot(px, py)
    i = np.arange(width, dtype=np.float64)[None, :]
    dx = np.ceil(i * py / hyp - 0.5).astype(np.intp)
    dy = np.ceil(i * px / hyp - 0.5).astype(np.intp)
    return dx, dy


def im_motion_blur(images: np.ndarray, radius: float, sigma: float,
                   angles_deg: np.ndarray, chunk: int = 256) -> np.ndarray:
    """ImageMagick's motion blur of a uint8 batch (N, H, W, C), one angle per image,
    re-implemented without ImageMagick.

    ``out(x, y) = sum_i w_i * in(x + dx_i, y + dy_i)`` with the weights of
    :func:`motion_blur_weights` and offsets of :func:`motion_blur_offsets`; samples off the
    image repeat the nearest edge pixel (ImageMagick's default virtual pixels). The sum is
    done as a Q16 ImageMagick build does it (8-bit values scaled by 257, accumulated in
    double in tap order, rounded to a 16-bit quantum ``q``), and ``q`` is brought back to 8
    bits as ``q // 257`` (truncation): that is what ImageMagick 6.9.11 Q16 (non-HDRI), the
    build the fidelity harness runs, was found to write into the PNG the original decodes,
    on CIFAR images at all the radius/sigma pairs used here, for RGB and greyscale PNGs.

    Batched: images are processed in order of angle, so that for each tap the images
    sharing an offset form contiguous runs, each shifted with one slice of the
    edge-padded batch.
    """
    n, h, w, c = images.shape
    weights = motion_blur_weights(radius, sigma)
    width = len(weights)
    dx, dy = motion_blur_offsets(width, angles_deg)
    pad = width - 1
    order = np.argsort(np.asarray(angles_deg), kind="stable")
    out = np.empty_like(images)
    for start in range(0, n, chunk):
        idx = order[start:start + chunk]
        src = np.pad(images[idx], ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
        ox, oy = dx[idx], dy[idx]
        acc = np.zeros((len(idx), h, w, c), dtype=np.float64)
        for i in range(width):
            cuts = np.flatnonzero((np.diff(ox[:, i]) != 0) | (np.diff(oy[:, i]) != 0)) + 1
            bounds = [0, *cuts.tolist(), len(idx)]
            for a, b in zip(bounds[:-1], bounds[1:]):
                r0, c0 = pad + oy[a, i], pad + ox[a, i]
                acc[a:b] += weights[i] * (src[a:b, r0:r0 + h, c0:c0 + w] * 257.0)
        q = np.clip(np.floor(acc + 0.5), 0, 65535)
        out[idx] = (q // 257).astype(np.uint8)
    return out
