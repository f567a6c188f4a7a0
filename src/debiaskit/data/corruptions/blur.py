"""Blur corruptions of CIFAR-10-C: defocus_blur, glass_blur, motion_blur, zoom_blur,
gaussian_blur (Hendrycks' CIFAR constants)."""

from __future__ import annotations

import cv2
import numpy as np

from debiaskit.data.corruptions._common import (Corruption, from_planes, im_motion_blur,
                                                sk_gaussian, to_planes, to_unit, to_unit32,
                                                zoom_plane)

__all__ = ["defocus_blur", "glass_blur", "glass_shuffle", "motion_blur", "zoom_blur",
           "gaussian_blur", "defocus_kernel", "zoom_factors", "CORRUPTIONS"]

#: (disk radius, sigma of the 3x3 anti-aliasing Gaussian)
DEFOCUS_BLUR = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))
#: (sigma, max_delta, iterations)
GLASS_BLUR = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))
#: (ImageMagick radius, ImageMagick sigma)
MOTION_BLUR = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))
#: (start, stop, step) of the float ``np.arange`` of zoom factors
ZOOM_BLUR = ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01),
             (1, 1.26, 0.01))
GAUSSIAN_BLUR = (0.4, 0.6, 0.7, 0.8, 1.0)


# --------------------------------------------------------------------------- defocus


def defocus_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The defocus kernel: a float32 disk ``X^2 + Y^2 <= radius^2`` on the 17 x 17 grid
    ``arange(-8, 9)`` (the grid of every CIFAR radius, all <= 8), divided by its sum, then
    smoothed by ``cv2.GaussianBlur(ksize=(3, 3), sigmaX=alias_blur)``. Returned cropped to
    the smallest centred square holding its non-zero taps (zero taps add nothing)."""
    if radius > 8:
        raise ValueError("defocus_kernel covers the CIFAR radii (<= 8) only")
    grid = np.arange(-8, 8 + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array((xx ** 2 + yy ** 2) <= radius ** 2, dtype=np.float32)
    disk /= np.sum(disk)
    kernel = cv2.GaussianBlur(disk, ksize=(3, 3), sigmaX=alias_blur)
    taps = np.argwhere(kernel != 0)
    half = int(np.abs(taps - 8).max())
    return kernel[8 - half:8 + half + 1, 8 - half:8 + half + 1]


def defocus_blur(images: np.ndarray, c, rng=None) -> np.ndarray:
    """Defocus: correlate each channel of the [0, 1] float64 image with
    :func:`defocus_kernel` (``cv2.filter2D``, border BORDER_REFLECT_101), clip, times 255.

    Constants (radius, alias sigma): (0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2),
    (1.5, 0.1). At severities 1-3 the disk is a single pixel, so the kernel is a 3 x 3
    Gaussian of sigma 0.4 / 0.5 / 0.6; severity 4 is a 5-pixel plus shape, severity 5 a
    3 x 3 box. Batched: every image is padded by reflection (reflect-101) and the padded
    images are stacked into one tall image for a single ``cv2.filter2D`` call; the padded
    margins are cut off again. No random draws.
    """
    kernel = defocus_kernel(*c)
    p = kernel.shape[0] // 2
    x = to_unit(images)
    n, h, w, ch = x.shape
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    tall = padded.reshape(n * (h + 2 * p), w + 2 * p, ch)
    out = cv2.filter2D(tall, -1, kernel).reshape(padded.shape)[:, p:p + h, p:p + w]
    return np.clip(out, 0, 1) * 255


# --------------------------------------------------------------------------- glass


def glass_blur(images: np.ndarray, c, rng: np.random.RandomState) -> np.ndarray:
    """Glass: Gaussian blur (sigma ``c[0]``, scikit-image defaults: mode 'nearest',
    truncate 4), truncate to uint8 (``np.uint8(blur * 255)``), then ``c[2]`` passes of
    local pixel shuffling, then the same Gaussian blur again, clip, times 255.

    Constants (sigma, max_delta, iterations): (0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1),
    (0.25, 1, 2), (0.4, 1, 2).

    Shuffling, as the original does it: for each pass, rows h = 31..2 (descending), and
    within a row columns w = 31..2 (descending), draw ``dx, dy = randint(-1, 1, size=2)``
    and do ``x[h, w], x[h+dy, w+dx] = x[h+dy, w+dx], x[h, w]`` on numpy views. Two quirks
    are kept: that statement copies the neighbour into (h, w) and leaves the neighbour
    unchanged (no swap), and ``randint(-1, 1)`` only yields -1 or 0, so a pixel only ever
    receives its left, upper or upper-left neighbour (or keeps its value); rows and
    columns 0 and 1 are never targets.

    Batched form: the source (h+dy, w+dx) of every target lies up and/or left of it,
    i.e. later in the descending visiting order, so when it is read it still holds the
    value from before the pass. Each pass is therefore one simultaneous gather,
    ``new[h, w] = old[h+dy, w+dx]``, done for all targets of all images at once. The
    draws are the original's: per image, per pass, 900 pairs in visiting order (one bulk
    ``randint`` call of shape (N, passes, 30, 30, 2) gives the same numbers).
    """
    sigma, max_delta, iterations = c
    n, h, w, _ = images.shape
    x = (sk_gaussian(to_unit(images), sigma, axes=(1, 2)) * 255).astype(np.uint8)  # truncation
    # per image, per pass, one (dx, dy) pair per target in visiting order (rows 31..2,
    # columns 31..2): one bulk randint gives the same numbers as the original's calls
    draws = rng.randint(-max_delta, max_delta,
                        size=(n, iterations, h - 2 * max_delta, w - 2 * max_delta, 2))
    for it in range(iterations):
        x = glass_shuffle(x, draws[:, it], max_delta)
    return np.clip(sk_gaussian(x / 255., sigma, axes=(1, 2)), 0, 1) * 255


def glass_shuffle(x: np.ndarray, draws: np.ndarray, max_delta: int = 1) -> np.ndarray:
    """One pass of glass blur's pixel "swapping" on a uint8 batch (N, H, W, C).

    ``draws[n, i, j] = (dx, dy)`` is the pair drawn for target row ``H-1-max_delta-i``,
    column ``W-1-max_delta-j`` (the original's visiting order, both descending). Every
    target (h, w) receives the pixel at (h+dy, w+dx), read before the pass, and sources
    keep their values (the original's tuple assignment on views copies, it does not swap).
    Reading the old values is exact for ``max_delta == 1``: offsets are then -1 or 0, so a
    source is never visited before its target. Returns a new array.
    """
    if max_delta != 1:  # positive offsets would read pixels already overwritten
        raise ValueError("glass_shuffle's one-gather form needs max_delta == 1")
    n, h, w, _ = x.shape
    rows = np.arange(h - max_delta, max_delta, -1)[None, :, None]  # 31..2
    cols = np.arange(w - max_delta, max_delta, -1)[None, None, :]
    imgs = np.arange(n)[:, None, None]
    out = x.copy()
    out[imgs, rows, cols] = x[imgs, rows + draws[..., 1], cols + draws[..., 0]]
    return out


# --------------------------------------------------------------------------- motion


def motion_blur(images: np.ndarray, c, rng: np.random.RandomState) -> np.ndarray:
    """Motion blur along a random direction: ImageMagick's ``MotionBlurImage`` with
    radius ``c[0]`` and sigma ``c[1]`` at angle ``uniform(-45, 45)`` degrees (one draw per
    image). Constants: (6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5), i.e. one-sided kernels
    of 13, 13, 13, 17 and 19 taps.

    Substitution: the original encodes the image as PNG, blurs it with ImageMagick through
    Wand and decodes the PNG with OpenCV. This is a numpy re-implementation of that
    pipeline (:func:`~debiaskit.data.corruptions._common.im_motion_blur`): Gaussian
    weights ``exp(-i^2 / (2 sigma^2))`` for i = 0..2*radius, normalised; offsets
    ``(ceil(i cos a - 0.5), ceil(i sin a - 0.5))``; edge replication off the image; Q16
    accumulation rounded to 16 bits, then the 16-to-8-bit truncation found in ImageMagick
    6.9.11 Q16's PNG output. It reproduced that ImageMagick build's output exactly where
    compared; other builds (HDRI, Q8, ImageMagick 7) may differ by a grey level. The
    grey-PNG quirk (a greyscale result comes back as one channel and is replicated)
    changes no values. The output is already uint8, as the original's. The draws are the
    original's: one ``uniform(-45, 45)`` per image.
    """
    radius, sigma = c
    angles = rng.uniform(-45, 45, size=images.shape[0])
    return im_motion_blur(images, radius, sigma, angles)


# --------------------------------------------------------------------------- zoom


def zoom_factors(c) -> np.ndarray:
    """The zoom factors of one severity: the float64 ``np.arange(start, stop, step)`` of
    the original, with its endpoint quirk (7, 12, 16, 21, 26 factors for severities 1..5:
    the nominal stop is included at severities 1 and 2 only)."""
    return np.arange(*c)


def zoom_blur(images: np.ndarray, c, rng=None, chunk: int = 64) -> np.ndarray:
    """Zoom (radial) blur: the float32 [0, 1] image plus its centre zooms at every factor
    of :func:`zoom_factors` (factor 1.0 included, so the unzoomed image counts twice),
    divided by ``len(factors) + 1``, clip, times 255.

    Constants: ``np.arange(1, stop, 0.01)`` with stop 1.06, 1.11, 1.16, 1.21, 1.26, i.e.
    7, 12, 16, 21 and 26 factors, largest 1.06, 1.11, 1.15, 1.20, 1.25. Each zoom crops
    the central ``ceil(32 / z)`` square, zooms it with ``scipy.ndimage.zoom(order=1)`` and
    trims the centre 32 x 32 (:func:`~debiaskit.data.corruptions._common.clipped_zoom`,
    which is bit-identical to SciPy's zoom but batched). Sums are accumulated in float32
    in factor order, as in the original. No random draws.
    """
    factors = zoom_factors(c)
    n = images.shape[0]
    out = np.empty(images.shape, dtype=np.float32)
    for start in range(0, n, chunk):  # small spatial-first chunks: cheap, cache-sized gathers
        part = images[start:start + chunk]
        x = to_planes(to_unit32(part))
        x64 = x.astype(np.float64)
        acc = np.zeros_like(x)
        zoomed, scratch = np.empty_like(x64), np.empty_like(x64)
        for z in factors:
            # scipy.ndimage.zoom returns float32 for float32 input: cast, then add in float32
            acc += zoom_plane(x64, z, zoomed, scratch).astype(np.float32)
        out[start:start + chunk] = from_planes((x + acc) / (len(factors) + 1), len(part))
    return np.clip(out, 0, 1) * 255


# --------------------------------------------------------------------------- gaussian


def gaussian_blur(images: np.ndarray, c: float, rng=None) -> np.ndarray:
    """Gaussian blur of each channel with sigma ``c`` = 0.4, 0.6, 0.7, 0.8, 1.0, as
    ``skimage.filters.gaussian(x / 255., sigma=c, channel_axis=-1)`` (mode 'nearest',
    truncate 4, no blur across channels), clip, times 255. No random draws."""
    return np.clip(sk_gaussian(to_unit(images), c, axes=(1, 2)), 0, 1) * 255


CORRUPTIONS = [
    Corruption("defocus_blur", "blur", DEFOCUS_BLUR,
               "correlation with an anti-aliased disk (radius, alias sigma)", True, None,
               defocus_blur),
    Corruption("glass_blur", "blur", GLASS_BLUR,
               "Gaussian blur, local copying of up/left neighbours, Gaussian blur again",
               False, 32, glass_blur),
    Corruption("motion_blur", "blur", MOTION_BLUR,
               "ImageMagick-style one-sided motion blur at a random angle in [-45, 45] deg",
               False, None, motion_blur),
    Corruption("zoom_blur", "blur", ZOOM_BLUR,
               "average of centre zooms by factors np.arange(1, stop, 0.01)", True, 32,
               zoom_blur),
    Corruption("gaussian_blur", "blur", GAUSSIAN_BLUR,
               "per-channel Gaussian blur of sigma c", True, None, gaussian_blur),
]
