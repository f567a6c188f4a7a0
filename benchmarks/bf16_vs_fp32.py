"""Does bf16 autocast train to the same results as float32, within seed noise?

Compares two finished bench folders of one preset, trained with the same seeds, one in
float32 and one in bf16 (``debiaskit bench PRESET --precision fp32|bf16``): for every
method, row and column both hold, the mean and sample standard deviation over seeds in
each precision, the difference of the means, the seed-by-seed (paired) differences with a
two-sided 95 % t interval, and whether the paired interval covers zero and whether the difference of the
means lies within one seed standard deviation of float32. Reads each folder's
results.json. Writes JSON (``--out``) and prints a Markdown table.

    python benchmarks/bf16_vs_fp32.py FP32_FOLDER BF16_FOLDER [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from scipy import stats

from debiaskit import runs


def compare(fp32: dict, bf16: dict) -> dict:
    out = {}
    for key, a in fp32["numbers"].items():
        b = bf16["numbers"].get(key)
        if not b or not a.get("values") or not b.get("values"):
            continue
        n = min(len(a["values"]), len(b["values"]))
        diffs = [y - x for x, y in zip(a["values"][:n], b["values"][:n])]
        mean_d = statistics.fmean(diffs)
        half = (stats.t.ppf(0.975, n - 1) * statistics.stdev(diffs) / n ** 0.5
                if n > 1 else float("nan"))
        gap = b["mean"] - a["mean"]
        out[key] = {"fp32_mean": a["mean"], "fp32_std": a["std"], "bf16_mean": b["mean"],
                    "bf16_std": b["std"], "difference_of_means": gap,
                    "paired_mean_difference": mean_d,
                    "paired_95_interval": [float(mean_d - half), float(mean_d + half)],
                    "seeds": n,
                    "paired_interval_covers_zero": bool(mean_d - half <= 0.0 <= mean_d + half),
                    "within_one_fp32_std": bool(abs(gap) <= a["std"])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("fp32_folder")
    ap.add_argument("bf16_folder")
    ap.add_argument("--out")
    args = ap.parse_args()
    fp32, bf16 = (json.loads((Path(f) / "results.json").read_text())
                  for f in (args.fp32_folder, args.bf16_folder))
    if fp32.get("preset") != bf16.get("preset"):
        ap.error(f"the folders hold different presets ({fp32.get('preset')}, "
                 f"{bf16.get('preset')}); compare one preset in two precisions")
    rows = compare(fp32, bf16)
    if not rows:
        ap.error("the folders share no finished cell; train the same methods and rows")
    print("| method / row / column | float32 | bf16 | bf16 - float32 | paired 95 % interval "
          "| within one float32 std |")
    print("|---|---|---|---|---|---|")
    for key, r in rows.items():
        lo, hi = (float(v) for v in r["paired_95_interval"])
        print(f"| {key} | {r['fp32_mean']:.2f} +- {r['fp32_std']:.2f} | {r['bf16_mean']:.2f} "
              f"+- {r['bf16_std']:.2f} | {r['difference_of_means']:+.2f} | [{lo:+.2f}, "
              f"{hi:+.2f}] | {'yes' if r['within_one_fp32_std'] else 'no'} |")
    if args.out:
        runs.write_json(args.out, {"preset": fp32["preset"], "fp32_folder": args.fp32_folder,
                                   "bf16_folder": args.bf16_folder, "cells": rows})


if __name__ == "__main__":
    main()
