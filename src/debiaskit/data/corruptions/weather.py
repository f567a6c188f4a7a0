"""Weather corruptions of CIFAR-10-C: snow, frost, fog, spatter (Hendrycks' CIFAR
constants)."""

from __future__ import annotations

import cv2
import numpy as np

from debiaskit.data.corruptions._common import (Corruption, clipped_zoom, im_motion_blur,
                                                sk_gaussian, to_unit, to_unit32,
                                                uniform_from)
from debiaskit.data.corruptions.textures import resized_frost_textures

__all__ = ["snow", "frost", "fog", "spatter", "plasma_fractal", "CORRUPTIONS"]

#: (snow mean, snow std, zoom factor, threshold, blur radius, blur sigma, image weight)
SNOW = ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))
#: (weight of the image, weight of the frost texture), 0-255 scale
FROST = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))
#: (fog strength, plasma wibble decay)
FOG = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))
#: (liquid mean, liquid std, liquid blur sigma, threshold, water intensity / mud sigma,
#:  mode 0 = water, 1 = mud)
SPATTER = ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
           (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
           (0.65, 0.1, 0.5, 0.68, 0.6, 1))

FOG_MAPSIZE = 32
SPATTER_EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])


# --------------------------------------------------------------------------- snow


def snow(images: np.ndarray, c, rng: np.random.RandomState) -> np.ndarray:
    """Snow: a sparse flake layer streaked by a motion blur, added twice, over a slightly
    whitened image.

    Constants (mean, std, zoom, threshold, blur radius, blur sigma, image weight):
    (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
    (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8).

    Per image: layer = ``normal(size=(32, 32), loc=c[0], scale=c[1])``; centre zoom by
    ``c[2]`` (bilinear, as ``scipy.ndimage.zoom``); values below ``c[3]`` set to 0; then
    ``uint8(clip(layer, 0, 1) * 255)`` (truncation) is motion-blurred with radius ``c[4]``,
    sigma ``c[5]`` at angle ``uniform(-135, -45)`` degrees (roughly vertical) and divided
    by 255. The image (float32, [0, 1]) becomes ``c[6]*x + (1-c[6])*max(x, 1.5*gray + 0.5)``
    with ``gray = cv2.cvtColor(x, RGB2GRAY)`` = (0.299 R + 0.587 G) + 0.114 B in float32
    (OpenCV 4.x's arithmetic, computed here in numpy); the result is
    ``clip(x + flakes + rot180(flakes), 0, 1) * 255``. Draws per image, in order: the
    (32, 32) normals, then the angle.

    Substitution: the original blurs the flake layer with ImageMagick (a greyscale PNG
    through Wand); this uses the numpy re-implementation of ImageMagick's motion blur
    shared with ``motion_blur`` (one-sided Gaussian-weighted line kernel of 2*radius+1
    taps, edge replication, the 16-to-8-bit truncation of ImageMagick 6.9.11 Q16's PNG
    output), which reproduced that build's greyscale output exactly where compared.
    """
    mean, std, zoom, threshold, radius, sigma, weight = c
    n, h, w, _ = images.shape
    layers = np.empty((n, h, w), dtype=np.float64)
    angles = np.empty(n, dtype=np.float64)
    for i in range(n):  # normals and an angle alternate per image
        layers[i] = rng.normal(size=(h, w), loc=mean, scale=std)
        angles[i] = rng.uniform(-135, -45)
    layers = clipped_zoom(layers[..., None], zoom)
    layers[layers < threshold] = 0
    flakes = (np.clip(layers, 0, 1) * 255).astype(np.uint8)
    flakes = im_motion_blur(flakes, radius, sigma, angles) / 255.

    x = to_unit32(images)
    # cv2.cvtColor(x, COLOR_RGB2GRAY) on float32 as OpenCV 4.2 (LfF's pinned version)
    # computes it: (0.299R + 0.587G) + 0.114B; later versions (4.8, 5.0) differ in the
    # last bit of a few values
    gray = ((x[..., 0] * np.float32(0.299) + x[..., 1] * np.float32(0.587))
            + x[..., 2] * np.float32(0.114))[..., None]
    x = weight * x + (1 - weight) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + flakes + np.rot90(flakes, k=2, axes=(1, 2)), 0, 1) * 255


# --------------------------------------------------------------------------- frost


def frost(images: np.ndarray, c, rng: np.random.RandomState) -> np.ndarray:
    """Frost: ``clip(c[0] * x + c[1] * crop, 0, 255)`` on the 0-255 scale, ``crop`` a
    random 32 x 32 window of a frost photograph scaled by 0.2.

    Constants (image weight, frost weight): (1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4),
    (0.75, 0.45). Per image, in order: ``idx = randint(5)`` picks frost1..frost5 (frost6 is
    never used; frost2 and frost3 are the same picture, so it has probability 2/5), the
    texture is resized by ``cv2.resize(fx=0.2, fy=0.2)`` (INTER_LINEAR, no anti-aliasing),
    then ``randint(0, H - 32)`` and ``randint(0, W - 32)`` (upper bounds exclusive) give the
    top-left corner. The crop is taken in RGB (the original flips its BGR crop).
    Textures: :func:`~debiaskit.data.corruptions.textures.frost_textures`.
    """
    image_w, frost_w = c
    textures = resized_frost_textures()
    n, h, w, _ = images.shape
    crops = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        tex = textures[rng.randint(5)]
        top = rng.randint(0, tex.shape[0] - h)
        left = rng.randint(0, tex.shape[1] - w)
        crops[i] = tex[top:top + h, left:left + w]
    return np.clip(image_w * images + frost_w * crops, 0, 255)


# --------------------------------------------------------------------------- fog


def plasma_fractal(rng: np.random.RandomState, n: int, decay: float,
                   mapsize: int = FOG_MAPSIZE, wibble: float = 100.0) -> np.ndarray:
    """N diamond-square plasma maps of ``mapsize`` x ``mapsize``, each normalised to
    [0, 1], wrapping around the edges.

    Per map: start with 0 at (0, 0); at each level (step = mapsize, mapsize/2, ..., 2) set
    the square centres to the mean of their 4 corners, then the edge midpoints on the
    corner rows and on the centre rows to the mean of their 4 diamond neighbours (indices
    wrap), each new value plus ``wibble * uniform(-wibble, wibble)``; ``wibble`` starts at
    100 and is divided by ``decay`` after each level. Draws per map, in order, per level:
    the squares, the corner-row midpoints, the centre-row midpoints (k x k each, k = 1, 2,
    4, 8, 16 for mapsize 32); map i's draws all come before map i+1's.
    """
    levels = []
    step = mapsize
    while step >= 2:
        levels.append(step)
        step //= 2
    per_map = sum(3 * (mapsize // s) ** 2 for s in levels)
    u = rng.random_sample((n, per_map))
    maps = np.zeros((n, mapsize, mapsize), dtype=np.float64)
    pos = 0

    def noisy_mean(total: np.ndarray, wib: float) -> np.ndarray:
        nonlocal pos
        k = total.shape[1] * total.shape[2]
        draw = uniform_from(u[:, pos:pos + k], -wib, wib).reshape(total.shape)
        pos += k
        return total / 4 + wib * draw

    for step in levels:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        sums = corners + np.roll(corners, -1, axis=1)
        sums = sums + np.roll(sums, -1, axis=2)
        maps[:, half::step, half::step] = noisy_mean(sums, wibble)
        centres = maps[:, half::step, half::step]
        corners = maps[:, 0::step, 0::step]
        edge_rows = ((centres + np.roll(centres, 1, axis=1))
                     + (corners + np.roll(corners, -1, axis=2)))
        maps[:, 0::step, half::step] = noisy_mean(edge_rows, wibble)
        centre_rows = ((centres + np.roll(centres, 1, axis=2))
                       + (corners + np.roll(corners, -1, axis=1)))
        maps[:, half::step, 0::step] = noisy_mean(centre_rows, wibble)
        wibble /= decay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def fog(images: np.ndarray, c, rng: np.random.RandomState) -> np.ndarray:
    """Fog: add a plasma-fractal cloud and wash the image out,
    ``clip((x + c[0]*plasma) * m / (m + c[0]), 0, 1) * 255`` with ``x`` in [0, 1] (float64),
    the same 32 x 32 plasma map (:func:`plasma_fractal`, wibble decay ``c[1]``) on all
    channels and ``m`` the maximum of the clean image over all pixels and channels.

    Constants (strength, decay): (0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75). The
    map is 32 x 32 as in the CIFAR code (ImageNet-C uses 256). Draws: 1023 uniforms per
    image (see :func:`plasma_fractal`).
    """
    strength, decay = c
    x = to_unit(images)
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    x = x + strength * plasma_fractal(rng, x.shape[0], decay)[:, :x.shape[1], :x.shape[2], None]
    return np.clip(x * max_val / (max_val + strength), 0, 1) * 255


# --------------------------------------------------------------------------- spatter


def _water_relief(liquid_u8: np.ndarray) -> np.ndarray:
    """Per image: Canny edges of the liquid layer, distance to the nearest edge capped at
    20, blurred, histogram-equalised, embossed, blurred again (float32)."""
    out = np.empty(liquid_u8.shape, dtype=np.float32)
    for i, layer in enumerate(liquid_u8):  # OpenCV image-level operations, one per image
        dist = 255 - cv2.Canny(layer, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        dist = cv2.filter2D(dist, cv2.CV_8U, SPATTER_EMBOSS)
        out[i] = cv2.blur(dist, (3, 3)).astype(np.float32)
    return out


def spatter(images: np.ndarray, c, rng: np.random.RandomState) -> np.ndarray:
    """Spatter: a random liquid mask; clear turquoise water at severities 1-3, opaque mud
    at severities 4-5.

    Constants (mean, std, blur sigma, threshold, intensity / mud sigma, mode):
    (0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
    (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1).

    Liquid layer (the only draw, ``normal(size=(32, 32), loc=c[0], scale=c[1])`` per
    image): Gaussian blur ``c[2]`` (scikit-image defaults), values below ``c[3]`` set to 0.

    Water (mode 0): ``L = uint8(liquid * 255)`` (truncation); relief = Canny(50, 150) ->
    255 - edges -> ``distanceTransform(DIST_L2, 5)`` -> capped at 20 -> 3 x 3 box blur ->
    uint8 -> ``equalizeHist`` -> emboss ``[[-2,-1,0],[-1,1,1],[0,1,2]]`` (saturating uint8)
    -> 3 x 3 box blur; ``m = L * relief / max(L * relief) * c[4]``; the image (float32)
    gets ``m * (175, 238, 238) / 255`` added to R, G, B. Mud (mode 1):
    ``m = gaussian(liquid > c[3], c[4])`` with values below 0.8 set to 0;
    ``x * (1 - m) + m * (63, 42, 20) / 255``. Both clip to [0, 1], times 255.

    Two departures where the original's behaviour is undefined: ``uint8(liquid * 255)``
    wraps modulo 256 explicitly for values above 255 (the original's float-to-uint8 cast
    of such values is platform-dependent), and an image whose water mask is empty
    (``max(L * relief) == 0``, where the original divides 0 by 0 and casts NaN to uint8)
    is returned without water. The relief steps are OpenCV image operations run per image;
    the rest is batched.
    """
    mean, std, blur_sigma, threshold, strength, mode = c
    x = to_unit32(images)
    n, h, w, _ = x.shape
    liquid = rng.normal(size=(n, h, w), loc=mean, scale=std)
    liquid = sk_gaussian(liquid, blur_sigma, axes=(1, 2))
    liquid[liquid < threshold] = 0
    if mode == 0:
        liquid_u8 = (np.floor(liquid * 255).astype(np.int64) % 256).astype(np.uint8)
        m = liquid_u8 * _water_relief(liquid_u8)  # float32
        peak = m.max(axis=(1, 2), keepdims=True)
        empty = peak == 0
        m = np.where(empty, np.float32(0), m / np.where(empty, np.float32(1), peak))
        m *= strength
        color = np.array([175 / 255., 238 / 255., 238 / 255.], dtype=np.float32)
        return np.clip(x + m[..., None] * color, 0, 1) * 255
    m = np.where(liquid > threshold, 1, 0)
    m = sk_gaussian(m.astype(np.float32), strength, axes=(1, 2))
    m[m < 0.8] = 0
    color = np.array([63 / 255., 42 / 255., 20 / 255.], dtype=np.float32) * m[..., None]
    x *= (1 - m[..., None])
    return np.clip(x + color, 0, 1) * 255


CORRUPTIONS = [
    Corruption("snow", "weather", SNOW,
               "motion-blurred random snow flakes over a whitened image", False, 32, snow),
    Corruption("frost", "weather", FROST,
               "blend with a random crop of a frost photograph", False, 32, frost),
    Corruption("fog", "weather", FOG,
               "plasma-fractal fog that washes the image out", False, 32, fog),
    Corruption("spatter", "weather", SPATTER,
               "turquoise water splashes (severity 1-3) or mud blobs (4-5)", False, 32,
               spatter),
]
