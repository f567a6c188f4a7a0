"""Mean +- sample std over finished runs of the same configuration (seeds), per split.

For runs made with ``debiaskit train`` outside a bench preset (e.g. another f_strong on a
bench's walks via ``--reuse-stages``): prints each run's accuracy, conflicting-only accuracy
and the run's protocol, then the mean +- sample std (the bench report's statistic).

    python benchmarks/runs_table.py RUN_DIR [RUN_DIR ...] [--out table.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from debiaskit import runs
from debiaskit.bench.tables import mean_std
from debiaskit.train.record import machine

COLUMNS = ("accuracy", "conflicting")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dirs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    summaries = {}
    for run_dir in args.run_dirs:
        if not runs.is_finished(run_dir):
            raise SystemExit(f"{run_dir} holds no finished run; train it to the end first")
        summaries[str(run_dir)] = runs.read_json(run_dir / runs.SUMMARY)
    values: dict[str, list[float]] = {}
    for run_dir, summary in summaries.items():
        print(f"{run_dir}: {summary['protocol']}")
        for split, metrics in summary["metrics"].items():
            for column in COLUMNS:
                if metrics.get(column) is not None:
                    values.setdefault(f"{split} {column}", []).append(metrics[column])
                    print(f"  {split} {column}: {metrics[column]:.2f}")
    table = {}
    print(f"mean +- sample std over {len(summaries)} runs:")
    for name, vals in values.items():
        mu, sd = mean_std(vals)
        table[name] = {"mean": mu, "std": sd, "values": vals}
        print(f"  {name}: {mu:.2f} +- {sd:.2f}  ({' / '.join(f'{v:.2f}' for v in vals)})")
    if args.out:
        runs.write_json(args.out, {"machine": machine(), "runs": list(summaries), "table": table})


if __name__ == "__main__":
    main()
