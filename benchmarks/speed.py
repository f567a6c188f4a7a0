"""Speed benchmark: how close an epoch comes to the arithmetic of its networks.

Measures, in one run on this machine and with one thread (as each bench worker uses):
  * the float32 matmul rate (GFLOP/s), square 1024 x 1024 and at the MLP's first-layer shape;
  * one Colored MNIST training epoch (60,000 images, batch 256) of Vanilla (ERM), LfF,
    SiH and DisEnt (its 16-d network, with feature swapping on), or of any registered
    method named in ``--methods`` (e.g. gba,adversarial,domain_independent), through the
    library's own loader and ``Method.update``, and each one's time relative to Vanilla's;
    LfF and DisEnt both packed (their networks' first layers as one product, `--pack on`)
    and unpacked (``--pack off``); ``--pack auto``, the default, picks one of the two per run;
  * the whole LfF Table 2 Colored MNIST preset's training time on 2 workers at the
    matmul rate (its floor in float32 on this CPU) and at the measured epoch times;
  * the speed targets (Vanilla's share of the matmul rate, LfF's and DisEnt's epoch time
    over Vanilla's) and whether each is met;
  * each epoch's counted arithmetic of the linear layers (forward, weight gradients, input
    gradients except for layers reading the image) divided by its time, as a share of
    the matmul rate (GBA's second pass through D for the mask gradient is not counted);
  * Vanilla's training step in float32 and under bf16 autocast (``--precision bf16``) for
    each of ``--precision-models`` (ResNet-20 is LAD's f_strong), as seconds per 1,000
    images over ``--precision-batches`` batches of 128 and the bf16 / float32 ratio.

    python benchmarks/speed.py [--data-dir DIR] [--epochs 3] [--methods erm,lff,sih,disent]
                               [--precision-models mlp,resnet20] [--precision-batches 40]
                               [--out speed.json]

Reports the best of ``--epochs`` epochs (after one warm-up epoch).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from debiaskit import runs
from debiaskit.data.loader import InMemoryLoader
from debiaskit.precision import cpu_name, native_bf16
from debiaskit.allocator import keep_freed_buffers
from debiaskit.train import RunConfig, arithmetic, prepare


def matmul_rate(m: int, k: int, n: int, seconds: float = 2.0) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


#: Hyper-parameters for timing: DisEnt with its feature swapping on from the first step.
TIMING_HPARAMS = {"disent": {"swap_start": 0}}
#: Model options for timing: DisEnt's own network (16-d features per branch).
TIMING_MODEL_OPTIONS = {"disent": {"feature_dim": 16}}
#: Methods with networks that read the same batch, timed packed and unpacked.
PACKED = ("lff", "disent")
#: The issue's targets: Vanilla's share of the matmul rate, and epoch time over Vanilla's.
TARGETS = {"erm": ("share_of_matmul_rate", ">=", 0.70), "lff": ("over_erm", "<=", 1.8),
           "disent": ("over_erm", "<=", 2.0)}
LABELS = {"erm": "Vanilla", "lff": "LfF", "sih": "SiH", "disent": "DisEnt", "gba": "GBA",
          "adversarial": "Advers.", "domain_independent": "Dom-Ind"}


def training_flops_per_sample(net: nn.Module, input_dim: int) -> float:
    """2 x MACs of the linear layers for forward + weight gradients + input gradients (none
    for layers that read the image itself)."""
    layers = [m for m in net.modules() if isinstance(m, nn.Linear)]
    forward = sum(m.in_features * m.out_features for m in layers)
    backward_input = sum(m.in_features * m.out_features for m in layers
                         if m.in_features != input_dim)
    return 2.0 * (2 * forward + backward_input)


def epoch_time(method_name: str, data_dir, epochs: int,
               pack: bool = True) -> tuple[float, float]:
    cfg = RunConfig(method=method_name, data_params={"conflict_ratio": 0.01}, data_dir=data_dir,
                    selection="last", hparams=TIMING_HPARAMS.get(method_name, {}),
                    model_options=TIMING_MODEL_OPTIONS.get(method_name, {}), pack=pack,
                    device="cpu")  # (this script measures the CPU)
    prep = prepare(cfg)
    loader = InMemoryLoader(prep.train, 256, shuffle=True, seed=0)
    times = []
    for epoch in range(epochs + 1):
        t0 = time.perf_counter()
        for batch in loader.epoch(epoch):
            prep.method.update(batch)
        times.append(time.perf_counter() - t0)
    input_dim = prep.train.x[0].numel()
    flops = sum(training_flops_per_sample(net, input_dim)
                for net in prep.method.networks.values())
    return min(times[1:]), flops * len(prep.train) / 1e9


def step_seconds_per_1000(model: str, precision: str, data_dir, batches: int) -> float:
    """Seconds per 1,000 images of Vanilla's training step (batch 128) on Colored MNIST,
    the best of two passes over ``batches`` batches after a warm-up batch."""
    cfg = RunConfig(method="erm", model=model, precision=precision, batch_size=128,
                    data_params={"conflict_ratio": 0.01}, data_dir=data_dir, selection="last",
                    force_precision=True, device="cpu")  # any CPU, native bf16 or not
    prep = prepare(cfg)
    prep.method.train(True)
    loader = InMemoryLoader(prep.train, cfg.batch_size, shuffle=True, seed=0)
    chosen = [b for _, b in zip(range(batches + 1), loader.epoch(0))]
    best = float("inf")
    for _ in range(2):
        for i, batch in enumerate(chosen):
            if i == 1:
                t0 = time.perf_counter()
            with arithmetic(cfg):
                prep.method.update(batch)
        best = min(best, time.perf_counter() - t0)
    return best / (batches * cfg.batch_size) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--methods", default="erm,lff,sih,disent")
    ap.add_argument("--precision-models", default="mlp,resnet20")
    ap.add_argument("--precision-batches", type=int, default=40)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.precision_batches < 1:
        ap.error("--precision-batches must be >= 1")
    torch.set_num_threads(1)
    keep_freed_buffers()
    res = {"machine": cpu_name(), "native_bf16": native_bf16(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
           "threads": 1,
           "matmul_gflops_square1024": matmul_rate(1024, 1024, 1024),
           "matmul_gflops_mlp_shape": matmul_rate(256, 2352, 100)}
    rate = res["matmul_gflops_square1024"]
    methods = ["erm"] + [m for m in args.methods.split(",") if m and m != "erm"]
    timed = [(name, True) for name in methods] + [(name, False) for name in methods
                                                   if name in PACKED]
    for name, pack in timed:
        key = name if pack else f"{name}_unpacked"
        seconds, gflop = epoch_time(name, args.data_dir, args.epochs, pack)
        res[key] = {"epoch_seconds": seconds, "epoch_gflop": gflop,
                    "gflops": gflop / seconds, "share_of_matmul_rate": gflop / seconds / rate}
        if name != "erm":
            res[f"{key}_over_erm"] = seconds / res["erm"]["epoch_seconds"]
    print(f"float32 matmul, 1 thread: {rate:.1f} GFLOP/s (1024^3), "
          f"{res['matmul_gflops_mlp_shape']:.1f} GFLOP/s (256x2352x100); {cpu_name()}")
    for name, pack in timed:
        key = name if pack else f"{name}_unpacked"
        r = res[key]
        ratio = f", {res[f'{key}_over_erm']:.2f}x Vanilla" if name != "erm" else ""
        label = LABELS.get(name, name) + ("" if pack or name not in PACKED else " unpacked")
        print(f"{label:16s} epoch (60k, batch 256): {r['epoch_seconds']:.2f} s"
              f"{ratio}; {r['epoch_gflop']:.1f} GFLOP -> {r['gflops']:.1f} GFLOP/s = "
              f"{100 * r['share_of_matmul_rate']:.0f} % of the matmul rate")
    if "lff" in res:
        # the whole LfF Table 2 Colored MNIST preset: 4 rows x 3 seeds x 100 epochs of
        # Vanilla and of LfF, on 2 cores (workers) at once
        runs_each, epochs, cores = 12, 100, 2
        floor = runs_each * epochs * (res["erm"]["epoch_gflop"] + res["lff"]["epoch_gflop"]) \
            / rate / cores / 60
        at_measured = runs_each * epochs * (res["erm"]["epoch_seconds"]
                                            + res["lff"]["epoch_seconds"]) / cores / 60
        res["lff_table2_minutes"] = {"arithmetic_at_matmul_rate": floor,
                                     "at_measured_epochs": at_measured}
        print(f"LfF Table 2 (12 Vanilla + 12 LfF runs x 100 epochs, 2 workers): its arithmetic "
              f"at the matmul rate takes {floor:.1f} min, at these epoch times "
              f"{at_measured:.1f} min (training only)")
    res["targets"] = {}
    for name, (stat, op, bound) in TARGETS.items():
        if name not in res:
            continue
        value = (res[name][stat] if stat == "share_of_matmul_rate"
                 else res[f"{name}_over_erm"])
        met = value >= bound if op == ">=" else value <= bound
        res["targets"][name] = {"statistic": stat, "value": value, "bound": f"{op} {bound}",
                                "met": met}
        print(f"target {LABELS[name]} {stat} {op} {bound}: {value:.3f} "
              f"({'met' if met else 'NOT met'})")
    for model in filter(None, args.precision_models.split(",")):
        fp32, bf16 = (step_seconds_per_1000(model, p, args.data_dir, args.precision_batches)
                      for p in ("fp32", "bf16"))
        res[f"precision_{model}"] = {"fp32_seconds_per_1000": fp32,
                                     "bf16_seconds_per_1000": bf16, "bf16_over_fp32": bf16 / fp32}
        print(f"{model:8s} Vanilla step, batch 128: float32 {fp32:.3f} s / 1,000 images, "
              f"bf16 autocast {bf16:.3f} s ({bf16 / fp32:.2f}x float32's time)")
    if args.out:
        runs.write_json(args.out, res)


if __name__ == "__main__":
    main()
