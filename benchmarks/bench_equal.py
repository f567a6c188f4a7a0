"""Whether two bench output folders of one preset hold the same numbers, bit for bit.

Run the same bench with two versions of the code (e.g. before and after a refactoring that
must not change results; one checkout per version on PYTHONPATH), then compare:

    PYTHONPATH=OLD/src debiaskit bench quick --workers 1 --out before
    PYTHONPATH=NEW/src debiaskit bench quick --workers 1 --out after
    python benchmarks/bench_equal.py before after quick

Every run's every epoch record of ``metrics.jsonl`` (training statistics, evaluation
metrics, learning rates; the seconds left out), its summary's selected and last-epoch
metrics, and ``results.json``'s numbers must be equal. Exit status 0 when they are, 1 when
not (the first difference is printed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: Fields of an epoch record that measure time, not arithmetic.
TIMES = ("train_seconds", "seconds")


def numbers(folder: Path, preset: str) -> dict:
    """Run (METHOD/ROW/seedN) -> its epoch records and summary metrics, plus the table."""
    out = {}
    for metrics in sorted((folder / preset).glob("*/*/seed*/metrics.jsonl")):
        run = metrics.parent.relative_to(folder / preset).as_posix()
        records = [json.loads(line) for line in metrics.read_text().splitlines()]
        out[run] = [{k: v for k, v in r.items() if k not in TIMES} for r in records]
        summary = json.loads((metrics.parent / "summary.json").read_text())
        out[run + " (summary)"] = {k: summary[k] for k in
                                   ("metrics", "last_epoch_metrics", "selected_epoch")}
    out["results.json"] = json.loads((folder / preset / "results.json").read_text())["numbers"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("preset")
    args = ap.parse_args()
    a, b = numbers(args.before, args.preset), numbers(args.after, args.preset)
    runs = [k for k in a if "/" in k and not k.endswith("(summary)")]
    epochs = sum(len(a[k]) for k in runs)
    if a.keys() != b.keys():
        print(f"{args.preset}: different runs: {sorted(a.keys() ^ b.keys())}")
        return 1
    for key in a:
        if a[key] != b[key]:
            print(f"{args.preset}: {key} differs")
            return 1
    print(f"{args.preset}: {len(runs)} runs, {epochs} epoch records and the table: equal, "
          "bit for bit")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
