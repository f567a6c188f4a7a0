"""Issue 35, acceptance: training from a discovery vs ERM on each shortcut kind.

For every kind of ``shortcut_mnist`` (colour, mark, texture, scene; 2 % conflicting by
default): ``debiaskit discover`` with its defaults on the training set (bias labels hidden,
only scoring), then ERM and the ``discovered`` method (``--reweight-from`` the discovery,
its default mode) trained with the same network, epochs and seed; accuracy on the test
set's conflicting, aligned and all images (unbiased), plus the discovery's primary
ranking and its precision at K and AUROC.

    python benchmarks/discover_shortcuts.py --epochs 10

Writes ``benchmarks/results/discover_shortcuts.json`` (with the equivalent command lines)
and prints one line per kind.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from debiaskit import runs
from debiaskit.discover import DiscoverConfig, load_protocol_input, run_discovery
from debiaskit.train import RunConfig, machine, train, versions

KINDS = ("colour", "mark", "texture", "scene")
EVAL_KEYS = ("conflicting", "aligned", "unbiased", "accuracy")


def discovery(kind: str, ratio: float, data_dir, out: Path, seed: int) -> dict:
    params = {"kind": kind, "conflict_ratio": ratio}
    inp = load_protocol_input("shortcut_mnist", data_dir, params=params, seed=seed)
    record = run_discovery(inp, DiscoverConfig(seed=seed), out)
    primary = record["ranking"]
    evaluation = record["rankings"][primary]["evaluation"]
    return {"command": f"debiaskit discover --dataset shortcut_mnist --data kind={kind} "
                       f"--conflict-ratio {ratio} --seed {seed} --threads 1 --out {out.name}",
            "primary": primary, "selection": record.get("ranking_selection"),
            "precision_at_k": evaluation["precision_at_k"], "auroc": evaluation["auroc"],
            "conflicting": evaluation["conflicting"],
            "error_set": evaluation["error_set"], "seconds": record["seconds"]}


def training(method: str, kind: str, ratio: float, epochs: int, seed: int, data_dir,
             out: Path, reweight_from: Path | None) -> dict:
    cfg = RunConfig(method=method, dataset="shortcut_mnist",
                    data_params={"kind": kind, "conflict_ratio": ratio}, epochs=epochs,
                    eval_every=epochs, seed=seed, threads=1, progress=False,
                    data_dir=data_dir, precision="fp32",
                    reweight_from=None if reweight_from is None else str(reweight_from))
    summary = train(cfg, out)
    test = summary["metrics"]["test"]
    flag = f" --reweight-from {reweight_from.name}" if reweight_from else ""
    return {"command": f"debiaskit train --method {method} --dataset shortcut_mnist --data "
                       f"kind={kind} --conflict-ratio {ratio} --epochs {epochs} --seed {seed} "
                       f"--threads 1 --precision fp32{flag}",
            "test": {k: test[k] for k in EVAL_KEYS},
            "train_seconds": summary["train_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--ratio", type=float, default=0.02, help="conflict ratio")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of ERM and of training "
                    "from the discovery")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir")
    ap.add_argument("--work", help="folder for discoveries and runs (default: temporary)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                         "discover_shortcuts.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="discover-shortcuts-"))
    started = time.perf_counter()
    result = {"issue": "35, training from the discovery vs ERM", "conflict_ratio": args.ratio,
              "epochs": args.epochs, "seed": args.seed, "machine": machine("cpu"),
              "versions": versions(), "protocol": "shortcut_mnist, all 60,000 training "
              "images; MLP; float32; one thread; last epoch; test split (b uniform)",
              "kinds": {}}
    for kind in args.kinds.split(","):
        found = work / f"found-{kind}"
        one = {"discovery": discovery(kind, args.ratio, args.data_dir, found, args.seed)}
        one["erm"] = training("erm", kind, args.ratio, args.epochs, args.seed, args.data_dir,
                              work / f"erm-{kind}", None)
        one["discovered"] = training("discovered", kind, args.ratio, args.epochs, args.seed,
                                     args.data_dir, work / f"discovered-{kind}", found)
        result["kinds"][kind] = one
        d = one["discovery"]
        print(f"{kind}: discovery {d['primary']} P@K {d['precision_at_k']:.1f} % AUROC "
              f"{d['auroc']:.3f}; conflicting test accuracy ERM "
              f"{one['erm']['test']['conflicting']:.2f}, from the discovery "
              f"{one['discovered']['test']['conflicting']:.2f} (aligned "
              f"{one['erm']['test']['aligned']:.2f} / "
              f"{one['discovered']['test']['aligned']:.2f})", flush=True)
    result["seconds"] = time.perf_counter() - started
    runs.write_json(Path(args.out), result)
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
