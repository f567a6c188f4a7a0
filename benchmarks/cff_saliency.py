"""CF/F's saliency and background-reliance figures over a bench's finished runs.

For every finished run under a bench preset's output folder (METHOD/ROW/seedN), runs
``debiaskit explain saliency`` on one split with each saliency method (the PNG grid and
JSON land in the run folder; a JSON of the same settings already there is reused), then
prints and writes the mean +- sample std over seeds of the saliency AUPR against the
foreground masks, the next-class probability shift from Original to Mixed-Next (CF/F
Table 3) and the macro one-vs-rest AUC of every test set.

    python benchmarks/cff_saliency.py bench-out/cff-bgshift-cpu \\
        --out benchmarks/results/cff-bgshift-cpu/saliency.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from debiaskit import runs
from debiaskit.bench.tables import mean_std
from debiaskit.explain.saliency import explain_saliency_run
from debiaskit.train.record import machine


def finished_runs(folder: Path):
    """(method, row, seed folder) of every finished run under a preset's output folder."""
    for summary in sorted(folder.glob(f"*/*/seed*/{runs.SUMMARY}")):
        run_dir = summary.parent
        yield run_dir.parent.parent.name, run_dir.parent.name, run_dir


def done(run_dir: Path, split: str, method: str, aupr_images: int) -> dict | None:
    """The run's saliency JSON from an earlier pass with the same settings, if any (a
    finished run never changes, so a rerun after more seeds finish scores only those)."""
    path = run_dir / f"saliency-{split}-{method}.json"
    if not path.is_file():
        return None
    r = runs.read_json(path)
    same = (r.get("split"), r.get("method"), r.get("aupr_images"), r.get("seed")) == (
        split, method, aupr_images, 0)
    return r if same and "macro_auc" in r else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="a bench preset's output folder")
    ap.add_argument("--split", default="original")
    ap.add_argument("--saliency", default="deeplift_shap,gradient",
                    help="comma-separated saliency methods")
    ap.add_argument("--aupr-images", type=int, default=500)
    ap.add_argument("--data-dir")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: as bench runs)")
    ap.add_argument("--out", type=Path, help="JSON of the per-run and mean figures")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    found = list(finished_runs(args.folder))
    if not found:
        raise SystemExit(f"{args.folder} holds no finished runs (METHOD/ROW/seedN/summary.json)")
    per_run, values = [], {}
    for method, row, run_dir in found:
        for saliency in args.saliency.split(","):
            r = done(run_dir, args.split, saliency, args.aupr_images) or explain_saliency_run(
                run_dir, split=args.split, method=saliency, data_dir=args.data_dir,
                aupr_images=args.aupr_images)
            per_run.append({**r, "saliency_method": saliency, "method": method, "row": row,
                            "run": str(run_dir)})
            key = (method, row)
            values.setdefault(key, {}).setdefault(f"aupr {saliency}", []).append(r["aupr"])
            print(f"{method} / {row} / {run_dir.name}: AUPR ({saliency}, {args.split}) "
                  f"{r['aupr']:.2f}")
        # the shift and the AUCs do not depend on the saliency method: once per run
        if r["next_class_shift"] is not None:
            values[key].setdefault("next-class shift", []).append(r["next_class_shift"])
        for split, auc in r["macro_auc"].items():
            values[key].setdefault(f"macro AUC {split}", []).append(auc)
    table = {}
    print(f"\nmean +- sample std over seeds (saliency on {args.split}, "
          f"{args.aupr_images} images):")
    for (method, row), figures in values.items():
        table[f"{method} / {row}"] = {}
        for name, vals in figures.items():
            mean, std = mean_std(vals)
            table[f"{method} / {row}"][name] = {"mean": mean, "std": std, "n": len(vals)}
            print(f"  {method:28s} {row:4s} {name:22s} {mean:7.2f} +- {std:5.2f} (n={len(vals)})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        runs.write_json(args.out, {"machine": machine(), "split": args.split, "aupr_images": args.aupr_images,
                                   "table": table, "runs": per_run})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
