"""Bias probe of every finished LAD run of a bench folder, next to the run's accuracy.

For each finished LAD run ``BENCH/METHOD/ROW/seedS`` (any method whose runs hold a walk
stage: LAD, LAD-RC) this calls ``debiaskit explain lad`` (which writes
``lad.png``, ``lad_bias.json`` and ``lad_bias.png`` into the run) and collects how much the
walked images' probed bias still says about the class (NMI), how often it is the original
bias, how much of the class signal a class probe still reads in them, and the run's
accuracy on its most bias-independent test split.

    python benchmarks/lad_bias_probe.py BENCH_DIR/lad-mnist-cpu --out probe.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from debiaskit import runs
from debiaskit.explain.lad import explain_lad_run
from debiaskit.train.record import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_dir", help="a bench preset's output folder (METHOD/ROW/seedS)")
    parser.add_argument("--out", required=True, help="JSON file for the table")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    rows = []
    for run in sorted(Path(args.bench_dir).glob("*/*/seed*")):
        if not (run / runs.SUMMARY).exists() or not (run / runs.STAGES / "walk.json").exists():
            continue
        _, probed = explain_lad_run(run, data_dir=args.data_dir)
        metrics = runs.read_json(run / runs.SUMMARY)["metrics"]
        split = probed["probe_split"]
        rows.append({"method": run.parent.parent.name, "row": run.parent.name, "run": run.name,
                     "probe_split": split,
                     "probe_heldout_accuracy": probed["probe_heldout_accuracy"],
                     "walked_class_bias_nmi": probed["walked"]["class_bias_nmi"],
                     "walked_bias_kept": probed["walked"]["bias_kept"],
                     "walked_signal_accuracy": probed["walked"]["signal_accuracy"],
                     "original_signal_accuracy": probed["original"]["signal_accuracy"],
                     "original_class_bias_nmi": probed["original"]["class_bias_nmi"],
                     f"accuracy_on_{split}": metrics[split]["accuracy"]})
        r = rows[-1]
        print(f"{r['method']} {r['row']} {r['run']}: walked NMI(class, bias) "
              f"{r['walked_class_bias_nmi']:.3f}, "
              f"bias kept {r['walked_bias_kept']:.1f} %, signal probe "
              f"{r['walked_signal_accuracy']:.1f} % (originals "
              f"{r['original_signal_accuracy']:.1f} %), accuracy on {split} "
              f"{r[f'accuracy_on_{split}']:.2f} %", flush=True)
    if not rows:
        raise SystemExit(f"{args.bench_dir} holds no finished LAD run (METHOD/ROW/seedS "
                         "with stages/walk.json)")
    runs.write_json(Path(args.out), {"machine": machine(), "runs": rows})
    print(json.dumps({"wrote": args.out, "runs": len(rows)}))


if __name__ == "__main__":
    main()
