"""LAD stage timing: what each stage of the pipeline costs on this machine (issue 4).

Runs LAD's stages once, with one thread (as each bench worker uses), through the
library's own stage code (``debiaskit.methods.lad.LAD``), on

  * background- or foreground-coloured MNIST at 100 % bias with the LAD settings of the
    ``lad-mnist-cpu`` bench row (BG-100 or FG-100), or
  * 32 x 32 colour images: one-pixel CIFAR-10 (``one_pixel_cifar10``, the CIFAR-10 images
    we have until Corrupted CIFAR-10 is built) with the paper's CIFAR settings (Section 5:
    2048 codes of length 64, van den Oord's 8 x 8 grid, walk 4 steps of alpha 0.07,
    crop + flip), which measures the 32 x 32 VQ-VAE's reconstruction quality and the
    walk's cost on CIFAR-sized latents,

and reports the time of

  * ``vqvae``: training the VQ-VAE (``--vq-epochs``, default the lad default 3), with its
    reconstruction PSNR on the training set and the first evaluation split;
  * ``bias_classifier``: training f on the cached codes;
  * ``walk``: the latent walk and decoding of every training image, also reported as
    seconds per 1,000 images;
  * one training epoch of f_strong with the paper's augmentation (MNIST: crop +
    RandomAffine; CIFAR: crop + flip):
    the MLP on the decoded images (the LAD run's own epoch); ResNet-20 as a Vanilla run on
    ``--strong-subset`` original images (the same cost per image), scaled to the whole
    training set.

    python benchmarks/lad_stages.py [--dataset bg_colored_mnist | colored_mnist |
                                     one_pixel_cifar10] [--train-subset N]
                                    [--data-dir DIR] [--out lad_stages.json]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from debiaskit import runs
from debiaskit.bench.presets import get_preset
from debiaskit.train import RunConfig, train


#: the paper's CIFAR settings (Section 5); the rest are the lad defaults
CIFAR_HPARAMS = {"codebook_size": 2048, "code_dim": 64, "walk_steps": 4, "alpha": 0.07}


def timed_run(out_dir: str, **fields) -> dict:
    """Train one run for one epoch (one thread, batch 128) and return its summary."""
    cfg = RunConfig(epochs=1, batch_size=128, selection="last", eval_subset=500, threads=1,
                    progress=False, device="cpu", **fields)  # (it measures the CPU)
    return train(cfg, out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="bg_colored_mnist",
                        choices=("bg_colored_mnist", "colored_mnist", "one_pixel_cifar10"))
    parser.add_argument("--train-subset", type=int, default=None,
                        help="train on this many images (default: the whole training set)")
    parser.add_argument("--vq-epochs", type=int, default=3)
    parser.add_argument("--strong-subset", type=int, default=2560)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--work-dir", default="lad-stages-run",
                        help="folder for the timed runs (a finished run there is not re-run: "
                             "use a new folder)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    if args.dataset == "one_pixel_cifar10":
        hparams, data_params, augment = dict(CIFAR_HPARAMS), {}, "crop_flip"
    else:
        row = get_preset("lad-mnist-cpu").row(
            "BG-100" if args.dataset == "bg_colored_mnist" else "FG-100")
        hparams, data_params, augment = (row.method_run["LAD"]["hparams"], row.data_params,
                                         "crop_affine")
    hparams = {**hparams, "vq_epochs": args.vq_epochs}
    common = {"dataset": args.dataset, "data_params": data_params, "data_dir": args.data_dir,
              "augment": augment}
    lad = timed_run(f"{args.work_dir}/lad", method="lad", hparams=hparams, model="mlp",
                    train_subset=args.train_subset, **common)
    resnet = timed_run(f"{args.work_dir}/resnet20", method="erm", model="resnet20",
                       train_subset=args.strong_subset, **common)["train_seconds"]
    n = runs.read_json(Path(args.work_dir) / "lad" / runs.CONFIG)["data"]["train_size"]
    walk = lad["stages"]["walk"]["seconds"]
    result = {
        "machine": platform.processor() or platform.machine(), "threads": 1,
        "dataset": args.dataset, "train_images": n, "hparams": hparams,
        "stage_seconds": {name: rec["seconds"] for name, rec in lad["stages"].items()},
        "walk_seconds_per_1000_images": 1000 * walk / n,
        "f_strong_epoch_seconds": {
            "mlp": lad["train_seconds"],
            f"resnet20 (scaled from {args.strong_subset} images)":
                resnet * n / args.strong_subset},
        "stage_stats": lad["stages"],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "stage_stats"}, indent=2))
    if args.out:
        runs.write_json(args.out, result)


if __name__ == "__main__":
    main()
