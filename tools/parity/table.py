"""Print (or, with --write, update in docs/parity.md) the parity table from the fixtures'
manifests: one row per fixture, one line per divergence and per deliberate deviation.

usage: python tools/parity/table.py [--write]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "parity" / "fixtures"
DOC = ROOT / "docs" / "parity.md"
BEGIN, END = "<!-- parity-table: begin (tools/parity/table.py) -->", "<!-- parity-table: end -->"


def _options(options: dict) -> str:
    parts = []
    for key, value in options.items():
        if isinstance(value, dict):
            parts += [f"{k}={json.dumps(v)}" for k, v in value.items()]
        else:
            parts.append(f"{key}={json.dumps(value)}")
    return ", ".join(f"`{p}`" for p in parts) or "defaults"


def _worst(measured: dict) -> str:
    worst = measured.get("worst", {})
    return "; ".join(f"{k} {v:.1e}" for k, v in sorted(worst.items())) or "-"


def _first_failure(measured: dict) -> str:
    fail = measured.get("first_failure")
    if not fail:
        return "did not fail"
    return f"step {fail['step']}, {fail['quantity']} {fail['difference']:.1e}"


def manifests() -> list[dict]:
    return [json.loads(p.read_text()) | {"_name": p.stem} for p in sorted(FIXTURES.glob("*.json"))]


def render() -> str:
    rows = ["| fixture | method | reference | data | network | steps | compared | largest difference (faithful options) | tolerance | options | negative control: option, first failure |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for m in manifests():
        ref = m["reference"]
        tol = m["tolerances"]
        neg = m["negative_control"]
        rows.append(" | ".join([
            f"| `{m['_name']}`", m["method"], f"{ref['repo']}@{ref['commit'][:7]}",
            m["data"]["name"], str(m["network"] or "-"), str(m["steps"]),
            "; ".join(m["compared"]), _worst(m["measured"]["options"]),
            f"abs {tol['abs']:.0e}, rel {tol['rel']:.0e}", _options(m["options"]),
            f"{_options(neg['options'])}: {_first_failure(m['measured']['negative_control'])} |"]))
        for d in m.get("divergences", []):
            notes.append(f"- `{m['_name']}`, divergence: {d['what']} **Done:** {d['action']}")
        for d in m.get("deviations", []):
            notes.append(f"- `{m['_name']}`, deliberate deviation of our defaults: {d['what']} **Why:** {d['why']}")
    return "\n".join(rows + ["", "Divergences found and deviations kept:", ""] + (notes or ["- none"]))


def main(argv: list[str]) -> int:
    table = render()
    if "--write" not in argv:
        print(table)
        return 0
    text = DOC.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
