"""CF/F speed: each augmentation's cost per 1,000 images, and a CF + F (+ Sal) epoch's time
relative to ERM's, in one run on this machine with one thread.

    python benchmarks/cff_speed.py [--data-dir DIR] [--images 512] [--model resnet20]
                                   [--out benchmarks/results/cff_speed.json]

Images: the synthetic background-shift set (``bg_shift``, 32 x 32 RGB, real CIFAR-10
backgrounds, exact masks). Infills run on batches of 256; FGSM and GradMask need the
network (``--model``) and include its forward and backward passes. The epochs train
``--images`` images (batch 64, the CPU preset's) after one warm-up epoch, best of two.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from debiaskit import runs
from debiaskit.data import infill
from debiaskit.data.loader import InMemoryLoader
from debiaskit.methods.cff import fgsm_background, gradmask
from debiaskit.allocator import keep_freed_buffers
from debiaskit.train import RunConfig, prepare

BATCH = 256
COMBOS = {"ERM": ("erm", {}), "F(Shuffle)": ("cff", {"factual": "shuffle"}),
          "CF(Telea)+F(Shuffle)": ("cff", {"cf": "telea", "factual": "shuffle"}),
          "CF(Telea)+F(Shuffle)+Sal": ("cff", {"cf": "telea", "factual": "shuffle",
                                               "sal_lambda": 1.0})}


def per_thousand(fn, x, *args, reps: int = 2) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for i in range(0, len(x), BATCH):
            fn(x[i:i + BATCH], *[a[i:i + BATCH] for a in args])
        best = min(best, time.perf_counter() - t0)
    return best / len(x) * 1000


def epoch_seconds(method: str, hparams: dict, model: str, images: int, data_dir) -> float:
    cfg = RunConfig(dataset="bg_shift", data_params={"train_per_class": images // 10},
                    method=method, hparams={"lr": 0.05, **hparams}, model=model,
                    batch_size=64, optimizer="sgd", data_dir=data_dir, selection="last",
                    device="cpu")  # (this script measures the CPU)
    prep = prepare(cfg)
    prep.method.train(True)
    loader = InMemoryLoader(prep.train, cfg.batch_size, shuffle=True, seed=0)
    times = []
    for epoch in range(3):
        t0 = time.perf_counter()
        for batch in loader.epoch(epoch):
            prep.method.update(batch)
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.images < 64:
        ap.error("--images must be >= 64")
    torch.set_num_threads(1)
    keep_freed_buffers()
    prep = prepare(RunConfig(dataset="bg_shift", data_params={"train_per_class": 200},
                             method="erm", model=args.model, data_dir=args.data_dir,
                             device="cpu"))
    ds = prep.train
    x, y, mask = ds.x.float() / 255, ds.y, ds.mask
    box = infill.mask_boxes(mask)
    gen = torch.Generator().manual_seed(0)
    res = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
           "threads": 1, "images": len(x), "model": args.model,
           "seconds_per_1000_images": {}}
    out = res["seconds_per_1000_images"]
    for name in infill.COUNTERFACTUAL:
        out[f"CF({name})"] = per_thousand(lambda a, b: infill.counterfactual(name, a, b, gen),
                                          x, box)
    for name in infill.FACTUAL:
        out[f"F({name})"] = per_thousand(
            lambda a, m, t: infill.factual(name, a, m, gen, y=t), x, mask, y)
    net = prep.method.networks["model"]
    out["F(fgsm) incl. network"] = per_thousand(
        lambda a, m, t: fgsm_background(net, a, t, ~m, 0.25, gen), x, mask, y)
    out["Sal (GradMask) incl. network"] = per_thousand(
        lambda a, m, t: gradmask(net, a, t, m).backward(), x, mask, y)
    epochs = {name: epoch_seconds(m, hp, args.model, args.images, args.data_dir)
              for name, (m, hp) in COMBOS.items()}
    res["epoch_seconds"] = epochs
    res["epoch_over_erm"] = {k: v / epochs["ERM"] for k, v in epochs.items()}
    for k, v in out.items():
        print(f"{k:32s} {v:8.3f} s / 1,000 images")
    for k, v in epochs.items():
        print(f"epoch of {args.images} images, {k:26s} {v:7.2f} s = "
              f"{res['epoch_over_erm'][k]:.2f}x ERM")
    if args.out:
        runs.write_json(args.out, res)


if __name__ == "__main__":
    main()
