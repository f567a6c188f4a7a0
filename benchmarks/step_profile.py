"""Where a ResNet-20 training step's time goes: Vanilla (ERM) and LfF on Corrupted CIFAR-10.

Builds the ``lff-cc10-type0`` preset's training run (Corrupted CIFAR-10 type0, 99 % aligned,
severity 4, ResNet-20, batch 256, random crop + flip) through the library and times, with
``--threads`` threads (1: as each bench worker runs), over the same ``--steps`` batches:

  * ``step``: the whole training step as the trainer runs it: the loader's batch (index
    gather, uint8 -> float conversion, the batched augmentation) and ``Method.update``
    (LfF: both networks' forward and backward, the per-sample EMA tables, the weights, both
    Adam steps, the logged statistics);
  * ``networks``: only the networks' forward and backward on the same (prepared) batches:
    the arithmetic no implementation of the method can avoid. The share of the step outside
    the networks is ``1 - networks / step``;
  * ``batch``: only the loader's part;
  * LfF's step over Vanilla's (the issue's bound: <= 2.1; two networks are 2.0).

for every ``--precision`` (``fp32``; ``bf16`` autocast where this CPU computes bf16
natively) and ``--compile`` variant (``off``; ``on``: the step through
:func:`debiaskit.train.compiled_update`, as ``--compile on`` trains, and the networks' pass
through ``torch.compile``; the warm-up, which holds the compilation, is timed separately
and excluded). Repeats are interleaved, and each
figure is the best of ``--repeats``. Optionally ``--profile`` adds torch.profiler's ten
costliest operators of one LfF step. Writes JSON (``--out``) with a ``machine`` record.

    python benchmarks/step_profile.py [--steps 12] [--repeats 3] [--threads 1]
        [--precision fp32,bf16] [--compile off,on] [--profile] [--out F.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from debiaskit import runs
from debiaskit.allocator import keep_freed_buffers
from debiaskit.bench.presets import get_preset
from debiaskit.bench.runner import plan
from debiaskit.data.augment import AUGMENTATIONS
from debiaskit.data.loader import InMemoryLoader
from debiaskit.precision import native_bf16
from debiaskit.train import RunConfig, arithmetic, compiled_update, machine, prepare

PRESET, ROW = "lff-cc10-type0", 99.0


def preset_config(method: str, precision: str, compiled: bool, data_dir) -> RunConfig:
    """The preset's run of ``method`` ("Vanilla" or "LfF") at the 99 % row, seed 0."""
    planned = plan(get_preset(PRESET), Path(tempfile.gettempdir()) / "step-profile", 1,
                   methods=[method], rows=[str(ROW)], data_dir=data_dir, precision=precision,
                   force_precision=True, compile=compiled)
    return planned[0].config


def loader_of(prep, cfg: RunConfig) -> InMemoryLoader:
    return InMemoryLoader(prep.train, cfg.batch_size, shuffle=True, seed=0,
                          drop_last=prep.method.drop_last,
                          augment=AUGMENTATIONS[cfg.augment]())


def time_steps(step, cfg, loader, epoch: int, n: int) -> tuple[float, float, list]:
    """(seconds per whole step, seconds per loader batch, the batches) over ``n`` steps."""
    t_batch, seen = 0.0, []
    it = loader.epoch(epoch)
    t0 = time.perf_counter()
    for _ in range(n):
        tb = time.perf_counter()
        batch = next(it)
        t_batch += time.perf_counter() - tb
        with arithmetic(cfg):
            step(batch)
        seen.append(batch)
    return (time.perf_counter() - t0) / n, t_batch / n, seen


def networks_pass(net):
    """One network's forward pass and a cross-entropy on it: what backward is run on."""
    def forward(x, y):
        return F.cross_entropy(net(x), y)
    return forward


def time_networks(forwards, cfg, nets, chosen: list) -> float:
    """Seconds per batch of the networks' forward and backward alone, one network after the
    other (the leanest order: one network's activations alive at a time; no optimiser step,
    no per-sample tables)."""
    t0 = time.perf_counter()
    for batch in chosen:
        for forward in forwards:
            with arithmetic(cfg):
                loss = forward(batch.x, batch.y)
            loss.backward()
    for net in nets:
        net.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / len(chosen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="fp32,bf16")
    ap.add_argument("--compile", default="off,on")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.steps < 1 or args.repeats < 1:
        ap.error("--steps and --repeats must be >= 1")
    torch.set_num_threads(args.threads)
    keep_freed_buffers()
    precisions = [p for p in args.precision.split(",") if p]
    if "bf16" in precisions and not native_bf16():
        print("bf16 left out: this CPU has no native bf16")
        precisions.remove("bf16")
    compiles = [c == "on" for c in args.compile.split(",") if c]
    res = {"machine": machine(), "threads": args.threads, "steps": args.steps,
           "repeats": args.repeats, "preset": PRESET, "row": ROW, "variants": {}}
    for precision in precisions:
        for compiled in compiles:
            key = f"{precision}{'-compile' if compiled else ''}"
            timed = {}
            for method in ("Vanilla", "LfF"):
                cfg = preset_config(method, precision, compiled, args.data_dir)
                prep = prepare(cfg)
                prep.method.train(True)
                loader = loader_of(prep, cfg)
                nets = list(prep.method.networks.values())
                step = compiled_update(prep.method) if compiled else prep.method.update
                forward = [torch.compile(networks_pass(n)) if compiled else networks_pass(n)
                           for n in nets]
                t0 = time.perf_counter()
                _, _, warm_batches = time_steps(step, cfg, loader, 0, 2)  # warm-up, compilation
                time_networks(forward, cfg, nets, warm_batches)
                timed[method] = (step, forward, nets, cfg, loader, time.perf_counter() - t0)
            best = {m: {"step": float("inf"), "batch": float("inf"), "networks": float("inf")}
                    for m in timed}
            for r in range(args.repeats):  # interleaved
                for m, (step, forward, nets, cfg, loader, _) in timed.items():
                    t_step, t_batch, seen = time_steps(step, cfg, loader, 1 + r, args.steps)
                    t_nets = time_networks(forward, cfg, nets, seen)
                    for k, v in (("step", t_step), ("batch", t_batch), ("networks", t_nets)):
                        best[m][k] = min(best[m][k], v)
            out = {}
            for m, b in best.items():
                out[m] = {"step_seconds": b["step"], "batch_seconds": b["batch"],
                          "networks_seconds": b["networks"],
                          "outside_networks_share": 1.0 - b["networks"] / b["step"],
                          "warmup_and_compile_seconds": timed[m][5]}
            out["lff_over_vanilla"] = best["LfF"]["step"] / best["Vanilla"]["step"]
            res["variants"][key] = out
            print(f"{key:14s} Vanilla {best['Vanilla']['step']:.3f} s/step "
                  f"(outside networks {100 * out['Vanilla']['outside_networks_share']:.1f} %), "
                  f"LfF {best['LfF']['step']:.3f} s/step (outside networks "
                  f"{100 * out['LfF']['outside_networks_share']:.1f} %), "
                  f"LfF / Vanilla {out['lff_over_vanilla']:.2f}", flush=True)
    if args.profile:
        cfg = preset_config("LfF", precisions[0], False, args.data_dir)
        prep = prepare(cfg)
        prep.method.train(True)
        loader = loader_of(prep, cfg)
        time_steps(prep.method.update, cfg, loader, 0, 1)
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            time_steps(prep.method.update, cfg, loader, 1, 3)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
        print(table)
        res["profile_lff_top10"] = table
    if args.out:
        runs.write_json(args.out, res)


if __name__ == "__main__":
    main()
