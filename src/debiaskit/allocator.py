"""Process-level settings that keep the training hot path close to its arithmetic."""

from __future__ import annotations

import ctypes
import os
import sys

_MMAP_THRESHOLD, _TRIM_THRESHOLD = -3, -1  # glibc mallopt parameter numbers


def keep_freed_buffers() -> bool:
    """Ask glibc to keep freed batch-sized buffers instead of unmapping them.

    Every training step allocates and frees a few MB-sized tensors (the batch, the first
    layer's activations and gradients). By default glibc returns each to the OS and the
    next step pays page faults to map it again, about 15 % of an MLP epoch here. Raising
    the mmap and trim thresholds to 32 MB keeps them in the heap. Linux/glibc only; set
    ``DEBIASKIT_NO_MALLOPT=1`` to skip. Returns whether the setting was applied.
    """
    if not sys.platform.startswith("linux") or os.environ.get("DEBIASKIT_NO_MALLOPT"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    limit = 32 * 1024 * 1024
    return bool(libc.mallopt(_MMAP_THRESHOLD, limit)) and bool(libc.mallopt(_TRIM_THRESHOLD, limit))
