"""Issue 35, points 1 and 4: every ranking of ``debiaskit discover`` scored against the
hidden bias labels, and the label-free rule's choice among them.

For each dataset (``--dataset``, repeatable; default Colored MNIST) and each combination
of ``--data KEY=V1,V2,...`` values (a comma in a value makes one case per value, e.g.
``--data kind=colour,mark,texture,scene``), it runs ``debiaskit discover`` with its
defaults (the rankings gce, trajectory, erm, jtt, amplified; ``--rankings`` names others,
such as knn; ``--sih`` adds sih) on a seeded
training subset, one thread, and records per ranking its precision at K (K = the number of
bias-conflicting images), AUROC, precision at 100 / 600, average precision, the error
set, the selection rule's value, and which ranking the rule chose. The cases are merged
into the JSON (a case measured again replaces its entry), with the equivalent command
line of each.

    python benchmarks/discover_rankings.py --conflict-ratio 0.02 --train-subset 10000
    python benchmarks/discover_rankings.py --dataset shortcut_mnist --data kind=colour,mark,texture,scene --conflict-ratio 0.02
"""

from __future__ import annotations

import argparse
import itertools
import platform
import tempfile
import time
from pathlib import Path

import torch

from debiaskit import runs
from debiaskit.cli.options import parse_value
from debiaskit.discover import DiscoverConfig, load_protocol_input, run_discovery
from debiaskit.train import versions

#: The goal of issue 35 for the default ranking (and reported for every variant).
GOAL = {"auroc": 0.97, "precision_at_k": 85.0}

KEEP = ("precision_at_k", "auroc", "precision_at_100", "precision_at_600", "recall_at_600",
        "average_precision", "error_set", "conflicting", "images")


def cases(datasets: list[str], data: list[str], ratio: float | None) -> list[tuple]:
    """(dataset, params) for every dataset and every combination of the data values."""
    keys, choices = [], []
    for item in data or []:
        key, _, val = item.partition("=")
        keys.append(key.replace("-", "_"))
        choices.append([parse_value(v) for v in val.split(",")])
    out = []
    for name in datasets:
        for combo in itertools.product(*choices) if keys else [()]:
            params = dict(zip(keys, combo))
            if ratio is not None:
                params["conflict_ratio"] = ratio
            out.append((name, params))
    return out


def label(name: str, params: dict, args, seed: int) -> str:
    """The case's key in the JSON: dataset, parameters, subset, seed, and the rankings
    and GCE epochs when not the default ones."""
    return " ".join([name] + [f"{k}={v}" for k, v in sorted(params.items())]
                    + [f"subset={args.train_subset}", f"seed={seed}"]
                    + ([f"epochs={args.epochs}"] if args.epochs != DiscoverConfig.epochs
                       else [])
                    + ([f"rankings={args.rankings}"] if args.rankings else [])
                    + (["sih"] if args.sih else []))


def one_case(name: str, params: dict, args, seed: int, out: Path) -> dict:
    started = time.perf_counter()
    inp = load_protocol_input(name, args.data_dir, params=params,
                              train_subset=args.train_subset, seed=seed)
    cfg = DiscoverConfig(seed=seed, sih=args.sih, sih_epochs=args.sih_epochs,
                         epochs=args.epochs, erm_epochs=args.erm_epochs,
                         rankings=tuple(args.rankings.split(",")) if args.rankings else None)
    record = run_discovery(inp, cfg, out, started=started)
    ratio = params.get("conflict_ratio")
    data = "".join(f" --data {k}={v}" for k, v in params.items() if k != "conflict_ratio")
    command = (f"debiaskit discover --dataset {name}"
               + (f" --conflict-ratio {ratio}" if ratio is not None else "") + data
               + (f" --train-subset {args.train_subset}" if args.train_subset else "")
               + (f" --rankings {args.rankings}" if args.rankings else "")
               + (f" --sih --sih-epochs {args.sih_epochs}" if args.sih else "")
               + f" --epochs {args.epochs} --erm-epochs {args.erm_epochs}"
               + f" --seed {seed} --threads 1 --out {out.name}")
    rankings = {}
    for rname, r in record["rankings"].items():
        ev = r["evaluation"] or {}
        rankings[rname] = {
            "model": r["model"], "primary": r["primary"], "rule": r["rule"],
            **{k: r[k] for k in ("epochs", "stopped_at", "rule_by_epoch") if k in r},
            "train_accuracy": r["train_accuracy"],
            **{k: ev.get(k) for k in KEEP},
            "meets_goal": bool(ev) and ev["auroc"] is not None
            and ev["auroc"] >= GOAL["auroc"] and ev["precision_at_k"] >= GOAL["precision_at_k"]}
    primary = record["ranking"]
    return {"command": command, "dataset": name, "params": params, "seed": seed,
            "train_size": record["train"]["size"], "rankings": rankings,
            "selection": record["ranking_selection"], "default": primary,
            "default_precision_at_k": rankings[primary]["precision_at_k"],
            "default_auroc": rankings[primary]["auroc"],
            "default_meets_goal": rankings[primary]["meets_goal"],
            "best_by_precision_at_k": max(rankings, key=lambda n: (
                rankings[n]["precision_at_k"] or 0.0)),
            "seconds": record["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", action="append", help="protocol (repeatable; default "
                    "colored_mnist)")
    ap.add_argument("--data", action="append", metavar="KEY=V1,V2",
                    help="protocol parameter; several comma-separated values make one case "
                    "each")
    ap.add_argument("--conflict-ratio", type=float, default=0.01)
    ap.add_argument("--train-subset", type=int, default=10_000,
                    help="seeded training subset (0: the whole training set)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (subset, networks)")
    ap.add_argument("--epochs", type=int, default=DiscoverConfig.epochs,
                    help="epochs of the GCE model")
    ap.add_argument("--erm-epochs", type=int, default=DiscoverConfig.erm_epochs,
                    help="most epochs of the ERM model")
    ap.add_argument("--rankings", help="rankings to compute (default: all)")
    ap.add_argument("--sih", action="store_true", help="also SiH's ranking")
    ap.add_argument("--sih-epochs", type=int, default=DiscoverConfig.sih_epochs)
    ap.add_argument("--data-dir")
    ap.add_argument("--work", help="folder for the discoveries (default: temporary)")
    ap.add_argument("--out", default="benchmarks/results/discover_rankings.json")
    args = ap.parse_args()
    args.train_subset = args.train_subset or None
    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="discover-rankings-"))
    out = Path(args.out)
    result = runs.read_json(out) if out.is_file() else {"issue": "35, points 1 and 4",
                                                        "goal": GOAL, "cases": {}}
    result["machine"] = {"python": platform.python_version(),
                         "processor": platform.processor(), "torch_threads": 1}
    result["versions"] = versions()
    for name, params in cases(args.dataset or ["colored_mnist"], args.data,
                              args.conflict_ratio):
        for seed in range(args.seeds):
            key = label(name, params, args, seed)
            folder = work / key.replace(" ", "_").replace("=", "-")
            t0 = time.perf_counter()
            one = one_case(name, params, args, seed, folder)
            result["cases"][key] = one
            print(f"{key}: default {one['default']} ({one['selection']['reason']})", flush=True)
            for rname, r in one["rankings"].items():
                print(f"  {rname:<10} rule {r['rule']['eta']:.3f}  P@K {r['precision_at_k']:.1f} %"
                      f"  AUROC {r['auroc']:.4f}  P@100 {r['precision_at_100']:.1f} %"
                      f"  AP {r['average_precision']:.1f} %"
                      + ("  (goal met)" if r["meets_goal"] else ""), flush=True)
            print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
            runs.write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
