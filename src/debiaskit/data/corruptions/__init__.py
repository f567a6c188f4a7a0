"""The 19 CIFAR-10-C corruptions of Hendrycks & Dietterich, with the CIFAR constants.

A batched re-implementation of ``make_cifar_c.py`` (hendrycks/robustness), written from
the documented algorithm and constants, for NumPy 2 / current SciPy, scikit-image, OpenCV
and Pillow, without ImageMagick::

    from debiaskit.data.corruptions import CORRUPTIONS, corrupt, frost_textures
    out = corrupt(images, "snow", 5, rng=0)   # uint8 (N, 32, 32, 3)

``CORRUPTIONS`` maps each name to a :class:`Corruption` (name, family, severities,
description, deterministic, image_size); it holds the 19 Hendrycks names plus
``"original"`` (the identity, LfF's tenth Type1 "corruption").

Conventions shared by all corruptions:

* ``severity`` is Hendrycks' 1..5. LfF's "severity k" is Hendrycks k+1 (LfF calls
  ``protocol[name](img, severity + 1)``); the caller converts.
* Float results are clipped and TRUNCATED to uint8 (``np.uint8`` of the value), as the
  original's final cast does; they are not rounded.
* Draws come from the legacy ``np.random.RandomState`` given (or ``RandomState(seed)``
  for an int): image 0's draws in the original order, then image 1's, and so on, as if
  the original per-image loop ran over the batch with the global ``np.random`` seeded the
  same way. The output is always a deterministic function of the seed (and, for JPEG,
  of the codec: see ``digital.jpeg_backend``).
* The target is the original run on the libraries of its time (LfF pins NumPy 1.18,
  SciPy 1.3, scikit-image 0.15, OpenCV 4.2, Pillow 7.1, Wand + ImageMagick 6). Where a
  current library computes differently, that library's old arithmetic is re-implemented
  (ImageMagick's motion blur, OpenCV 4's warpAffine and float grey conversion, SciPy <
  1.6's reflect-mode interpolation) and the corruption's docstring says so. What is not
  reproduced: impulse noise run under a newer scikit-image (0.20 and 0.26 were
  checked), which draws from its own unseedable generator (ours replays the older
  global draws), and JPEG when the ``jpeglib`` package (a dependency: libjpeg 9, as
  Pillow < 9 bundled) is missing.
"""

from __future__ import annotations

import numbers

import numpy as np

from debiaskit.data.corruptions import blur, digital, noise, weather
from debiaskit.data.corruptions._common import Corruption, to_uint8
from debiaskit.data.corruptions.textures import frost_textures
from debiaskit.errors import ConfigError, unknown_name

__all__ = ["CORRUPTIONS", "Corruption", "corrupt", "frost_textures", "HENDRYCKS_ORDER",
           "SEVERITIES"]

#: The order in which ``make_cifar_c.py`` generates the corruptions.
HENDRYCKS_ORDER = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression", "speckle_noise", "gaussian_blur",
    "spatter", "saturate",
)
SEVERITIES = (1, 2, 3, 4, 5)
#: Images processed per batched call (memory bound; results do not depend on it).
CHUNK = 1024


def original(images: np.ndarray, c=None, rng=None) -> np.ndarray:
    """The identity (LfF's "Original"): a copy of the images, whatever the severity."""
    return images.copy()


def _build() -> dict:
    found = {c.name: c for module in (noise, blur, weather, digital) for c in module.CORRUPTIONS}
    registry = {name: found[name] for name in HENDRYCKS_ORDER}
    registry["original"] = Corruption("original", "none", (None,) * 5,
                                      "identity: the clean image", True, None, original)
    return registry


#: name -> :class:`Corruption`, in Hendrycks' generation order, then ``"original"``.
CORRUPTIONS = _build()


def _check_images(images, corruption: Corruption) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise ConfigError(f"images must be a numpy uint8 array (N, H, W, 3), got "
                          f"{type(images).__name__}; convert with np.asarray(..., dtype=np.uint8)")
    if images.dtype != np.uint8:
        raise ConfigError(f"images must be uint8 (0-255), got {images.dtype}; convert float "
                          f"images in [0, 1] with (x * 255).round().astype(np.uint8)")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError(f"images must have shape (N, H, W, 3) (RGB, batch first), got "
                          f"{images.shape}; add a batch axis with images[None] for one image")
    size = corruption.image_size
    if size is not None and images.shape[1:3] != (size, size) and images.shape[0] > 0:
        raise ConfigError(f"{corruption.name} needs {size}x{size} images (its constants are "
                          f"CIFAR's), got {images.shape[1]}x{images.shape[2]}; resize first")
    return np.ascontiguousarray(images)


def _check_rng(rng, corruption: Corruption):
    if isinstance(rng, np.random.RandomState):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        if not 0 <= int(rng) < 2 ** 32:
            raise ConfigError(f"seed must be between 0 and 2**32 - 1, got {rng}")
        return np.random.RandomState(int(rng))
    if rng is None and corruption.deterministic:
        return None
    raise ConfigError(f"rng must be an int seed or a np.random.RandomState (the legacy "
                      f"generator the original draws from), got {type(rng).__name__}; "
                      f"pass e.g. rng=0")


def corrupt(images: np.ndarray, name: str, severity: int, rng=None) -> np.ndarray:
    """Apply corruption ``name`` at Hendrycks ``severity`` (1..5) to a batch.

    ``images``: uint8 (N, H, W, 3) RGB, N >= 0 (32 x 32 for the corruptions whose
    constants are tied to CIFAR's size; see ``Corruption.image_size``). ``rng``: a
    ``np.random.RandomState`` (advanced by the draws) or an int seed (for
    ``RandomState(seed)``); it may be omitted for deterministic corruptions only.
    Returns a new uint8 (N, H, W, 3) array; the input is not modified.

    Raises :class:`~debiaskit.errors.ConfigError` for an unknown name, a severity outside
    1..5, a badly typed or shaped array, or an unusable ``rng``.
    """
    if not isinstance(name, str) or name not in CORRUPTIONS:
        raise unknown_name("corruption", str(name), CORRUPTIONS)
    corruption = CORRUPTIONS[name]
    if (not isinstance(severity, numbers.Integral) or isinstance(severity, (bool, np.bool_))
            or int(severity) not in SEVERITIES):
        raise ConfigError(f"severity must be a Hendrycks severity 1..5, got {severity!r}; "
                          f"LfF's severity k is Hendrycks k+1")
    images = _check_images(images, corruption)
    rng = _check_rng(rng, corruption)
    if images.shape[0] == 0:
        return images.copy()
    constants = corruption.severities[int(severity) - 1]
    out = np.empty_like(images)
    # Chunks bound the memory of the batched intermediates; the draws stay those of the
    # per-image loop because each chunk continues the same generator, image by image.
    for start in range(0, images.shape[0], CHUNK):
        part = corruption.func(images[start:start + CHUNK], constants, rng)
        out[start:start + CHUNK] = part if part.dtype == np.uint8 else to_uint8(part)
    return out
