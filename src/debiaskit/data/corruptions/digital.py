"""Digital corruptions of CIFAR-10-C: brightness, contrast, elastic_transform, pixelate,
jpeg_compression, saturate (Hendrycks' CIFAR constants)."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image
from skimage import color as skcolor

from debiaskit.data.corruptions._common import (Corruption, sk_gaussian, to_unit, to_unit32,
                                                uniform_from)

__all__ = ["brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
           "jpeg_backend", "saturate", "warp_affine_cv4", "map_bilinear_scipy15", "CORRUPTIONS"]

BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
#: (saturation multiplier, saturation offset)
SATURATE = ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2))
JPEG_COMPRESSION = (80, 65, 58, 50, 40)
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)
ELASTIC_IMSIZE = 32
#: (alpha, sigma, affine jitter) in pixels = IMSIZE * (fractions as written in the original)
ELASTIC_FRACTIONS = ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                     (0.1, 0.03, 0.03))
ELASTIC_TRANSFORM = tuple(tuple(ELASTIC_IMSIZE * f for f in row) for row in ELASTIC_FRACTIONS)
#: Affine control points: centre (16, 16) +- square size 10.
ELASTIC_POINTS = np.float32([[26, 26], [26, 6], [6, 6]])


def brightness(images: np.ndarray, c: float, rng=None) -> np.ndarray:
    """Brightness: to HSV (``skimage.color.rgb2hsv`` of the [0, 1] float64 image), add
    ``c`` = 0.05, 0.1, 0.15, 0.2, 0.3 to V and clip it to [0, 1], back to RGB
    (``hsv2rgb``), clip, times 255. No random draws."""
    x = skcolor.rgb2hsv(to_unit(images))
    x[..., 2] = np.clip(x[..., 2] + c, 0, 1)
    return np.clip(skcolor.hsv2rgb(x), 0, 1) * 255


def saturate(images: np.ndarray, c, rng=None) -> np.ndarray:
    """Saturation change: to HSV (``skimage.color.rgb2hsv``), ``S = clip(S * c[0] + c[1],
    0, 1)``, back to RGB, clip, times 255.

    Constants: (0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2). Not monotone in
    severity: severities 1-2 desaturate (severity 2 most), 3-5 oversaturate increasingly.
    No random draws.
    """
    x = skcolor.rgb2hsv(to_unit(images))
    x[..., 1] = np.clip(x[..., 1] * c[0] + c[1], 0, 1)
    return np.clip(skcolor.hsv2rgb(x), 0, 1) * 255


def contrast(images: np.ndarray, c: float, rng=None) -> np.ndarray:
    """Contrast: ``clip((x - mean) * c + mean, 0, 1) * 255`` with ``x`` in [0, 1] and one
    mean per image and channel (over the 32 x 32 pixels); ``c`` = 0.75, 0.5, 0.4, 0.3,
    0.15. No random draws."""
    x = to_unit(images)
    means = np.mean(x, axis=(1, 2), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


#: libjpeg release used through the ``jpeglib`` package, a dependency (IJG libjpeg 9a-9d all
#: encode and decode these images the same way; 9e changed the encoder).
LIBJPEG_VERSION = "9d"


def _jpeglib():
    try:
        import jpeglib
    except ImportError:
        return None
    return jpeglib


def jpeg_backend() -> str:
    """Which JPEG codec :func:`jpeg_compression` uses here: ``"libjpeg 9d (jpeglib
    <version>)"`` when the ``jpeglib`` package (a dependency) is installed, else ``"Pillow
    <version> (<its libjpeg>)"``. Record it next to any cached JPEG-corrupted data."""
    lib = _jpeglib()
    if lib is not None:
        return f"libjpeg {LIBJPEG_VERSION} (jpeglib {getattr(lib, '__version__', '?')})"
    from PIL import __version__ as pil_version
    from PIL import features
    if features.check_feature("libjpeg_turbo"):
        return f"Pillow {pil_version} (libjpeg-turbo {features.version('libjpeg_turbo')})"
    return f"Pillow {pil_version} (libjpeg {features.version('jpg')})"


def _jpeg_libjpeg9(images: np.ndarray, quality: int, lib) -> np.ndarray:
    import os
    import tempfile
    out = np.empty_like(images)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp, lib.version(LIBJPEG_VERSION):
        path = os.path.join(tmp, "x.jpg")
        for i, img in enumerate(images):  # the codec works on files, one image at a time
            lib.from_spatial(np.ascontiguousarray(img)).write_spatial(path, qt=int(quality))
            out[i] = lib.read_spatial(path).spatial.reshape(img.shape)
    return out


def jpeg_compression(images: np.ndarray, c: int, rng=None) -> np.ndarray:
    """JPEG: encode each image at quality ``c`` = 80, 65, 58, 50, 40 with the settings
    Pillow uses by default (standard tables scaled by the quality, 4:2:0 chroma
    subsampling, integer DCT, no optimisation) and decode it. No random draws.

    Codec: the original ran with Pillow's wheels of its time (before Pillow 9), which
    bundled IJG libjpeg 9; IJG libjpeg 9 down- and up-samples chroma by scaling the DCT,
    which libjpeg-turbo (bundled by Pillow 9 and later) does not, so the two codecs give
    images about a grey level apart. When the ``jpeglib`` package (a dependency) is there,
    its bundled libjpeg 9d is used, which reproduces those Pillow releases' JPEG output;
    otherwise the installed Pillow's codec is. :func:`jpeg_backend` says which. Either way
    this is a loop over images (the codecs work per image).
    """
    lib = _jpeglib()
    if lib is not None:
        return _jpeg_libjpeg9(images, c, lib)
    out = np.empty_like(images)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=c)
        buf.seek(0)
        with Image.open(buf) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"))
    return out


def pixelate(images: np.ndarray, c: float, rng=None) -> np.ndarray:
    """Pixelate: Pillow BOX resize of the 32 x 32 image down to ``int(32 * c)`` pixels a
    side and BOX resize back to 32 x 32; ``c`` = 0.95, 0.9, 0.85, 0.75, 0.65 (30, 28, 27,
    24, 20 pixels).

    Pillow's 8-bit fixed-point resampling is reproduced by calling Pillow itself, per
    image (a loop of Pillow calls). No random draws.
    """
    n, h, w, _ = images.shape
    small = (int(w * c), int(h * c))
    out = np.empty_like(images)
    for i, img in enumerate(images):
        pil = Image.fromarray(img).resize(small, Image.BOX).resize((w, h), Image.BOX)
        out[i] = np.asarray(pil)
    return out


# OpenCV 4.x warpAffine (INTER_LINEAR): source coordinates in fixed point with 10 fractional
# bits, rounded to 1/32 pixel, and bilinear weights taken from a 32 x 32 table.
_AB_BITS, _INTER_BITS = 10, 5
_INTER_TAB = 1 << _INTER_BITS


def _reflect101(p: np.ndarray, n: int) -> np.ndarray:
    """Index ``p`` mirrored into [0, n) without repeating the edge (BORDER_REFLECT_101)."""
    period = 2 * n - 2
    p = np.mod(p, period)
    return np.where(p >= n, period - p, p)


def warp_affine_cv4(x: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """``cv2.warpAffine(x[i], matrices[i], (W, H), borderMode=cv2.BORDER_REFLECT_101)``
    (bilinear) for a float32 batch (N, H, W, C), as OpenCV 4.x computes it.

    OpenCV 5 changed this function's arithmetic (its output differs by up to a few grey
    levels), so the 4.x algorithm the original ran with is written out here, batched:
    the forward matrix is inverted in double; for output pixel (x, y) the source position
    is accumulated in fixed point with 2^10 steps per pixel (each term rounded half to
    even), offset by half a 1/32 step and cut to 1/32 pixel (integer part ``sx``, fraction
    ``fx = k/32``, likewise for y); the value is the float32 sum
    ``((s00*w00 + s01*w01) + s10*w10) + s11*w11`` with weights ``(1-fy)(1-fx)``,
    ``(1-fy)fx``, ``fy(1-fx)``, ``fy fx`` and the four neighbours' indices mirrored into
    the image (reflect-101) where they fall outside.
    """
    n, h, w, _ = x.shape
    m = np.asarray(matrices, dtype=np.float64).reshape(n, 6).copy()
    det = m[:, 0] * m[:, 4] - m[:, 1] * m[:, 3]
    inv = np.where(det != 0, 1.0 / np.where(det != 0, det, 1.0), 0.0)
    a11, a22 = m[:, 4] * inv, m[:, 0] * inv
    m[:, 0], m[:, 4] = a11, a22
    m[:, 1] *= -inv
    m[:, 3] *= -inv
    b1 = -m[:, 0] * m[:, 2] - m[:, 1] * m[:, 5]
    b2 = -m[:, 3] * m[:, 2] - m[:, 4] * m[:, 5]
    m[:, 2], m[:, 5] = b1, b2
    scale = 1 << _AB_BITS
    half_step = scale // _INTER_TAB // 2
    cols = np.arange(w, dtype=np.float64)[None, :]
    rows = np.arange(h, dtype=np.float64)[None, :]
    col_dx = np.rint(m[:, 0:1] * cols * scale).astype(np.int64)
    col_dy = np.rint(m[:, 3:4] * cols * scale).astype(np.int64)
    row_x = np.rint((m[:, 1:2] * rows + m[:, 2:3]) * scale).astype(np.int64) + half_step
    row_y = np.rint((m[:, 4:5] * rows + m[:, 5:6]) * scale).astype(np.int64) + half_step
    fx_fixed = (row_x[:, :, None] + col_dx[:, None, :]) >> (_AB_BITS - _INTER_BITS)
    fy_fixed = (row_y[:, :, None] + col_dy[:, None, :]) >> (_AB_BITS - _INTER_BITS)
    sx, sy = fx_fixed >> _INTER_BITS, fy_fixed >> _INTER_BITS
    step = np.float32(1.0 / _INTER_TAB)
    fx = (fx_fixed & (_INTER_TAB - 1)).astype(np.float32) * step
    fy = (fy_fixed & (_INTER_TAB - 1)).astype(np.float32) * step
    one = np.float32(1)
    x0, x1 = _reflect101(sx, w), _reflect101(sx + 1, w)
    y0, y1 = _reflect101(sy, h), _reflect101(sy + 1, h)
    b = np.arange(n)[:, None, None]
    out = x[b, y0, x0] * ((one - fy) * (one - fx))[..., None]
    out += x[b, y0, x1] * ((one - fy) * fx)[..., None]
    out += x[b, y1, x0] * (fy * (one - fx))[..., None]
    out += x[b, y1, x1] * (fy * fx)[..., None]
    return out


def _scipy15_reflect(coord: np.ndarray, n: int) -> np.ndarray:
    """Where SciPy < 1.6 ``map_coordinates(mode='reflect')`` put an out-of-range
    coordinate: below 0, ``-c - 1`` (after removing whole periods of 2n); above n - 1,
    ``2n - c - 1`` once past n (coordinates in (n-1, n) are left alone)."""
    c = coord.copy()
    period = 2 * n
    low = c < 0
    v = c[low]
    far = v < -period
    v[far] = period * np.trunc(-v[far] / period) + v[far]
    c[low] = np.where(v < -n, v + period, -v - 1)
    high = c > n - 1
    v = c[high] - period * np.trunc(c[high] / period)
    c[high] = np.where(v >= n, period - v - 1, v)
    return c


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """Integer index mirrored about the edge pixels (period 2n - 2), as SciPy < 1.6 folded
    the taps of its interpolation."""
    period = 2 * n - 2
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


def map_bilinear_scipy15(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.map_coordinates(image, (rows, cols, channel), order=1,
    mode='reflect')`` per image of a float32 batch (N, H, W, C) as SciPy before 1.6
    computed it, which is what the original (and LfF's pinned SciPy 1.3) ran: the
    coordinate is first moved by :func:`_scipy15_reflect`, then interpolated between
    ``floor(c)`` and ``floor(c) + 1`` with those two indices mirrored into the image.
    Near the border this differs from SciPy >= 1.6, which reflects about the pixel edge
    consistently. ``rows``/``cols``: (N, H, W) float64. Returns float32 (N, H, W, C)."""
    n, h, w, _ = images.shape
    rows = _scipy15_reflect(rows, h)
    cols = _scipy15_reflect(cols, w)
    r0, c0 = np.floor(rows), np.floor(cols)
    ty, tx = rows - r0, cols - c0
    r0, c0 = r0.astype(np.intp), c0.astype(np.intp)
    ra, rb = _mirror(r0, h), _mirror(r0 + 1, h)
    ca, cb = _mirror(c0, w), _mirror(c0 + 1, w)
    b = np.arange(n)[:, None, None]
    out = images[b, ra, ca] * ((1 - ty) * (1 - tx))[..., None]
    out += images[b, ra, cb] * ((1 - ty) * tx)[..., None]
    out += images[b, rb, ca] * (ty * (1 - tx))[..., None]
    out += images[b, rb, cb] * (ty * tx)[..., None]
    return out.astype(np.float32)


def elastic_transform(images: np.ndarray, c, rng: np.random.RandomState) -> np.ndarray:
    """Elastic: a random affine warp, then a smooth random displacement field.

    Constants (alpha, sigma, affine jitter) = 32 * ((0, 0, 0.08), (0.05, 0.2, 0.07),
    (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)) pixels; at severity 1
    alpha = sigma = 0, so only the affine part acts.

    Per image on the float32 [0, 1] image: the control points (26, 26), (26, 6), (6, 6)
    are jittered by ``uniform(-c[2], c[2], size=(3, 2))`` (cast to float32),
    ``cv2.getAffineTransform`` + ``cv2.warpAffine`` (bilinear, BORDER_REFLECT_101, with
    OpenCV 4.x arithmetic: :func:`warp_affine_cv4`); then
    ``dx``, ``dy`` = ``gaussian(uniform(-1, 1, (32, 32)), c[1], mode='reflect',
    truncate=3) * c[0]`` (float32), and the image is resampled at (row + dy, column + dx)
    with ``scipy.ndimage.map_coordinates(order=1, mode='reflect')``, the same field for
    all channels; clip, times 255. Draws per image, in order: the 6 affine jitters, the
    1024 uniforms of dx, the 1024 of dy.

    Two library behaviours of the original's time are reproduced rather than taken from
    the installed libraries, which changed them: the warp is OpenCV 4.x's
    (:func:`warp_affine_cv4`; OpenCV 5 computes it differently) and the resampling is
    SciPy < 1.6's (:func:`map_bilinear_scipy15`; SciPy 1.6 changed the 'reflect'
    boundary), as in LfF's pinned environment (SciPy 1.3, OpenCV 4.2), which produced
    LfF's datasets (which versions Hendrycks ran is not known). Only
    ``cv2.getAffineTransform`` runs per image; everything else is batched.
    """
    alpha, sigma, jitter = c
    x = to_unit32(images)
    n, h, w, _ = x.shape
    u = rng.random_sample((n, 6 + 2 * h * w))
    shifts = uniform_from(u[:, :6], -jitter, jitter).reshape(n, 3, 2).astype(np.float32)
    matrices = np.stack([cv2.getAffineTransform(ELASTIC_POINTS, ELASTIC_POINTS + shift)
                         for shift in shifts])
    warped = warp_affine_cv4(x, matrices)
    fields = uniform_from(u[:, 6:], -1, 1).reshape(n, 2, h, w)
    dx = (sk_gaussian(fields[:, 0], sigma, axes=(1, 2), mode="reflect", truncate=3)
          * alpha).astype(np.float32)
    dy = (sk_gaussian(fields[:, 1], sigma, axes=(1, 2), mode="reflect", truncate=3)
          * alpha).astype(np.float32)
    rows = np.arange(h, dtype=np.float64)[None, :, None] + dy
    cols = np.arange(w, dtype=np.float64)[None, None, :] + dx
    out = map_bilinear_scipy15(warped, rows, cols)
    return np.clip(out, 0, 1) * 255


CORRUPTIONS = [
    Corruption("brightness", "digital", BRIGHTNESS, "adds c to the HSV value channel", True,
               None, brightness),
    Corruption("contrast", "digital", CONTRAST,
               "pulls every channel towards its mean by the factor c", True, None, contrast),
    Corruption("elastic_transform", "digital", ELASTIC_TRANSFORM,
               "random affine warp plus smooth random displacement (alpha, sigma, jitter)",
               False, 32, elastic_transform),
    Corruption("pixelate", "digital", PIXELATE,
               "BOX downscale to int(32*c) pixels and BOX upscale back", True, 32, pixelate),
    Corruption("jpeg_compression", "digital", JPEG_COMPRESSION,
               "JPEG round trip at quality c", True, None, jpeg_compression),
    Corruption("saturate", "digital", SATURATE,
               "HSV saturation S*c0 + c1 (1-2 desaturate, 3-5 oversaturate)", True, None,
               saturate),
]
