"""Checks several test modules share."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn


#: The repository's root folder.
ROOT = Path(__file__).resolve().parents[1]


def benchmark(name: str):
    """The script ``benchmarks/NAME.py`` as a module (loaded once, registered as
    ``benchmarks_NAME``), for tests of what a benchmark builds."""
    key = f"benchmarks_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


class Stopped(Exception):
    """Raised by :func:`train_until` in place of a kill."""


def train_until(cfg, out, monkeypatch, epochs: int = 1) -> None:
    """Train ``cfg`` into ``out`` and stop it right after the checkpoint of epoch ``epochs``
    (as a kill would: the run directory is left unfinished, its lock released)."""
    from debiaskit.train import train, trainer

    save = trainer.Trainer._save_epoch

    def stop(self, method, record, best, schedulers):
        save(self, method, record, best, schedulers)
        if record["epoch"] == epochs:
            raise Stopped

    with monkeypatch.context() as m:
        m.setattr(trainer.Trainer, "_save_epoch", stop)
        with pytest.raises(Stopped):
            train(cfg, out)


def one_line(err: BaseException) -> str:
    """The error's text, asserted to be one non-empty line without surrounding space."""
    text = str(err)
    assert "\n" not in text and text.strip() == text and text, repr(text)
    return text


def assert_bilinear_aligned(out, mask):
    """Images resampled bilinearly, masks nearest, at the same points: the nearest of the
    four bilinear neighbours has weight >= 1/4 (each offset <= 1/2), so where the mask is
    True the image (0/1 pixels) is >= 1/4, and where it is False the image is <= 3/4."""
    assert mask.dtype == torch.bool and mask.shape == (out.shape[0], *out.shape[2:])
    eps = 1e-5
    for c in range(out.shape[1]):
        assert (out[:, c][mask] >= 0.25 - eps).all()
        assert (out[:, c][~mask] <= 0.75 + eps).all()
    # and the check has teeth: most pixels are clearly foreground or background
    assert ((out[:, 0] > 0.999) | (out[:, 0] < 0.001)).float().mean() > 0.3
    assert 0.05 < mask.float().mean() < 0.95


class FixedLogits(nn.Module):
    """A network that answers every input with the same ``logits`` row."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits.expand(len(x), -1)
