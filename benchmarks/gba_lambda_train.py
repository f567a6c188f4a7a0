"""GBA's lambda from training data only: the strongest reversal at which C still trains.

The paper gives no lambda. A larger lambda pushes F harder to hide the bias from D, but a
feature the mask drops gets no gradient from C, only D's reversed one, and with a large
lambda that drives F's ReLU features to zero: C stops fitting even the training data. This
trains GBA on the training split for each lambda and reads only training statistics from
the runs' metrics.jsonl (C's cross-entropy, D's accuracy, the share of features masked);
no test number enters the choice. The rule: the largest lambda whose C training loss at the
last epoch is at most ``--bar`` (default 0.1) of the chance loss ln K.

    python benchmarks/gba_lambda_train.py --out benchmarks/results/gba_lambda_train.json \
        [--lambdas 0.03,0.1,0.3,1] [--epochs 20] [--aligned-ratio 0.98] [--scaling both]

Runs go to ``--runs`` (a scratch folder; finished runs are reused on a rerun).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from debiaskit import runs
from debiaskit.train import RunConfig, check_config, train
from debiaskit.train.record import machine

SCALINGS = {"unit": False, "quirk": True}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lambdas", default="0.03,0.1,0.3,1")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--aligned-ratio", type=float, default=0.98)
    ap.add_argument("--scaling", choices=("unit", "quirk", "both"), default="both")
    ap.add_argument("--bar", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir")
    ap.add_argument("--runs", default="gba-lambda-runs")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    lambdas = [float(v) for v in args.lambdas.split(",")]
    scalings = list(SCALINGS) if args.scaling == "both" else [args.scaling]
    chance = math.log(10)
    result = {"machine": machine(), "protocol": (f"GBA on Colored MNIST (severity 4, data seed 0, "
                           f"{args.aligned_ratio:.0%} aligned), LfF's MLP, Adam 1e-3, batch "
                           f"256, {args.epochs} epochs, seed {args.seed}, float32; training "
                           "statistics only (mean over the last epoch's batches)"),
              "bar": f"C's training loss <= {args.bar} x ln 10 = {args.bar * chance:.3f}",
              "rows": [], "chosen": {}}
    for scaling in scalings:
        for lam in lambdas:
            cfg = check_config(RunConfig(
                dataset="colored_mnist", method="gba", model="mlp",
                model_options={"input_scale_quirk": SCALINGS[scaling]},
                data_params={"conflict_ratio": round(1 - args.aligned_ratio, 6),
                             "severity": 4, "seed": 0},
                hparams={"lambda_adv": lam}, epochs=args.epochs, batch_size=256,
                selection="last", eval_every=args.epochs, eval_subset=1000, seed=args.seed,
                threads=1, progress=False, data_dir=args.data_dir))
            run_dir = Path(args.runs) / f"{scaling}-lambda{lam:g}"
            t0 = time.perf_counter()
            if not runs.is_finished(run_dir):
                train(cfg, run_dir)
            last = [r for r in runs.read_metrics(run_dir) if "train" in r][-1]["train"]
            row = {"scaling": scaling, "lambda_adv": lam,
                   "c_train_loss": last["loss"], "disc_train_accuracy": last["disc_accuracy"],
                   "masked": last["masked"], "trains": last["loss"] <= args.bar * chance,
                   "seconds": round(time.perf_counter() - t0, 1)}
            result["rows"].append(row)
            print(json.dumps(row))
        ok = [r["lambda_adv"] for r in result["rows"] if r["scaling"] == scaling and r["trains"]]
        result["chosen"][scaling] = max(ok) if ok else None
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("chosen:", result["chosen"])


if __name__ == "__main__":
    main()
