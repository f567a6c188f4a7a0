"""Helpers shared by the data-protocol recorders (numpy only; no debiaskit import)."""

from __future__ import annotations

import hashlib
import subprocess

import numpy as np

#: image fingerprints: sum of pixel * weight modulo a prime; any change of any pixel by
#: less than 255 changes the fingerprint (the weights are in 1 .. 2^16 < P, P prime)
FP_PRIME = 2_147_483_647
FP_SEED = 20261207


def fingerprint(images: np.ndarray) -> np.ndarray:
    """One uint32 per image (N, ...) uint8: ``sum(pixel * W) mod P``, W drawn from
    ``default_rng(FP_SEED)`` with the shape of one image."""
    images = np.asarray(images)
    w = np.random.default_rng(FP_SEED).integers(1, 2 ** 16, size=images.shape[1:],
                                                 dtype=np.int64).ravel()
    flat = images.reshape(len(images), -1)
    out = np.empty(len(images), dtype=np.int64)
    for lo in range(0, len(images), 4096):
        out[lo:lo + 4096] = (flat[lo:lo + 4096].astype(np.int64) @ w) % FP_PRIME
    return out.astype(np.uint32)


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def git_head(path: str) -> str:
    return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
