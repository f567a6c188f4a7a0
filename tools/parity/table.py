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


def _largest(measured: dict) -> str:
    worst = measured.get("worst", {})
    if not worst:
        return "-"
    name = max(worst, key=worst.get)
    return f"{worst[name]:.1e} ({name})".replace("|", "\\|")  # a table cell


def _first_failure(measured: dict) -> str:
    fail = measured.get("first_failure")
    if not fail:
        return "did not fail"
    return f"step {fail['step']}, {fail['quantity']} {fail['difference']:.1e}"


def manifests() -> list[dict]:
    return [json.loads(p.read_text()) | {"_name": p.stem} for p in sorted(FIXTURES.glob("*.json"))]


def render() -> str:
    rows = ["| fixture | method | reference | network | steps | largest difference, faithful options | negative control fails at |",
            "|---|---|---|---|---|---|---|"]
    sections = []
    for m in manifests():
        ref, tol, neg = m["reference"], m["tolerances"], m["negative_control"]
        name = m["_name"]
        rows.append(f"| [`{name}`](#{name}) | {m['method']} | {ref['repo']}@{ref['commit'][:7]} | "
                    f"{m['network'] or '-'} | {m['steps']} | {_largest(m['measured']['options'])} | "
                    f"{_first_failure(m['measured']['negative_control'])} |")
        lines = [f"### {name}", "",
                 f"- Reference: {ref['repo']} at {ref['commit']}; recorded with "
                 f"`{m['record']['recorder']}` (torch {m['record']['torch']}, "
                 f"{m['record']['threads']} thread).",
                 f"- Data: {m['data']['name']}; {m['data']['selection']}",
                 f"- Compared (tolerances: absolute {tol['abs']:.0e}, relative {tol['rel']:.0e}): "
                 + "; ".join(m["compared"]) + ".",
                 f"- Largest differences with the faithful options: {_worst(m['measured']['options'])}.",
                 f"- Options: {_options(m['options'])}.",
                 f"- Negative control: {_options(neg['options'])} ({neg['why']}): "
                 f"{_first_failure(m['measured']['negative_control'])}."]
        lines += [f"- Divergence: {d['what']} **Done:** {d['action']}"
                  for d in m.get("divergences", [])]
        lines += [f"- Deliberate deviation of our defaults: {d['what']} **Why:** {d['why']}"
                  for d in m.get("deviations", [])]
        sections.append("\n".join(lines))
    return "\n".join(rows) + "\n\n" + "\n\n".join(sections)


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
