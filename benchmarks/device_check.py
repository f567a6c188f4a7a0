"""What debiaskit does on one CUDA GPU: epoch times and a short LfF vs Vanilla pair.

Run it through ``bash benchmarks/device_check.sh [--out FILE]`` (or
``python benchmarks/device_check.py``) on a machine with a CUDA GPU. It trains, on
``cuda``, through the library's Python API (:func:`debiaskit.train.train`), with the
configurations of the bench presets (built by the bench planner, not copied):

1. epoch times of Vanilla (``erm``) and LfF (``lff``) on Colored MNIST (preset
   ``lff-cmnist``, row 99.0: the MLP with LfF's input scaling, LfF's GCE scaling) and on
   Corrupted CIFAR-10 type0 (preset ``lff-cc10-type0``, row 99.0: ResNet-20, crop + flip,
   LfF's CIFAR normalisation), each in float32 and bf16 (``precision``), each with and
   without ``torch.compile`` of the training step (``RunConfig.compile``). An epoch is timed by the difference
   of 1 vs 2 epochs: each variant trains 2 epochs and its time is the second epoch's
   training pass as the trainer records it in metrics.jsonl (the GPU synchronised before
   the clock is read); the first epoch holds start-up, compilation and warm-up, so the
   second is the time 2 epochs take minus the time 1 epoch takes;
2. a short Vanilla vs LfF pair on Corrupted CIFAR-10 type0 at 99 % aligned (default 3
   epochs, seed 0, float32, no compile): their unbiased and conflicting test accuracies;
3. seed packing on the GPU (:func:`time_seed_packing`): ERM and LfF on the Colored MNIST
   MLP, 2 and 3 seeds in one process against one after another.

It writes one JSON (default ``benchmarks/results/device_check_<gpu>.json``) with the
GPU, the torch and CUDA versions, every timing, the pair's accuracies and a ``machine``
record. A variant that fails is recorded with its error and the others still run. On a
machine without a CUDA GPU it prints one line and exits 0, writing nothing.

``--train-subset N`` trains every run on N images (a quick look; the timings then are
epochs of N images) and ``--pair-epochs`` sets the pair's length; ``--no-compile`` leaves
out the compiled variants.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

#: workload name -> (bench preset, row) whose Vanilla and LfF configurations are timed
WORKLOADS = {"colored_mnist": ("lff-cmnist", "99.0"),
             "corrupted_cifar10_type0": ("lff-cc10-type0", "99.0")}
#: the preset's display names of the two methods
METHODS = ("Vanilla", "LfF")
PRECISIONS = ("fp32", "bf16")
#: the pair of step 2
PAIR = ("lff-cc10-type0", "99.0")
TIMING_METHOD = (
    "difference of 1 vs 2 epochs: every variant trains 2 epochs on cuda and its "
    "seconds_per_epoch is the second epoch's training pass as the trainer records it "
    "(metrics.jsonl train_seconds, the GPU synchronised before the clock is read); "
    "first_epoch_seconds holds start-up inside the loop, compilation and warm-up")


def no_gpu_message() -> str | None:
    """The one line printed where there is no CUDA GPU (None where there is one)."""
    import torch

    from debiaskit.device import torch_build

    if torch.cuda.is_available():
        return None
    return f"device_check: no CUDA GPU on this machine ({torch_build()}); nothing to measure"


def one_line(err: BaseException) -> str:
    """An exception as one line of at most 300 characters, with its type."""
    text = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {text[:300]}"


def slug(name: str) -> str:
    """``NVIDIA A100-SXM4-80GB`` -> ``nvidia-a100-sxm4-80gb`` (for the default file name)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def preset_configs(preset: str, row: str, epochs: int, data_dir=None,
                   train_subset: int | None = None) -> dict:
    """Display name -> the RunConfig of seed 0 of ``preset``'s Vanilla and LfF in ``row``
    (the bench planner builds them, on cuda, with torch's own thread count)."""
    from debiaskit.bench.presets import get_preset
    from debiaskit.bench.runner import plan

    with tempfile.TemporaryDirectory() as tmp:  # (the planner names run folders in it)
        planned = plan(get_preset(preset), Path(tmp), 1, METHODS, epochs, data_dir, rows=[row],
                       device="cuda")
    return {p.method: dataclasses.replace(p.config, threads=None, train_subset=train_subset)
            for p in planned}


def train_and_time(cfg, workdir: Path) -> dict:
    """Train ``cfg`` into a fresh folder under ``workdir``; the per-epoch training seconds
    of its records, the wall-clock seconds of the whole call, the training images per
    epoch and its summary."""
    from debiaskit import runs
    from debiaskit.train import train

    out = Path(tempfile.mkdtemp(dir=workdir))
    started = time.perf_counter()
    summary = train(cfg, out / "run")
    wall = time.perf_counter() - started
    records = runs.read_metrics(out / "run")
    size = runs.read_json(out / "run" / runs.CONFIG)["data"]["train_size"]
    return {"epoch_train_seconds": [r["train_seconds"] for r in records],
            "wall_seconds": wall, "train_images": size, "summary": summary}


def time_variant(cfg, workdir: Path) -> dict:
    """Seconds per epoch of ``cfg`` (2 epochs, the second timed: :data:`TIMING_METHOD`),
    or what stopped it (``skipped`` for a refused setting, ``error`` otherwise)."""
    from debiaskit.errors import DebiaskitError

    cfg = dataclasses.replace(cfg, epochs=2, eval_every=2)  # (evaluated after epoch 2 only)
    try:
        timed = train_and_time(cfg, workdir)
    except DebiaskitError as err:  # e.g. bf16 refused where the GPU lacks it
        return {"skipped": str(err)}
    except Exception as err:  # noqa: BLE001 - recorded; the other variants still run
        return {"error": one_line(err)}
    first, second = timed["epoch_train_seconds"]
    return {"seconds_per_epoch": second, "first_epoch_seconds": first,
            "wall_seconds": timed["wall_seconds"], "train_images": timed["train_images"]}


def timing_variants(with_compile: bool) -> list[tuple[str, str, bool]]:
    """(precision, compile key, ``RunConfig.compile``) of every variant."""
    out = []
    for precision in PRECISIONS:
        out.append((precision, "compile_off", False))
        if with_compile:
            out.append((precision, "compile_on", True))
    return out


def run_timings(workdir: Path, data_dir=None, train_subset=None, with_compile=True,
                log=print) -> dict:
    """Workload -> method -> precision -> compile_on / compile_off -> :func:`time_variant`."""
    out = {}
    for workload, (preset, row) in WORKLOADS.items():
        configs = preset_configs(preset, row, 2, data_dir, train_subset)
        out[workload] = {"preset": preset, "row": row}
        for display, cfg in configs.items():
            per_method = out[workload].setdefault(display, {})
            for precision, key, compiled in timing_variants(with_compile):
                variant = dataclasses.replace(cfg, precision=precision, compile=compiled)
                result = time_variant(variant, workdir)
                per_method.setdefault(precision, {})[key] = result
                shown = (f"{result['seconds_per_epoch']:.2f} s/epoch"
                         if "seconds_per_epoch" in result
                         else next(f"{k}: {v}" for k, v in result.items()))
                log(f"device_check: {workload} {display} {precision} {key}: {shown}")
    return out


def run_pair(workdir: Path, epochs: int, data_dir=None, train_subset=None, log=print) -> dict:
    """The Vanilla vs LfF pair of :data:`PAIR` (seed 0, float32, no compile)."""
    preset, row = PAIR
    out = {"preset": preset, "row": row, "epochs": epochs, "seed": 0, "precision": "fp32",
           "compile": False, "train_subset": train_subset}
    for display, cfg in preset_configs(preset, row, epochs, data_dir, train_subset).items():
        try:
            timed = train_and_time(cfg, workdir)
        except Exception as err:  # noqa: BLE001 - recorded, the rest of the check still runs
            out[display] = {"error": one_line(err)}
            log(f"device_check: pair {display}: {out[display]['error']}")
            continue
        test = timed["summary"]["metrics"]["test"]
        out[display] = {"unbiased": test["unbiased"], "conflicting": test["conflicting"],
                        "aligned": test["aligned"], "accuracy": test["accuracy"],
                        "epoch_train_seconds": timed["epoch_train_seconds"],
                        "wall_seconds": timed["wall_seconds"],
                        "train_images": timed["train_images"],
                        "protocol": timed["summary"]["protocol"]}
        log(f"device_check: pair {display} ({epochs} epochs): unbiased "
            f"{test['unbiased']:.2f}, conflicting {test['conflicting']:.2f}")
    return out


def time_seed_packing(device: str = "cuda", data_dir=None, train_subset=None) -> dict:
    """Seed packing in the real trainer on ``device`` (:func:`pack_seeds.measure`: ERM and
    LfF on the Colored MNIST MLP, G = 2 and 3 seeds packed against one after another), or
    ``{"error": ...}`` if it fails."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pack_seeds import measure
    try:
        return {"function": "benchmarks/pack_seeds.py: measure", "result": measure(
            device=device, groups=(2, 3), epochs=1, data_dir=data_dir,
            train_subset=train_subset, log=lambda *_: None)}
    except Exception as err:  # recorded; the other measurements stand
        return {"error": one_line(err)}


def gpu_record() -> dict:
    """The GPU, its memory and compute capability, and the torch / CUDA / cuDNN versions."""
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"gpu": torch.cuda.get_device_name(0), "gpu_count": torch.cuda.device_count(),
            "gpu_memory_gib": round(props.total_memory / 2 ** 30, 2),
            "compute_capability": f"{props.major}.{props.minor}",
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version()}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="JSON to write (default "
                    "benchmarks/results/device_check_<gpu-name>.json)")
    ap.add_argument("--data-dir", help="data directory (default: $DEBIASKIT_DATA)")
    ap.add_argument("--train-subset", type=int, help="train every run on N images "
                    "(a quick look; default: the whole training sets)")
    ap.add_argument("--pair-epochs", type=int, default=3,
                    help="epochs of the Vanilla vs LfF pair")
    ap.add_argument("--no-compile", action="store_true",
                    help="leave out the torch.compile variants")
    ap.add_argument("--probe", action="store_true", help="only check for a CUDA GPU: exit 0 "
                    "silently if there is one, else print why not and exit 1")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    reason = no_gpu_message()
    if args.probe:
        if reason:
            print(reason)
        return 1 if reason else 0
    if reason:
        print(reason)
        return 0
    from debiaskit import runs
    from debiaskit.errors import DebiaskitError
    from debiaskit.train import machine, versions

    if args.pair_epochs < 1 or (args.train_subset is not None and args.train_subset < 1):
        print("device_check: --pair-epochs and --train-subset must be >= 1", file=sys.stderr)
        return 2
    gpu = gpu_record()
    out = Path(args.out) if args.out else RESULTS / f"device_check_{slug(gpu['gpu'])}.json"
    try:
        runs.check_out(out, folder=False, option="--out", example="device_check.json")
    except DebiaskitError as err:
        print(f"device_check: {err}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    record = {**gpu, "machine": machine("cuda"), "versions": versions(),
              "settings": {"train_subset": args.train_subset, "pair_epochs": args.pair_epochs,
                           "compile": not args.no_compile},
              "timing_method": TIMING_METHOD,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        with tempfile.TemporaryDirectory(prefix="device-check-") as tmp:
            workdir = Path(tmp)
            record["timings"] = run_timings(workdir, args.data_dir, args.train_subset,
                                            not args.no_compile)
            record["pair"] = run_pair(workdir, args.pair_epochs, args.data_dir,
                                      args.train_subset)
    except DebiaskitError as err:  # bad input (e.g. no data directory): nothing written
        print(f"device_check: {err}", file=sys.stderr)
        return 2
    record["seed_packing"] = time_seed_packing("cuda", args.data_dir, args.train_subset)
    record["total_seconds"] = time.perf_counter() - started
    runs.write_json(out, record)
    print(f"device_check: wrote {out} ({record['total_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
