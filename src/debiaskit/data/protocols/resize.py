"""Resizing a protocol's images to a stated side (BAR, Corrupted CIFAR-10 CPU presets)."""

from __future__ import annotations

import numpy as np

from ...errors import ConfigError

#: the one filter protocols resize with (PIL bicubic; downscaling widens its support, so it
#: averages rather than skips pixels)
RESIZE = "bicubic"
#: bump when the resizing below changes, so that the cache never serves old images
RESIZE_VERSION = 1


def check_image_size(image_size) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
            or not 8 <= int(image_size) <= 1024:
        raise ConfigError(f"image_size {image_size!r} is out of range; give the side in pixels, "
                          "an integer in [8, 1024] (e.g. 16, 32, 64 or 224)")
    return int(image_size)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, C) images resized to (N, size, size, C) with PIL bicubic; images
    already of that size are returned as they are."""
    if images.shape[1:3] == (size, size):
        return images
    from PIL import Image
    out = np.empty((len(images), size, size) + images.shape[3:], dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))
    return out
