"""GBA's test-time mask: re-evaluate finished GBA runs with each ``test_mask`` rule.

The bias label is unknown at test time, so the mask of Eq. 7 needs a rule (``predicted``:
D's prediction taken as correct, the default; ``none``: raw features; ``label``: D's
correctness from the true bias labels, an oracle). This reloads each run's selected
networks and evaluates them on the run's test split under all three, without retraining.

    python benchmarks/gba_test_mask.py BENCH/gba-cmnist-cpu/GBA/*/seed* --out FILE.json

Prints per run and, grouped by the run's row folder, mean +- std of the unbiased accuracy.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from debiaskit import runs
from debiaskit.data.loader import InMemoryLoader
from debiaskit.train import evaluate, load_trained
from debiaskit.train.record import machine

RULES = ("predicted", "none", "label")
KEYS = ("unbiased", "aligned", "conflicting", "mean", "bias_gap")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--split", default="test")
    ap.add_argument("--data-dir")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    per_run, grouped = {}, {}
    for run in args.runs:
        prep = load_trained(run, args.data_dir, device="cpu")  # (its loader is the CPU's)
        method = prep.method
        if "test_mask" not in method.hp:
            raise SystemExit(f"{run} is not a GBA run (no test_mask hyper-parameter)")
        loader = InMemoryLoader(prep.evals[args.split], 1000, shuffle=False)
        result = {}
        for rule in RULES:
            method.hp["test_mask"] = rule
            metrics = evaluate({"model": method.predict_batch}, loader)["model"]
            result[rule] = {k: metrics[k] for k in KEYS}
        per_run["/".join(Path(run).parts[-3:])] = result
        row = Path(run).parent.name
        for rule in RULES:
            grouped.setdefault(row, {}).setdefault(rule, []).append(result[rule]["unbiased"])
        print(run, "  ".join(f"{r} {result[r]['unbiased']:.2f}" for r in RULES))
    summary = {row: {rule: {"mean": statistics.mean(v),
                            "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
                     for rule, v in rules.items()} for row, rules in grouped.items()}
    for row, rules in summary.items():
        print(row, "  ".join(f"{r} {s['mean']:.2f} +- {s['std']:.2f} (n={s['n']})"
                             for r, s in rules.items()))
    if args.out:
        runs.write_json(args.out, {"machine": machine(), "split": args.split, "runs": per_run, "rows": summary})


if __name__ == "__main__":
    main()
