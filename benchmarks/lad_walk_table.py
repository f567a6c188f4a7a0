"""LAD's walk on background-coloured MNIST: the walk diagnostic for each hypothesis.

Every setting is the ``lad-mnist-cpu`` preset's BG-100 LAD run (seed 0: its VQ-VAE, its
walk of 20 steps of alpha 0.1 std, and ``f`` trained with Adam 1e-3, LAD's settings before
SGD and the walk-length rule became its defaults: :data:`BASE`) with some LAD options
changed; each hypothesis of why the walk remaps the background colour instead of
removing it is one setting (SETTINGS below). For each, the script fits (or loads) the
VQ-VAE and ``f`` (stages computed once and reused by every setting whose VQ-VAE or ``f``
settings match the default's) and runs the walk diagnostic
(:mod:`debiaskit.explain.walk_diagnostic`) on a seeded sample of training images, with one
bias probe shared by all settings. It resumes: a setting whose ``walk_diagnostic.json``
exists under OUT is read, not recomputed; several processes may share OUT (each given
``--settings``), and every process rewrites the table from all finished settings, keeping
the rows the table already holds for settings not finished under OUT.

    python benchmarks/lad_walk_table.py OUT [--settings default,f-sgd,...] [--images 2000]
        [--seed 0] [--threads 1] [--data-dir DIR]
        [--table benchmarks/results/lad_walk_table.json]
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import torch

from debiaskit import runs
from debiaskit.bench.presets import get_preset
from debiaskit.bench.runner import plan
from debiaskit.explain.walk_diagnostic import GOOD, bias_probe, diagnose_config
from debiaskit.train import prepare

#: The options every setting starts from, over the preset's BG-100 row: f and the walk as
#: the first table measured them (Adam 1e-3; the paper's 20 steps of alpha 0.1 std), so
#: that the earlier rows keep their meaning since LAD's defaults changed.
BASE = {"f_optimizer": "adam", "f_lr": 1e-3, "walk_steps": 20, "alpha": 0.1}
#: The walk-length rule chooses alpha and the steps.
RULE = {"alpha": 0.0, "walk_steps": 0}
#: f trained with the paper's "standard SGD" at LAD's default learning rate.
SGD = {"f_optimizer": "sgd", "f_lr": 0.01}


def spacing(alpha: float, steps: int, **more) -> dict:
    """Steps of ``alpha`` code spacings, ``steps`` of them, plus ``more`` options."""
    return {"alpha_units": "spacing", "alpha": alpha, "walk_steps": steps, **more}


#: name -> (hypothesis, LAD options over BASE)
SETTINGS = {
    "default": ("the preset (Adam f, 20 steps of alpha 0.1 std, 14 x 14 grid, 20 codes)", {}),
    # f not saturated
    "f-sgd": ("f trained with plain SGD (lr 0.01), as the paper says", {
        "f_optimizer": "sgd", "f_lr": 0.01}),
    "f-steps20": ("f trained for 20 steps only", {"f_steps": 20}),
    "f-smooth0.3": ("f trained with label smoothing 0.3", {"f_label_smoothing": 0.3}),
    "f-T10": ("the walk reads f at temperature 10", {"f_temperature": 10.0}),
    # walks that differ per image
    "walk-augment": ("each walk starts from an augmented view (crop + affine)", {
        "walk_augment": "crop_affine"}),
    "walk-jitter1": ("start latents jittered by one code spacing", {"walk_jitter": 1.0}),
    # step scaled to the codebook's spacing
    "alpha-spacing0.5": ("steps of half a code spacing", {"alpha_units": "spacing",
                                                          "alpha": 0.5}),
    "alpha-spacing2": ("steps of two code spacings", {"alpha_units": "spacing", "alpha": 2.0}),
    # a VQ-VAE whose codes may separate colour from stroke
    "vq-K64": ("VQ-VAE with 64 codes", {"codebook_size": 64}),
    "vq-h128": ("VQ-VAE with 128 hidden channels (van den Oord's)", {"vq_hidden": 128}),
    "vq-ep6": ("VQ-VAE trained 6 epochs instead of 3", {"vq_epochs": 6}),
    "vq-7x7": ("VQ-VAE on van den Oord's 7 x 7 grid (the 14 x 14 default is the finer one)", {
        "vq_downsample": 4}),
    # combinations
    "sgd+augment": ("SGD f and augmented starts", {"f_optimizer": "sgd", "f_lr": 0.01,
                                                   "walk_augment": "crop_affine"}),
    "T10+augment+spacing0.5": ("f at temperature 10, augmented starts, half-spacing steps", {
        "f_temperature": 10.0, "walk_augment": "crop_affine", "alpha_units": "spacing",
        "alpha": 0.5}),
    # the region the first table left out: f by SGD at other learning rates, steps
    # shorter than a code spacing, Algorithm 1's alpha squared, the continuous start of
    # Eq. 2, a constrained f, and their combinations
    "rule+sgd-lr0.001": ("f by SGD, lr 0.001; walk by the rule", {
        "f_optimizer": "sgd", "f_lr": 0.001, **RULE}),
    "rule+sgd-lr0.1": ("f by SGD, lr 0.1; walk by the rule", {
        "f_optimizer": "sgd", "f_lr": 0.1, **RULE}),
    "rule+sgd-m0.9": ("f by SGD, lr 0.01, momentum 0.9; walk by the rule", {
        **SGD, "f_momentum": 0.9, **RULE}),
    "twice": ("Algorithm 1's alpha squared (20 x 0.01 std)", {"alpha_twice": True}),
    "continuous": ("walk from the encoder's continuous output (Eq. 2)", {
        "walk_start": "continuous"}),
    "sgd+twice": ("SGD f, alpha squared", {**SGD, "alpha_twice": True}),
    "sgd+spacing0.05x40": ("SGD f, 40 steps of 0.05 code spacings", {**SGD, **spacing(0.05, 40)}),
    "sgd+spacing0.1x40": ("SGD f, 40 steps of 0.1 code spacings", {**SGD, **spacing(0.1, 40)}),
    "sgd+spacing0.2x20": ("SGD f, 20 steps of 0.2 code spacings", {**SGD, **spacing(0.2, 20)}),
    "sgd+spacing0.3x20": ("SGD f, 20 steps of 0.3 code spacings", {**SGD, **spacing(0.3, 20)}),
    "sgd+spacing0.5x20": ("SGD f, 20 steps of 0.5 code spacings", {**SGD, **spacing(0.5, 20)}),
    "sgd+continuous+spacing0.1x40": ("SGD f, continuous start, 40 x 0.1 spacings", {
        **SGD, **spacing(0.1, 40, walk_start="continuous")}),
    "sgd+augment+spacing0.1x40": ("SGD f, augmented starts (one walk view of several), "
                                  "40 x 0.1 spacings", {
                                      **SGD, **spacing(0.1, 40, walk_augment="crop_affine")}),
    "sgd-stop90+spacing0.1x40": ("SGD f stopped at 90 % training accuracy, 40 x 0.1 spacings",
                                 {**SGD, "f_stop_accuracy": 90.0, **spacing(0.1, 40)}),
    "sgd-l1e-3+spacing0.1x40": ("SGD f with L1 1e-3 on its first layer, 40 x 0.1 spacings", {
        **SGD, "f_l1": 1e-3, **spacing(0.1, 40)}),
    "rule": ("LAD's defaults: SGD f, alpha and steps by the walk-length rule", {
        **SGD, **RULE}),
}


def base_config(seed: int, data_dir):
    """The lad-mnist-cpu preset's BG-100 LAD run for ``seed``, with one thread."""
    planned = plan(get_preset("lad-mnist-cpu"), Path("unused"), seed + 1, methods=["LAD"],
                   rows=["BG-100"], data_dir=data_dir)
    cfg = planned[seed].config
    return replace(cfg, hparams={**cfg.hparams, **BASE})


def table_row(name: str, result: dict) -> dict:
    """One setting's line of the table: its final record, verdict and stage statistics."""
    final, stages = result["final"], result.get("stages", {})
    return {
        "setting": name, "hypothesis": SETTINGS.get(name, ("?", {}))[0],
        "options": SETTINGS.get(name, ("?", {}))[1],
        "entropy_after": final["entropy"],
        "entropy_share": final["entropy"] / result["max_entropy"],
        "entropy_before": result["steps"][0]["entropy"],
        "class_bias_nmi": final["class_bias_nmi"],
        "class_bias_nmi_before": result["steps"][0]["class_bias_nmi"],
        "bias_kept": final["bias_kept"],
        "shape_iou": final["shape_iou"],
        "shape_iou_before": result["steps"][0]["shape_iou"],
        "changed_digit": final["changed_digit"], "changed_background": final["changed_background"],
        "step_norm": result["steps"][1]["step_norm"] if len(result["steps"]) > 1 else 0.0,
        "code_gap": result["steps"][0]["code_gap"],
        "vq_psnr_db": stages.get("vqvae", {}).get("train_recon_psnr_db"),
        "f_agrees_with_bias": stages.get("bias_classifier", {}).get("f_agrees_with_bias"),
        "verdict": result["verdict"],
        "fails": [k for k, v in result["verdict"].items() if k != "good" and not v],
        "steps": len(result["steps"]) - 1,
        "step_spacings": (result["steps"][1]["step_spacings"] if len(result["steps"]) > 1
                          else 0.0),
        # the first step at which f is unsure while the digit is kept (the rule's end
        # state), and the NMI there: a shorter walk of the same setting may be good
        "first_unsure_kept": first_unsure_kept(result),
        "walk_rule": {k: v for k, v in stages.get("walk_rule", {}).items() if k != "curves"},
    }


def first_unsure_kept(result: dict) -> dict | None:
    """The first step meeting the entropy and IoU bars (and its NMI), or None."""
    for row in result["steps"][1:]:
        if (row["entropy"] >= GOOD["entropy_share"] * result["max_entropy"]
                and row["shape_iou"] >= GOOD["shape_iou"]):
            return {"step": row["step"], "entropy_share": row["entropy"] / result["max_entropy"],
                    "shape_iou": row["shape_iou"], "class_bias_nmi": row["class_bias_nmi"]}
    return None


def write_table(out: Path, table: Path, images: int, seed: int) -> list[dict]:
    """Write ``table`` from every setting finished under ``out``, keeping the rows the
    table already holds for settings not finished there (the table grows over runs)."""
    kept = {row["setting"]: row for row in runs.read_json(table)["rows"]} if table.exists() else {}
    rows = []
    for name in SETTINGS:
        path = out / name / "walk_diagnostic.json"
        if path.exists():
            rows.append(table_row(name, runs.read_json(path)))
        elif name in kept:
            rows.append(kept[name])
    result = {
        "protocol": (f"lad-mnist-cpu BG-100 (background-coloured MNIST, 100 % bias), LAD "
                     f"seed {seed}, walk diagnostic on {images} training images; good walk: "
                     f"entropy >= {GOOD['entropy_share']:.0%} of log 10, NMI <= "
                     f"{GOOD['class_bias_nmi']}, shape IoU >= {GOOD['shape_iou']}; float32, "
                     "one thread per process"),
        "command": "python benchmarks/lad_walk_table.py OUT",
        "rows": rows,
    }
    table.parent.mkdir(parents=True, exist_ok=True)
    runs.write_json(table, result)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--table", default="benchmarks/results/lad_walk_table.json")
    args = parser.parse_args()
    names = [n for n in args.settings.split(",") if n]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; known: {', '.join(SETTINGS)}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    base = replace(base_config(args.seed, args.data_dir), threads=args.threads)
    probe = None
    for name in names:
        folder = out / name
        if (folder / "walk_diagnostic.json").exists():
            print(f"{name}: done before")
            continue
        if probe is None:  # one probe for every setting (the data are the same)
            probe = bias_probe(prepare(base).evals, args.seed)
        cfg = replace(base, hparams={**base.hparams, **SETTINGS[name][1]})
        reuse = out / "default" / runs.STAGES
        result = diagnose_config(cfg, folder, reuse if reuse.is_dir() else None, args.images,
                                 args.seed, probe)
        final = result["final"]
        print(f"{name}: entropy {final['entropy']:.3f} ({final['entropy'] / math.log(10):.0%}),"
              f" NMI {final['class_bias_nmi']:.3f}, IoU {final['shape_iou']:.3f}, changed "
              f"digit {final['changed_digit']:.0%} bg {final['changed_background']:.0%}: "
              f"{'GOOD' if result['verdict']['good'] else 'not good'}", flush=True)
        write_table(out, Path(args.table), args.images, args.seed)
    rows = write_table(out, Path(args.table), args.images, args.seed)
    print(json.dumps([{k: r[k] for k in ("setting", "entropy_share", "class_bias_nmi",
                                         "shape_iou", "fails")} for r in rows], indent=1))


if __name__ == "__main__":
    main()
