"""Helpers shared by the data-protocol recorders (numpy, and debiaskit.parity from src/,
which the recorders put on sys.path; nothing else of debiaskit)."""

from __future__ import annotations

import hashlib
import subprocess

import numpy as np

from debiaskit.parity import FINGERPRINT_SEED as FP_SEED, fingerprint  # noqa: F401 (re-exported)


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def git_head(path: str) -> str:
    return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
