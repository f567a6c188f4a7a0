"""Speed benchmark: how close an epoch comes to the arithmetic of its networks.

Measures, in one run on this machine and with one thread (as each bench worker uses):
  * the float32 matmul rate (GFLOP/s), square 1024 x 1024 and at the MLP's first-layer shape;
  * one Colored MNIST training epoch (60,000 images, batch 256) of Vanilla (ERM) and of
    LfF through the library's own loader and ``Method.update``;
  * each epoch's counted arithmetic (forward, weight gradients, input gradients except
    the first layer's) divided by its time, as a share of the matmul rate.

    python benchmarks/speed.py [--data-dir DIR] [--epochs 3] [--out speed.json]

Reports the best of ``--epochs`` epochs (after one warm-up epoch).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch import nn

from debiaskit.data.loader import InMemoryLoader
from debiaskit.speed import keep_freed_buffers
from debiaskit.train import RunConfig, prepare


def matmul_rate(m: int, k: int, n: int, seconds: float = 2.0) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


def training_flops_per_sample(net: nn.Module) -> float:
    """2 x MACs for forward + weight gradients + input gradients (not for the input layer)."""
    layers = [m for m in net.modules() if isinstance(m, nn.Linear)]
    macs = [m.in_features * m.out_features for m in layers]
    return 2.0 * (2 * sum(macs) + sum(macs[1:]))


def epoch_time(method_name: str, data_dir, epochs: int) -> tuple[float, float]:
    cfg = RunConfig(method=method_name, data_params={"conflict_ratio": 0.01}, data_dir=data_dir)
    prep = prepare(cfg)
    loader = InMemoryLoader(prep.train, 256, shuffle=True, seed=0)
    times = []
    for epoch in range(epochs + 1):
        t0 = time.perf_counter()
        for batch in loader.epoch(epoch):
            prep.method.update(batch)
        times.append(time.perf_counter() - t0)
    flops = sum(training_flops_per_sample(net) for net in prep.method.networks.values())
    return min(times[1:]), flops * len(prep.train) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    keep_freed_buffers()
    res = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
           "threads": 1,
           "matmul_gflops_square1024": matmul_rate(1024, 1024, 1024),
           "matmul_gflops_mlp_shape": matmul_rate(256, 2352, 100)}
    rate = res["matmul_gflops_square1024"]
    for name in ("erm", "lff"):
        seconds, gflop = epoch_time(name, args.data_dir, args.epochs)
        res[name] = {"epoch_seconds": seconds, "epoch_gflop": gflop,
                     "gflops": gflop / seconds, "share_of_matmul_rate": gflop / seconds / rate}
    res["lff_over_erm"] = res["lff"]["epoch_seconds"] / res["erm"]["epoch_seconds"]
    print(f"float32 matmul, 1 thread: {rate:.1f} GFLOP/s (1024^3), "
          f"{res['matmul_gflops_mlp_shape']:.1f} GFLOP/s (256x2352x100)")
    for name, label in (("erm", "Vanilla"), ("lff", "LfF")):
        r = res[name]
        print(f"{label:8s} epoch (60k, batch 256): {r['epoch_seconds']:.2f} s, "
              f"{r['epoch_gflop']:.1f} GFLOP -> {r['gflops']:.1f} GFLOP/s = "
              f"{100 * r['share_of_matmul_rate']:.0f} % of the matmul rate")
    print(f"LfF / Vanilla epoch time: {res['lff_over_erm']:.2f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
