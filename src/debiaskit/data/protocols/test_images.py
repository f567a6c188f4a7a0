"""Which CIFAR-10 test images a protocol evaluates on.

The local ``cifar10.npz`` test set is mostly JPEG-decoded and grouped by class
(data/README.md); its ``lossless`` marks pick the 1,000 exact images. ``test_set="all"``
takes the whole test split, ``"lossless"`` only the exact images; reports carry the
description this module gives.
"""

from __future__ import annotations

import numpy as np

from ...errors import ConfigError
from ..image_source import ImageSource

TEST_SETS = ("all", "lossless")


def pick_test_images(source: ImageSource, test_set: str) -> tuple[np.ndarray, str]:
    """(indices into ``source``'s test split, a description for reports) of ``test_set``;
    an unknown name, or ``lossless`` on a source without the marks, is a one-line
    ConfigError."""
    if test_set not in TEST_SETS:
        raise ConfigError(f"test_set {test_set!r} is unknown; give one of: {', '.join(TEST_SETS)}")
    split = source.split("test")
    lossless = split.extras.get("lossless")
    if test_set == "lossless":
        if lossless is None:
            raise ConfigError(f"test_set 'lossless' needs the lossless marks of cifar10.npz; "
                              f"{source.origin} has none (its test set is used whole: give "
                              "test_set=all)")
        pick = np.flatnonzero(lossless)
        return pick, f"the {len(pick):,} exact (lossless) test images"
    pick = np.arange(len(split))
    if lossless is not None and not lossless.all():
        return pick, (f"the whole local test set ({len(pick):,} images, "
                      f"{int((~lossless).sum()):,} of them decoded from JPEG, grouped by class)")
    return pick, f"the whole test set ({len(pick):,} images)"
