"""Parity with the authors' code: every fixture in tests/parity/fixtures replays through
debiaskit's own method classes within its tolerances, and its negative control (a
known-wrong option) fails the same comparison (docs/parity.md)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from debiaskit.parity import MANIFEST_FIELDS, load_fixture

FIXTURES = Path(__file__).parent / "parity" / "fixtures"
MANIFESTS = sorted(FIXTURES.glob("*.json"))
MAX_TOTAL_BYTES = 25 * 2**20


def _replay(manifest_path: Path, which: str):
    fixture = load_fixture(manifest_path)
    module = importlib.import_module(f"parity.replay_{fixture.manifest['replay']}")
    options = (fixture.manifest["options"] if which == "options"
               else fixture.manifest["negative_control"]["options"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fixture, module.replay(fixture, options)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.stem)
def test_replay_matches_the_reference(manifest):
    fixture, result = _replay(manifest, "options")
    assert result.passed, f"{fixture.name}: {result.summary()}"
    assert result.steps == fixture.manifest["steps"]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.stem)
def test_negative_control_fails(manifest):
    fixture, result = _replay(manifest, "negative_control")
    assert result.first_failure is not None, (
        f"{fixture.name}: the known-wrong option "
        f"{fixture.manifest['negative_control']['options']} passed: {result.summary()}")


def test_fixtures_are_complete_and_small():
    names = [p.stem for p in MANIFESTS]
    assert len(names) >= 8, names
    total = 0
    for manifest in MANIFESTS:
        fixture = load_fixture(manifest)
        assert all(k in fixture.manifest for k in MANIFEST_FIELDS)
        assert fixture.manifest["steps"] >= 20 or fixture.manifest.get("short_reason"), fixture.name
        total += manifest.stat().st_size + manifest.with_suffix(".npz").stat().st_size
    assert total <= MAX_TOTAL_BYTES, f"fixtures take {total / 2**20:.1f} MiB"
