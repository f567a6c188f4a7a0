"""Paired differences between two arms of a bench table, seed by seed.

A bench report compares every arm with the preset's paired baseline (e.g. ERM); a claim
between two other arms (CF/F: "the combination is at least F(Shuffle)") needs the same
comparison between them. For each column of one row: the mean over the seeds both arms
finished of (A's run minus B's run with the same seed), with a two-sided 95 % t interval
(the bench's own ``paired_difference``), and how many seeds A is ahead on.

    python benchmarks/paired.py benchmarks/results/cff-bgshift16-cpu \\
        "+CF(Grey)+F(Shuffle)" "+F(Shuffle)" --row 95 --out FILE.json

FOLDER holds the runs as a bench writes them (``ARM/ROW/seedN``) or as they are committed
under ``benchmarks/results`` (``ARM-ROW-seedN``); each finished run's ``summary.json``
gives the selected epoch's metric (``--metric``, default plain accuracy) on every column's
split.
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

from debiaskit.bench.tables import paired_difference
from debiaskit.train.record import machine


def seeds_of(folder: Path, arm: str, row: str, column: str, metric: str) -> dict[int, float]:
    """Seed -> the arm's metric on split ``column``, over its finished runs in ``folder``."""
    found = {}
    for run in sorted(folder.glob(f"{glob.escape(arm)}/{row}/seed*")) + sorted(
            folder.glob(f"{glob.escape(arm)}-{row}-seed*")):
        summary = run / "summary.json"
        if summary.is_file():
            seed = int(run.name.rsplit("seed", 1)[1])
            found[seed] = json.loads(summary.read_text())["metrics"][column][metric]
    if not found:
        raise SystemExit(f"no finished run of {arm!r}, row {row!r} in {folder}; check the "
                         "arm and row names")
    return found


def compare(folder: Path, a: str, b: str, row: str, columns: list[str],
            metric: str = "accuracy") -> dict:
    out = {}
    for column in columns:
        va, vb = (seeds_of(folder, m, row, column, metric) for m in (a, b))
        both = sorted(set(va) & set(vb))
        d = paired_difference([va[s] for s in both], [vb[s] for s in both])
        out[column] = {**d, "seeds": both, "ahead": sum(va[s] > vb[s] for s in both)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="a bench preset's folder of runs")
    ap.add_argument("a", help="arm A (as the preset names it)")
    ap.add_argument("b", help="arm B")
    ap.add_argument("--row", required=True)
    ap.add_argument("--columns", default="original,mixed_same,mixed_rand,mixed_next")
    ap.add_argument("--metric", default="accuracy")
    ap.add_argument("--out", type=Path, help="JSON to write (optional)")
    args = ap.parse_args()
    table = compare(args.folder, args.a, args.b, args.row, args.columns.split(","),
                    args.metric)
    for column, d in table.items():
        interval = ("-" if d["low"] is None
                    else f"[{d['low']:+.2f}, {d['high']:+.2f}]")
        print(f"{args.a} - {args.b}, {args.row}, {column}: {d['mean']:+.2f} {interval}, "
              f"ahead on {d['ahead']} of {d['n']} seeds {d['seeds']}")
    if args.out:
        args.out.write_text(json.dumps({"machine": machine(), "a": args.a, "b": args.b, "row": args.row,
                                        "metric": args.metric, "columns": table},
                                       indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
