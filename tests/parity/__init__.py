"""Replays of parity fixtures: one module ``replay_<name>.py`` per reference code.

Each module has ``replay(fixture, options) -> debiaskit.parity.Comparison``: it builds
debiaskit's own method from ``options`` (the manifest's ``options`` or its
``negative_control`` options), loads the fixture's initial weights, feeds the recorded
batches and random draws through the method's ``update`` on one thread, and compares
every recorded quantity step by step.
"""

import os
from pathlib import Path

import pytest

#: The real data directory: DEBIASKIT_DATA, else the sibling ../shared/data (the whole
#: test suite reads it from here, tests/conftest.py too).
DATA_DIR = Path(os.environ.get("DEBIASKIT_DATA") or
                Path(__file__).resolve().parents[3] / "shared" / "data").resolve()


def real_data(name: str) -> Path:
    """``DATA_DIR / name``; skips the calling test when that file is not there."""
    path = DATA_DIR / name
    if not path.is_file():
        pytest.skip(f"real {name} not found in {DATA_DIR}; set DEBIASKIT_DATA")
    return path
