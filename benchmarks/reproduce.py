"""What reproduces on this machine: pairs of ``debiaskit train`` runs, each in a process of
its own, that differ in one execution option, compared number by number.

For ERM, LfF and DisEnt on a tiny Colored MNIST (MLP; ``--train-subset``, ``--eval-subset``,
``--epochs``) and ERM on a ResNet-20 (a smaller subset), from a baseline command
(``--precision fp32 --threads 1``, every other option its default: pack off, compile auto,
which stays off in runs this short, channels_last), each pair is one of:

  * ``same command twice``: the baseline in two processes;
  * ``threads 2``: ``--threads 2`` against the baseline;
  * ``pack on`` (LfF, DisEnt): ``--pack on`` against the default off;
  * ``bf16``: ``--precision bf16`` against float32, and ``bf16, same command twice``
    (where this CPU computes bf16 natively, or with ``--force-precision``);
  * ResNet-20 only: ``compile on`` (the whole training step through ``torch.compile``,
    with a fresh inductor cache, so the first compiled run compiles cold), ``compile on,
    same command twice`` (the second one finds the first one's compiled code in that
    cache), and ``memory format contiguous``.

For each pair: whether the summaries' ``metrics`` and ``last_epoch_metrics`` are identical,
the largest absolute difference of any of their numbers (accuracies in %, ECE, the
per-cell accuracies) and of each metric that differs (the cells of one class and bias hold
few test images, so one image moves a cell by many points), whether metrics.jsonl's epoch records are identical (timings
removed), whether the trained weights are, and the test split's unbiased accuracy of both
runs. Writes JSON (``--out``) with the baseline run's ``machine`` and ``versions``.

    python benchmarks/reproduce.py [--out F.json] [--methods erm,lff,disent] [--no-conv]
        [--train-subset 3000] [--eval-subset 1000] [--epochs 3] [--data-dir D] [--work DIR]

``--compare RUN_A RUN_B`` trains nothing and prints the same comparison of two finished
run directories (e.g. the same command on two machines), with both runs' ``machine`` and
``versions``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from debiaskit import runs
from debiaskit.precision import native_bf16

#: The baseline's options; a variant replaces or adds some.
BASELINE = {"--precision": "fp32", "--threads": "1"}
#: The keys of metrics.jsonl's records that differ between any two runs (timings).
TIMING_KEYS = {"seconds", "train_seconds"}
CONV_SIZES = {"--train-subset": "600", "--eval-subset": "300", "--epochs": "2"}


def pairs(method: str, conv: bool, bf16: bool) -> list[tuple[str, dict, dict]]:
    """``(name, options of run a, options of run b)`` for one method; options name a run
    by its variant and its repetition (``"again"``)."""
    base = dict(BASELINE)
    out = [("same command twice", base, {**base, "again": 1}),
           ("threads 2", base, {**base, "--threads": "2"})]
    if method in ("lff", "disent") and not conv:
        out.append(("pack on", base, {**base, "--pack": "on"}))
    if bf16:
        low = {**base, "--precision": "bf16"}
        out += [("bf16", base, low), ("bf16, same command twice", low, {**low, "again": 1})]
    if conv:
        compiled = {**base, "--compile": "on"}
        out += [("compile on", base, compiled),
                ("compile on, same command twice", compiled, {**compiled, "again": 1}),
                ("memory format contiguous", base, {**base, "--memory-format": "contiguous"})]
    return out


def leaves(value, path: str = "") -> dict:
    """Every number in nested dicts and lists, by its path."""
    if isinstance(value, (dict, list)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return {k: v for key, item in items for k, v in leaves(item, f"{path}/{key}").items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {path: float(value)}
    return {path: value}


def differences(a: dict, b: dict) -> dict:
    """The largest absolute difference between the numbers of ``a`` and ``b`` per metric
    name (a per-cell table's entries together: ``cells``, ``ece_cells``), for the metrics
    that differ at all; ``{"paths": inf}`` when they do not hold the same numbers."""
    la, lb = leaves(a), leaves(b)
    if la.keys() != lb.keys():
        return {"paths": math.inf}
    out: dict[str, float] = {}
    for path, va in la.items():
        vb = lb[path]
        diff = abs(va - vb) if isinstance(va, float) else (0.0 if va == vb else math.inf)
        if diff:
            name = [part for part in path.split("/") if not part.isdigit()][-1]
            out[name] = max(out.get(name, 0.0), diff)
    return dict(sorted(out.items()))


def compare(a: Path, b: Path) -> dict:
    """How the finished runs ``a`` and ``b`` differ."""
    sa, sb = runs.read_json(a / runs.SUMMARY), runs.read_json(b / runs.SUMMARY)
    metrics_a = {"metrics": sa["metrics"], "last_epoch_metrics": sa["last_epoch_metrics"]}
    metrics_b = {"metrics": sb["metrics"], "last_epoch_metrics": sb["last_epoch_metrics"]}
    records = [[{k: v for k, v in r.items() if k not in TIMING_KEYS}
                for r in runs.read_metrics(d)] for d in (a, b)]
    nets = [runs.load_torch(d / runs.MODEL)["networks"] for d in (a, b)]
    same_keys = nets[0].keys() == nets[1].keys()
    weight_diff = (max((nets[0][k].double() - nets[1][k].double()).abs().max().item()
                       for k in nets[0] if nets[0][k].is_floating_point())
                   if same_keys else math.inf)
    by_metric = differences(metrics_a, metrics_b)
    return {"summary_metrics_identical": metrics_a == metrics_b,
            "max_abs_metric_difference": max(by_metric.values(), default=0.0),
            "max_abs_difference_by_metric": by_metric,
            "metrics_jsonl_identical": records[0] == records[1],
            "weights_identical": same_keys and all(torch.equal(nets[0][k], nets[1][k])
                                                   for k in nets[0]),
            "max_abs_weight_difference": weight_diff,
            "unbiased": [sa["metrics"]["test"]["unbiased"], sb["metrics"]["test"]["unbiased"]]}


class Runner:
    """Trains each distinct run once, in its own process, into ``work``."""

    def __init__(self, work: Path, sizes: dict, data_dir: str | None) -> None:
        self.work, self.sizes, self.data_dir = work, sizes, data_dir
        self.done: dict[tuple, Path] = {}
        self.env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor-cache")}

    def run(self, method: str, model: str, options: dict) -> Path:
        key = (method, model, tuple(sorted(options.items())))
        if key in self.done:
            return self.done[key]
        out = self.work / f"run{len(self.done)}"
        sizes = CONV_SIZES if model != "mlp" else self.sizes
        args = [sys.executable, "-m", "debiaskit", "train", "--method", method,
                "--model", model, "--out", str(out)]
        for k, v in {**sizes, **options}.items():
            if k.startswith("--"):
                args += [k, v]
        if options.get("--precision") == "bf16" and not native_bf16("cpu"):
            args.append("--force-precision")
        if self.data_dir:
            args += ["--data-dir", self.data_dir]
        t0 = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True, env=self.env)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr}")
        shown = " ".join(a for a in args[3:] if a not in ("--out", str(out)))
        print(f"  {time.perf_counter() - t0:5.1f} s  debiaskit {shown}", flush=True)
        self.done[key] = out
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="erm,lff,disent")
    ap.add_argument("--no-conv", action="store_true", help="leave out the ResNet-20 pairs")
    ap.add_argument("--train-subset", default="3000")
    ap.add_argument("--eval-subset", default="1000")
    ap.add_argument("--epochs", default="3")
    ap.add_argument("--force-precision", action="store_true",
                    help="compare bf16 also where this CPU has no native bf16")
    ap.add_argument("--data-dir")
    ap.add_argument("--work", help="folder for the runs (default: a temporary one, removed)")
    ap.add_argument("--out")
    ap.add_argument("--compare", nargs=2, metavar="RUN_DIR",
                    help="compare two finished run directories instead")
    args = ap.parse_args()
    if args.compare:
        a, b = (Path(d) for d in args.compare)
        where = {k: [runs.read_json(d / runs.SUMMARY).get(k) for d in (a, b)]
                 for k in ("machine", "versions")}
        print(json.dumps({**compare(a, b), **where}, indent=1))
        return
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="reproduce-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = {"--train-subset": args.train_subset, "--eval-subset": args.eval_subset,
             "--epochs": args.epochs}
    runner = Runner(work, sizes, args.data_dir)
    bf16 = native_bf16("cpu") or args.force_precision
    cases = [(m, "mlp") for m in args.methods.split(",")]
    if not args.no_conv:
        cases.append(("erm", "resnet20"))
    started = time.perf_counter()
    results = []
    try:
        for method, model in cases:
            for name, a, b in pairs(method, model != "mlp", bf16):
                run_a, run_b = (runner.run(method, model, o) for o in (a, b))
                result = {"method": method, "model": model, "pair": name,
                          "a": {k: v for k, v in a.items() if k.startswith("--")},
                          "b": {k: v for k, v in b.items() if k.startswith("--")},
                          **compare(run_a, run_b)}
                results.append(result)
                print(f"{method}/{model}, {name}: metrics identical "
                      f"{result['summary_metrics_identical']} (max |diff| "
                      f"{result['max_abs_metric_difference']:.3g}), metrics.jsonl identical "
                      f"{result['metrics_jsonl_identical']}, weights identical "
                      f"{result['weights_identical']}", flush=True)
        baseline = runs.read_json(runner.run(*cases[0], dict(BASELINE)) / runs.SUMMARY)
        out = {"command": " ".join(["python benchmarks/reproduce.py", *sys.argv[1:]]),
               "machine": baseline["machine"], "versions": baseline["versions"],
               "settings": {"dataset": "colored_mnist (its default protocol)",
                            "mlp": {k.lstrip("-"): v for k, v in sizes.items()},
                            "resnet20": {k.lstrip("-"): v for k, v in CONV_SIZES.items()},
                            "baseline": BASELINE,
                            "bf16": "compared" if bf16 else "no native bf16 on this CPU"},
               "pairs": results, "seconds": round(time.perf_counter() - started, 1)}
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    if args.out:
        runs.write_json(args.out, out)


if __name__ == "__main__":
    main()
