"""Table presets of the papers, one module per paper, behind one registry."""

from __future__ import annotations

from ...errors import unknown_name
from . import cff, gba, lad, lff, sih
from .table import Row, TablePreset

__all__ = ["PRESETS", "Row", "TablePreset", "get_preset"]


def _collect(*modules) -> dict[str, TablePreset]:
    found = [v for m in modules for v in vars(m).values() if isinstance(v, TablePreset)]
    return {p.name: p for p in found}


#: every preset of every paper module, by name
PRESETS = _collect(lff, sih, lad, gba, cff)


def get_preset(name: str) -> TablePreset:
    if name not in PRESETS:
        raise unknown_name("bench preset", name, PRESETS)
    return PRESETS[name]
