"""The "beats ERM" bars of the method tests, set from gains measured over several seeds.

A test that asks a method to beat ERM by a fixed few points passes an implementation that
lost most of its effect. Here each such comparison (the method and its ERM run, on small
real Colored MNIST, as the tests train them) runs with ``--seeds`` training seeds; the gain
is the method's conflicting-cell accuracy minus ERM's with the same seed. The bar a test
asserts is half the smallest gain, rounded down to a tenth of a point, so the test fails
when the method keeps less than half of its weakest measured effect.

    python benchmarks/beats_bars.py --seeds 5 --out benchmarks/results/beats_bars.json

The tests (tests/test_methods.py, tests/test_baselines.py) read each case's configuration
and bar from that file and train its seed 0. Runs go to ``--runs`` (a scratch folder;
finished runs are reused on a rerun).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import tempfile
from pathlib import Path

from debiaskit import runs
from debiaskit.train import RunConfig, train
from debiaskit.train.record import machine

#: What every case shares: LfF's Colored MNIST at the tests' size.
COMMON = {"eval_subset": 4000, "progress": False}

#: case -> (the method's run, its ERM run): RunConfig fields besides COMMON and the seed.
CASES = {
    "lff": ({"method": "lff", "data_params": {"conflict_ratio": 0.02}, "epochs": 4,
             "train_subset": 20000},
            {"method": "erm", "data_params": {"conflict_ratio": 0.02}, "epochs": 4,
             "train_subset": 20000}),
    "groupdro": ({"method": "groupdro", "data_params": {"conflict_ratio": 0.05}, "epochs": 3,
                  "train_subset": 12000},
                 {"method": "erm", "data_params": {"conflict_ratio": 0.05}, "epochs": 3,
                  "train_subset": 12000}),
    "jtt": ({"method": "jtt", "data_params": {"conflict_ratio": 0.02}, "epochs": 4,
             "train_subset": 20000},
            {"method": "erm", "data_params": {"conflict_ratio": 0.02}, "epochs": 4,
             "train_subset": 20000}),
    "disent": ({"method": "disent", "data_params": {"conflict_ratio": 0.02}, "epochs": 4,
                "train_subset": 20000, "hparams": {"swap_start": 120, "lr": 0.001}},
               {"method": "erm", "data_params": {"conflict_ratio": 0.02}, "epochs": 4,
                "train_subset": 20000}),
}


def config(fields: dict, seed: int, data_dir=None) -> RunConfig:
    """The RunConfig of one side of a case at ``seed``."""
    return RunConfig(**COMMON, **fields, seed=seed, data_dir=data_dir)


def bar_of(gains: list[float]) -> float:
    """Half the smallest gain, rounded down to 0.1 points."""
    return math.floor(min(gains) / 2 * 10) / 10


def conflicting(fields: dict, seed: int, run_root: Path, data_dir=None) -> float:
    name = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    run_dir = run_root / f"{fields['method']}-{name}-seed{seed}"
    if not runs.is_finished(run_dir):
        train(config(fields, seed, data_dir), run_dir)
    return runs.read_json(run_dir / runs.SUMMARY)["metrics"]["test"]["conflicting"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--runs", type=Path, default=None, help="scratch folder for the runs")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    root = args.runs or Path(tempfile.mkdtemp(prefix="dk-bars-"))
    result = {"machine": machine(),
              "protocol": ("Colored MNIST (severity 4), LfF's MLP, Adam 1e-3, batch 256, last "
                           "epoch, float32; conflicting-cell accuracy on 4,000 test images; "
                           "gain = method - ERM with the same training seed"),
              "common": COMMON, "cases": {}}
    for case in args.cases.split(","):
        method, baseline = CASES[case]
        rows = []
        for seed in range(args.seeds):
            m = conflicting(method, seed, root, args.data_dir)
            e = conflicting(baseline, seed, root, args.data_dir)
            rows.append({"seed": seed, "method": m, "erm": e, "gain": m - e})
            print(f"{case} seed {seed}: {m:.2f} vs ERM {e:.2f} (gain {m - e:+.2f})", flush=True)
        gains = [r["gain"] for r in rows]
        result["cases"][case] = {"method_run": method, "erm_run": baseline, "seeds": rows,
                                 "smallest_gain": min(gains), "bar": bar_of(gains)}
        runs.write_json(args.out, result)
    print(json.dumps({c: v["bar"] for c, v in result["cases"].items()}))


if __name__ == "__main__":
    main()
