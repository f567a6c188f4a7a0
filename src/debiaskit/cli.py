"""Command line: ``debiaskit train | data info | bench | explain KIND | discover | report |
methods | sweep | export``.

Every user error is one line on stderr and exit status 2 (see :mod:`debiaskit.errors`);
every ``--out`` is checked before a command starts (:func:`check_out_option`); a closed
stdout pipe (``| head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import ConfigError, DebiaskitError, unknown_name


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message):
        self.exit(2, f"debiaskit: error: {message} (see '{self.prog} --help')\n")


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(items, what: str) -> dict:
    out = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} {item!r} must look like key=value")
        out[key.replace("-", "_")] = _value(val)
    return out


def _data_params(args) -> dict:
    params = _pairs(args.data, "--data")
    if args.conflict_ratio is not None:
        params["conflict_ratio"] = args.conflict_ratio
    if args.aligned_ratio is not None:
        if "conflict_ratio" in params:
            raise ConfigError("give either --conflict-ratio or --aligned-ratio, not both")
        params["conflict_ratio"] = round(1.0 - args.aligned_ratio, 9)
    return params


def _add_data_options(p) -> None:
    p.add_argument("--conflict-ratio", type=float, help="fraction of bias-conflicting training "
                   "samples (the API's convention; SiH's %% / 100)")
    p.add_argument("--aligned-ratio", type=float, help="fraction of bias-aligned samples (LfF's "
                   "'ratio' / 100); converted to --conflict-ratio")
    p.add_argument("--data", action="append", metavar="KEY=VALUE",
                   help="other protocol parameters, e.g. severity=4, sigma=0.01, seed=1")
    p.add_argument("--data-dir", help="folder with mnist.npz etc. (default: $DEBIASKIT_DATA)")
    p.add_argument("--download", action="store_true",
                   help="download missing datasets through torchvision")


def _add_discover_parser(sub, cfg) -> None:
    from .explain.discover import CLUSTER_FEATURES, SCORES, DiscoverConfig

    dflt = DiscoverConfig()
    v = sub.add_parser("discover", help="find bias-conflicting images and the shortcut "
                       "without bias labels (GCE biased model, ranking, clusters, HTML page)")
    v.add_argument("folder", nargs="?", metavar="FOLDER", help="folder of images: with "
                   "--labels CSV (columns path,y), else one sub-folder per class")
    v.add_argument("--labels", metavar="CSV", help="labels file of FOLDER's images (columns "
                   "path,y; paths relative to FOLDER; a bias column only scores the result)")
    v.add_argument("--image-size", type=int, help="resize FOLDER's images to N x N")
    v.add_argument("--dataset", help="a built-in protocol instead of FOLDER; its bias labels "
                   "are hidden and only score the discovery")
    _add_data_options(v)
    v.add_argument("--train-subset", type=int, help="discover on a seeded random subset of N "
                   "training images (as 'train --train-subset N --seed S')")
    v.add_argument("--epochs", type=int, default=dflt.epochs,
                   help="epochs of the GCE biased model")
    v.add_argument("--model", default=dflt.model, help="network of the biased model")
    v.add_argument("--batch-size", type=int, default=dflt.batch_size,
                   help="minibatch size of the biased model")
    v.add_argument("--lr", type=float, default=dflt.lr, help="Adam learning rate")
    v.add_argument("--q", type=float, default=dflt.q, help="GCE exponent q (LfF Eq. 2)")
    v.add_argument("--score", default=dflt.score, help="ranking score: " + "; ".join(
        f"{k}: {d}" for k, d in SCORES.items()))
    v.add_argument("--ema", type=float, default=dflt.ema, help="decay of --score ema")
    v.add_argument("--cluster-on", default=dflt.cluster_on, help="; ".join(
        f"{k}: {d}" for k, d in CLUSTER_FEATURES.items()))
    v.add_argument("--clusters", type=int, help="k of k-means (default: number of classes)")
    v.add_argument("--threshold", type=float, help="foreground brightness in [0, 1) for the "
                   "colour statistics (default: each image's midpoint)")
    v.add_argument("--top", type=int, default=dflt.top,
                   help="top-ranked images listed and shown")
    v.add_argument("--examples", type=int, default=dflt.examples,
                   help="example images per cluster")
    v.add_argument("--sih", action="store_true", help="also train SiH label-free into "
                   "OUT/sih (MLP VAE; 28 x 28 images only): a second ranking by its biased "
                   "classifier's cross-entropy (--score sih makes it the primary one) and "
                   "its bias visualisation on the page")
    v.add_argument("--sih-epochs", type=int, default=dflt.sih_epochs,
                   help="epochs of the SiH run (last epoch kept)")
    v.add_argument("--seed", type=int, default=dflt.seed, help="seed of the biased model's "
                   "training, the clustering and --train-subset")
    v.add_argument("--device", default=cfg.device, help="torch device, e.g. cpu or cuda")
    v.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    v.add_argument("--out", required=True, help="new or empty folder for discovery.json, "
                   "ranking.csv and discover.html")


#: --data-dir of the explain commands that reload a run's data.
EXPLAIN_DATA_DIR = "data directory, if not the one the run was trained with"


def build_parser() -> argparse.ArgumentParser:
    from .data.augment import AUGMENTATIONS
    from .data.protocols import PROTOCOLS
    from .export import TRACKERS
    from .models import MODELS
    from .optim import OPTIMIZERS, SCHEDULES
    from .train import SELECTION, RunConfig

    parser = _Parser(prog="debiaskit", description="Train classifiers that do not take the "
                     "shortcut, and benchmark debiasing methods.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train one method on one dataset into a run directory")
    cfg = RunConfig()  # every default below is the config's, not repeated here
    t.add_argument("--dataset", default=cfg.dataset,
                   help="dataset protocol (see 'debiaskit data info'): " + ", ".join(PROTOCOLS))
    t.add_argument("--method", help=f"method (default {cfg.method}; discovered with "
                   "--reweight-from; see 'debiaskit methods')")
    _add_data_options(t)
    t.add_argument("--hp", action="append", metavar="KEY=VALUE", help="method hyper-parameter")
    t.add_argument("--model", default=cfg.model, help="network: " + ", ".join(MODELS))
    t.add_argument("--model-opt", action="append", metavar="KEY=VALUE",
                   help="network option, e.g. weights=PATH (resnet18_imagenet), mean=[...]")
    t.add_argument("--epochs", type=int, default=cfg.epochs, help="epochs (the most epochs "
                   "under early stopping; SiH's paper allows 500)")
    t.add_argument("--batch-size", type=int, default=cfg.batch_size,
                   help="training minibatch size")
    t.add_argument("--augment", default=cfg.augment, help="batched training augmentation: "
                   + ", ".join(AUGMENTATIONS))
    t.add_argument("--precision", default=cfg.precision, help="arithmetic of the training and "
                   "evaluation passes: fp32 (the papers') or bf16 (autocast; slightly different "
                   "numbers; refused where the hardware has no native bf16)")
    t.add_argument("--force-precision", action="store_true",
                   help="run bf16 even without native bf16 (to measure it)")
    t.add_argument("--optimizer", default=cfg.optimizer, help="; ".join(
        f"{k}: {v}" for k, v in OPTIMIZERS.items()))
    t.add_argument("--momentum", type=float, default=cfg.momentum, help="SGD momentum")
    t.add_argument("--schedule", default=cfg.schedule, help="; ".join(
        f"{k}: {v}" for k, v in SCHEDULES.items()))
    t.add_argument("--lr-step", type=int, default=cfg.lr_step, help="epochs between steps "
                   "of the step schedule")
    t.add_argument("--lr-gamma", type=float, default=cfg.lr_gamma,
                   help="factor of the step schedule")
    t.add_argument("--seed", type=int, default=cfg.seed, help="training seed: initial "
                   "weights, batch order, augmentation, subsets and held-out split (the "
                   "data's own seed is --data seed=N)")
    t.add_argument("--selection", help="model selection (default: the method's own; see "
                   "'debiaskit methods'): "
                   + "; ".join(f"{k}: {v}" for k, v in SELECTION.items()))
    t.add_argument("--heldout-fraction", type=float, default=cfg.heldout_fraction,
                   help="fraction of the training set held out for selection heldout, "
                   "worst_group and early_stop")
    t.add_argument("--patience", type=int, default=cfg.patience, help="early-stopping "
                   "patience in epochs (selection early_stop; SiH: 2 for mlp, 20 for resnet18)")
    t.add_argument("--eval-every", type=int, default=cfg.eval_every, metavar="N",
                   help="evaluate every N-th epoch and the last (selection last only)")
    t.add_argument("--pack", choices=("auto", "on", "off"), default="off",
                   help="networks that read the same batch: one by one (off, the default: "
                   "the same numbers in every process), first layers as one product (on), or "
                   "whichever the first batch times faster on this CPU (auto); on and auto "
                   "change results by float rounding")
    t.add_argument("--no-pack", action="store_true", help="same as --pack off")
    t.add_argument("--train-subset", type=int, help="train on a seeded random subset of N images")
    t.add_argument("--eval-subset", type=int, help="evaluate on seeded random subsets of N images")
    t.add_argument("--no-bias-labels", action="store_true",
                   help="drop the training set's bias labels (as a practitioner would have)")
    t.add_argument("--out", help="run directory (default runs/METHOD-DATASET-seedN)")
    t.add_argument("--device", default=cfg.device, help="torch device, e.g. cpu or cuda")
    t.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    t.add_argument("--memory-format", default=cfg.memory_format, help="layout of convolution "
                   "weights: channels_last (faster CPU convolutions) or contiguous")
    t.add_argument("--reuse-stages", metavar="RUN_DIR",
                   help="copy cached stages (LAD's VQ-VAE, f, walk) from another run when "
                        "their settings match, e.g. to try another --model on the same walk")
    t.add_argument("--reweight-from", metavar="DISCOVERY", help="train the discovered method "
                   "from a 'debiaskit discover' folder on the same training images (JTT-style "
                   "upsampling of its error set, or --hp mode=groupdro over its clusters)")

    d = sub.add_parser("data", help="inspect datasets")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    info = dsub.add_parser("info", help="counts per (class, bias) and checksums of a dataset")
    info.add_argument("dataset", help="dataset protocol: " + ", ".join(PROTOCOLS))
    _add_data_options(info)

    b = sub.add_parser("bench", help="reproduce a paper table next to its published numbers")
    b.add_argument("preset", nargs="?", help="table preset (omit to list them)")
    b.add_argument("--seeds", type=int, help="train seeds 0 to N-1 of every method and row "
                   "(default: the preset's)")
    b.add_argument("--workers", type=int, help="parallel runs (default: number of cores)")
    b.add_argument("--methods", help="comma-separated subset of the preset's methods")
    b.add_argument("--rows", help="comma-separated subset of the preset's rows, e.g. 1,0.5")
    b.add_argument("--epochs", type=int, help="override the preset's epochs (stated in report)")
    b.add_argument("--precision", help="fp32 (the papers') or bf16 autocast (stated in report)")
    b.add_argument("--force-precision", action="store_true",
                   help="run bf16 even without native bf16 (to measure it)")
    b.add_argument("--pack", choices=("auto", "on", "off"), default="off",
                   help="networks that read the same batch: one by one (off, the default), "
                   "first layers as one product (on), or whichever the first batch times "
                   "faster on this CPU (auto); stated in the report")
    b.add_argument("--no-pack", action="store_true", help="same as --pack off")
    b.add_argument("--hp", action="append", metavar="KEY=VALUE",
                   help="method hyper-parameter over the preset's, for every chosen method "
                        "(stated in report; give a new --out)")
    b.add_argument("--out", default="bench-out", help="output folder: OUT/PRESET holds the "
                   "runs, report.md, results.json and curves.png (a rerun skips finished runs)")
    b.add_argument("--data-dir", help="folder with mnist.npz etc. (default: $DEBIASKIT_DATA)")
    b.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster (ray.init address, "
                   "or 'local'); --out and --data-dir must be shared by all nodes")

    e = sub.add_parser("explain", help="show which shortcut a model took")
    esub = e.add_subparsers(dest="explain_command", required=True, parser_class=_Parser)
    curves = esub.add_parser("curves", help="aligned vs conflicting accuracy per epoch (PNG)")
    curves.add_argument("run_dir", help="run directory (the --out of 'debiaskit train')")
    curves.add_argument("--out", help="PNG path (default RUN_DIR/curves.png)")
    bias = esub.add_parser("bias", help="SiH's latent DeepFool bias visualisation of a sih "
                           "run, next to DisEnt-style swapping (PNG grid and scores JSON)")
    bias.add_argument("run_dir", help="run directory of a finished sih or sih_rds run")
    bias.add_argument("--images", type=int, default=100, help="how many test images to visualise")
    bias.add_argument("--seed", type=int, default=0, help="seed of image and target choice")
    bias.add_argument("--split", default="test", help="evaluation split whose images are "
                      "shown")
    bias.add_argument("--threshold", type=float, default=0.2,
                      help="intensity above which a pixel counts as digit for the shape IoU")
    bias.add_argument("--out", help="PNG path (default RUN_DIR/bias.png; scores beside it)")
    bias.add_argument("--data-dir", help=EXPLAIN_DATA_DIR)
    lad = esub.add_parser("lad", help="LAD's training images next to their VQ-VAE and "
                          "walked reconstructions (Figure 4 PNG)")
    lad.add_argument("run_dir", help="run directory of a lad run whose walk has finished")
    lad.add_argument("--images", type=int, default=24, help="training images shown")
    lad.add_argument("--seed", type=int, default=0,
                     help="seed of the image choice and the bias probe")
    lad.add_argument("--out", help="PNG path (default RUN_DIR/lad.png; the bias probe's "
                     "lad_bias.json and .png beside it)")
    lad.add_argument("--no-probe", action="store_true",
                     help="skip the bias probe (does the walk remove the bias or remap it?)")
    lad.add_argument("--data-dir", help=EXPLAIN_DATA_DIR)
    walk = esub.add_parser("lad-walk", help="LAD walk diagnostic: per walk step, f's "
                           "entropy, codes changed (digit vs background), step vs code gap, "
                           "class-bias NMI and digit-shape IoU (JSON table and PNG)")
    walk.add_argument("run_dir", help="run directory of a lad run (its stages are reused)")
    walk.add_argument("--hp", action="append", metavar="KEY=VALUE",
                      help="LAD option over the run's (a hypothesis; its stages are computed "
                      "in --out, the run's reused where they match)")
    walk.add_argument("--images", type=int, default=2000, help="training images walked")
    walk.add_argument("--seed", type=int, default=0, help="seed of the image sample and probe")
    walk.add_argument("--out", help="folder (default RUN_DIR/walk_diagnostic)")
    walk.add_argument("--data-dir", help=EXPLAIN_DATA_DIR)
    sal = esub.add_parser("saliency", help="CF/F's saliency focus: images, foreground masks "
                          "and saliency maps (PNG) and the saliency AUPR (JSON)")
    sal.add_argument("run_dir", help="run directory of a finished run on data with "
                     "foreground masks")
    sal.add_argument("--split", help="evaluation split with masks (default: the first)")
    sal.add_argument("--method", default="deeplift_shap", help="deeplift_shap or gradient")
    sal.add_argument("--images", type=int, default=8, help="images in the grid")
    sal.add_argument("--aupr-images", type=int, default=500, help="images the AUPR averages")
    sal.add_argument("--seed", type=int, default=0, help="seed of the image choice")
    sal.add_argument("--out", help="PNG path (default RUN_DIR/saliency-SPLIT-METHOD.png; "
                     "the JSON beside it)")
    sal.add_argument("--data-dir", help=EXPLAIN_DATA_DIR)
    gr = esub.add_parser("gradient-ratio", help="LAD's one-pixel problem: train Vanilla and "
                         "track the gradient ratio GR (Eq. 1) per iteration (Figure 2 PNG, JSON)")
    gr.add_argument("--dataset", default="one_pixel_mnist",
                    help="one_pixel_mnist or one_pixel_cifar10")
    gr.add_argument("--model", default="mlp", help="classifier (mlp, resnet20, resnet18)")
    gr.add_argument("--iterations", type=int, default=1000, help="training minibatches")
    gr.add_argument("--batch-size", type=int, default=256, help="minibatch size")
    gr.add_argument("--optimizer", default="adam", help="adam or sgd (plain minibatch SGD)")
    gr.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    gr.add_argument("--value", type=int, default=255, help="value of the class pixel")
    gr.add_argument("--seed", type=int, default=0,
                    help="seed of the data, the initial weights and the batch order")
    gr.add_argument("--eval-every", type=int, metavar="N",
                    help="also evaluate on the test splits every N iterations (4th panel)")
    gr.add_argument("--out", default="gradient-ratio", help="output folder")
    gr.add_argument("--data-dir", help="folder with mnist.npz etc. (default: $DEBIASKIT_DATA)")
    gr.add_argument("--download", action="store_true",
                    help="download missing datasets through torchvision")

    _add_discover_parser(sub, cfg)

    sub.add_parser("methods", help="list methods and their hyper-parameters")

    w = sub.add_parser("sweep", help="random hyper-parameter search of one method, run by the "
                       "bench runner, trials chosen by a declared rule")
    w.add_argument("method", help="method to tune (see 'debiaskit methods')")
    w.add_argument("--dataset", default=cfg.dataset,
                   help="dataset protocol: " + ", ".join(PROTOCOLS))
    _add_data_options(w)
    w.add_argument("--trials", type=int, default=8, help="trials (trial 0: the defaults)")
    w.add_argument("--seeds", type=int, default=2, help="training seeds per trial")
    w.add_argument("--search", help="comma-separated hyper-parameters to search (default: "
                   "every one with a search distribution; see 'debiaskit methods')")
    w.add_argument("--hp", action="append", metavar="KEY=VALUE",
                   help="hyper-parameter fixed for every trial")
    w.add_argument("--grid", metavar="NAME=V1,V2,...", help="instead of a random search, "
                   "one trial per listed value of one hyper-parameter")
    w.add_argument("--rule", default="heldout", help="label-free trial selection: heldout "
                   "(held-out plain accuracy), heldout_mixed (held-out accuracy with "
                   "backgrounds from other classes' images; needs masks) or objective (the "
                   "method's own objective, with early stopping); worst-group accuracy is "
                   "always reported beside it, labelled")
    w.add_argument("--model", default=cfg.model, help="network: " + ", ".join(MODELS))
    w.add_argument("--model-opt", action="append", metavar="KEY=VALUE",
                   help="network option, as for 'debiaskit train'")
    w.add_argument("--epochs", type=int, default=cfg.epochs, help="epochs of every trial")
    w.add_argument("--batch-size", type=int, default=cfg.batch_size,
                   help="training minibatch size")
    w.add_argument("--augment", default=cfg.augment, help=", ".join(AUGMENTATIONS))
    w.add_argument("--optimizer", default=cfg.optimizer, help=", ".join(OPTIMIZERS))
    w.add_argument("--momentum", type=float, default=cfg.momentum, help="SGD momentum")
    w.add_argument("--schedule", default=cfg.schedule, help=", ".join(SCHEDULES))
    w.add_argument("--lr-step", type=int, default=cfg.lr_step,
                   help="epochs between steps of the step schedule")
    w.add_argument("--lr-gamma", type=float, default=cfg.lr_gamma,
                   help="factor of the step schedule")
    w.add_argument("--train-subset", type=int,
                   help="train on a seeded random subset of N images")
    w.add_argument("--eval-subset", type=int,
                   help="evaluate on seeded random subsets of N images")
    w.add_argument("--workers", type=int, help="parallel runs (default: number of cores)")
    w.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster (or 'local')")
    w.add_argument("--out", required=True, help="sweep folder (a rerun resumes it)")

    x = sub.add_parser("export", help="export run directories to an experiment tracker "
                       "(the run directory stays the source of truth)")
    x.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directories to export (each with config.json and metrics.jsonl)")
    x.add_argument("--to", default="tensorboard", help="; ".join(
        f"{k}: {v}" for k, v in TRACKERS.items()))
    x.add_argument("--out", required=True, help="new folder for the export (never overwritten)")

    r = sub.add_parser("report", help="one self-contained HTML page (no server, no network) "
                       "of run directories and bench folders: tables vs the published "
                       "numbers, curves, sample weights, explain images")
    r.add_argument("paths", nargs="+", metavar="PATH", help="run directory, bench folder, or "
                   "a folder to search for both")
    r.add_argument("--out", default="report.html", help="HTML file to write (replaced if it "
                   "exists)")
    r.add_argument("--max-runs", type=int, default=12, help="run folders shown per bench or "
                   "searched folder (the rest are counted)")
    return parser


def _train_method(args) -> str:
    from .train import RunConfig

    return args.method or ("discovered" if args.reweight_from else RunConfig.method)


def _train_out(args) -> str:
    return args.out or f"runs/{_train_method(args)}-{args.dataset}-seed{args.seed}"


#: Commands whose --out names a file (explain: the PNG, its JSON beside it), with an
#: example file name; every other --out is a folder the command creates or fills.
FILE_OUTS = {("report", None): "report.html", ("explain", "curves"): "curves.png",
             ("explain", "bias"): "bias.png", ("explain", "lad"): "lad.png",
             ("explain", "saliency"): "saliency.png"}


def check_out_option(args) -> None:
    """One check of every command's --out before the command runs: a file where a folder
    is wanted (or the reverse), a path below a file, or a place where nothing can be
    created is a one-line error, and nothing is written (:func:`debiaskit.runs.check_out`)."""
    from . import runs

    if args.command == "train":
        out = _train_out(args)
    elif args.command == "bench":
        if not args.preset:  # only lists the presets
            return
        runs.check_out(args.out)
        out = f"{args.out}/{args.preset}"  # what it writes
    else:
        out = getattr(args, "out", None)
    if out is None:  # explain's default: a file in the run directory
        return
    example = FILE_OUTS.get((args.command, getattr(args, "explain_command", None)))
    runs.check_out(out, folder=example is None, example=example or "")


def cmd_train(args) -> None:
    from .train import RunConfig, train

    method = _train_method(args)
    cfg = RunConfig(
        dataset=args.dataset, data_params=_data_params(args), method=method,
        hparams=_pairs(args.hp, "--hp"), model=args.model,
        model_options=_pairs(args.model_opt, "--model-opt"), epochs=args.epochs,
        batch_size=args.batch_size, augment=args.augment, precision=args.precision,
        force_precision=args.force_precision,
        optimizer=args.optimizer, momentum=args.momentum, schedule=args.schedule,
        lr_step=args.lr_step, lr_gamma=args.lr_gamma, seed=args.seed,
        selection=args.selection,
        heldout_fraction=args.heldout_fraction, patience=args.patience,
        eval_every=args.eval_every, drop_bias_labels=args.no_bias_labels,
        pack=_pack_mode(args), train_subset=args.train_subset, eval_subset=args.eval_subset,
        device=args.device, threads=args.threads, memory_format=args.memory_format,
        data_dir=args.data_dir,
        download=args.download, reuse_stages=args.reuse_stages,
        reweight_from=args.reweight_from)
    out = _train_out(args)
    summary = train(cfg, out)
    print(summary["protocol"])
    print(f"selected epoch {summary['selected_epoch']} of {summary['epochs_trained']} trained")
    for split, m in summary["metrics"].items():
        shown = "  ".join(f"{k} {v:.2f}" for k, v in m.items()
                          if k != "cells" and isinstance(v, float))
        print(f"{split:>14}: {shown}")
    print(f"run directory: {out}")


def cmd_discover(args) -> None:
    import time
    from pathlib import Path

    import torch

    from .explain.discover import (DiscoverConfig, check_config, check_out_dir,
                                   load_folder_input, load_protocol_input, run_discovery)

    started = time.perf_counter()
    if (args.folder is None) == (args.dataset is None):
        raise ConfigError("give either FOLDER (images) or --dataset NAME, not both or neither")
    if args.folder is not None and (args.conflict_ratio is not None or args.data
                                    or args.aligned_ratio is not None or args.train_subset):
        raise ConfigError("--conflict-ratio, --aligned-ratio, --data and --train-subset are "
                          "for --dataset; FOLDER discovers on all its images")
    if args.dataset is not None and (args.labels or args.image_size):
        raise ConfigError("--labels and --image-size are for FOLDER; --dataset takes data "
                          "options (--data KEY=VALUE)")
    cfg = DiscoverConfig(epochs=args.epochs, model=args.model, batch_size=args.batch_size,
                         lr=args.lr, q=args.q, score=args.score, ema=args.ema,
                         cluster_on=args.cluster_on, clusters=args.clusters,
                         threshold=args.threshold, top=args.top, examples=args.examples,
                         seed=args.seed, sih=args.sih, sih_epochs=args.sih_epochs)
    check_config(cfg)
    check_out_dir(args.out, sih=cfg.sih)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.folder is not None:
        inp = load_folder_input(args.folder, args.labels, args.image_size)
    else:
        inp = load_protocol_input(args.dataset, args.data_dir, args.download,
                                  _data_params(args), args.train_subset, args.seed)
    record = run_discovery(inp, cfg, args.out, args.device, started)
    train, biased = record["train"], record["biased_model"]
    print(f"{train['size']} training images, {len(train['classes'])} classes; biased model "
          f"(GCE, {cfg.epochs} epochs): training accuracy {biased['train_accuracy']:.1f} %, "
          f"error set {biased['error_set_size']} images")
    for c in record["cluster_summary"]:
        print(f"cluster {c['cluster']:>2}: {c['size']:>6} images, biased accuracy "
              f"{c['biased_accuracy']:5.1f} %, dominant class {c['dominant_class']} "
              f"({c['dominant_class_share']:.0f} %), {c['top_ranked']} of the top {cfg.top}")
    ev = record["evaluation"]
    if ev is not None:
        print(f"scored with the hidden bias labels ({ev['conflicting']} conflicting): "
              + ", ".join(f"precision@{k} {ev[f'precision_at_{k}']:.1f} %"
                          for k in (100, 600)) + (
                  f", recall@600 {ev['recall_at_600']:.1f} %" if ev["recall_at_600"] is not None
                  else "") + f", cluster NMI with the bias {ev['cluster_nmi_bias']:.3f}")
    if cfg.sih:
        sih, ranked = record["sih"], record["rankings"]["sih"]
        print(f"SiH ({cfg.sih_epochs} epochs, run folder {args.out}/{sih['run']}, "
              f"{record['seconds']['sih']:.1f} s): biased classifier training accuracy "
              f"{ranked['train_accuracy']:.1f} %, error set {ranked['error_set_size']} images"
              + ("" if ranked["evaluation"] is None else ", its ranking's " + ", ".join(
                  f"precision@{k} {ranked['evaluation'][f'precision_at_{k}']:.1f} %"
                  for k in (100, 600)))
              + f"; primary ranking: {record['ranking']}")
    print(f"{record['seconds']['total']:.1f} s; wrote {args.out}/discover.html, "
          "discovery.json, ranking.csv" + (", sih/" if cfg.sih else "")
          + (", sih_bias.png" if cfg.sih and "png" in record["sih"]["visualisation"] else ""))
    if cfg.sih and "error" in record["sih"]["visualisation"]:
        print(f"no SiH bias visualisation: {record['sih']['visualisation']['error']}")
    src = record["input"]
    if src["dataset"] == "folder":
        params = {**src["params"]}
        if src.get("classes_from") == "sub-folders":
            params["csv"] = str((Path(args.out) / "labels.csv").resolve())
        data = " ".join(f"--data {k}={v}" for k, v in params.items() if v is not None
                        and k in ("path", "csv", "image_size"))
        print(f"train from it: debiaskit train --dataset folder {data} --reweight-from "
              f"{args.out}")


def cmd_data_info(args) -> None:
    from .data.protocols import build_data

    bundle = build_data(args.dataset, args.data_dir, args.download, **_data_params(args))
    print(f"protocol {bundle.protocol} {bundle.params}")
    for ds in (bundle.train, *bundle.evals.values()):
        print()
        print(ds.summary())
        print(f"checksum {ds.checksum()}")


def cmd_bench(args) -> None:
    from .bench import PRESETS, run_bench

    if not args.preset:
        for p in PRESETS.values():
            print(f"{p.name:20s} {p.title}")
        return
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    rows = [r.strip() for r in args.rows.split(",")] if args.rows else None
    print(run_bench(args.preset, args.out, args.seeds, args.workers, methods, args.epochs,
                    args.data_dir, ray_address=args.ray, rows=rows, precision=args.precision,
                    hparams=_pairs(args.hp, "--hp"), force_precision=args.force_precision,
                    pack=_pack_mode(args)))


def _pack_mode(args):
    """RunConfig.pack from --pack / --no-pack."""
    return False if args.no_pack else {"auto": "auto", "on": True, "off": False}[args.pack]


def cmd_explain(args) -> None:
    if args.explain_command == "curves":
        from .explain.curves import plot_run_curves

        print(f"wrote {plot_run_curves(args.run_dir, args.out)}")
        return
    if args.explain_command == "lad":
        from .explain.lad import explain_lad_run

        if args.images < 1:
            raise ConfigError(f"--images must be >= 1, got {args.images}")
        png, probed = explain_lad_run(args.run_dir, args.images, args.seed, args.out,
                                      args.data_dir, probe=not args.no_probe)
        print(f"wrote {png}")
        if probed:
            print(f"bias probe ({probed['probe_split']} split, held-out accuracy "
                  f"{probed['probe_heldout_accuracy']:.1f} %): " + "; ".join(
                      f"{k} images NMI(class, bias) {probed[k]['class_bias_nmi']:.3f}, "
                      f"bias kept {probed[k]['bias_kept']:.1f} %, signal probe "
                      f"{probed[k]['signal_accuracy']:.1f} %" for k in ("original", "walked")))
            if not probed["probe_reads_bias"]:
                print("warning: the bias probe cannot read the bias (held-out accuracy not "
                      "halfway from chance to 100 %), so its figures do not show whether the "
                      "walk removed the bias")
            print(f"wrote {png.with_name('lad_bias.json')} and lad_bias.png")
        return
    if args.explain_command == "lad-walk":
        from .explain.walk_diagnostic import diagnose_run, format_table

        if args.images < 1:
            raise ConfigError(f"--images must be >= 1, got {args.images}")
        result = diagnose_run(args.run_dir, _pairs(args.hp, "--hp"), args.out, args.images,
                              args.seed, args.data_dir)
        print(format_table(result))
        print(f"wrote {result['folder']}/walk_diagnostic.json and walk_diagnostic.png")
        return
    if args.explain_command == "saliency":
        from .explain.saliency import explain_saliency_run

        result = explain_saliency_run(args.run_dir, args.images, args.seed, args.split,
                                      args.method, args.out, args.data_dir, args.aupr_images)
        print(f"saliency AUPR ({result['method']}, {result['split']}): {result['aupr']:.2f} % "
              f"over {result['images_scored']} images; wrote {result['png']}")
        if result["next_class_shift"] is not None:
            print(f"next-class probability shift, Original -> Mixed-Next: "
                  f"{result['next_class_shift']:+.2f} points")
        print("macro one-vs-rest AUC: " + ", ".join(
            f"{k} {v:.2f} %" for k, v in result["macro_auc"].items()))
        return
    if args.explain_command == "gradient-ratio":
        from .explain.gradient_ratio import explain_gradient_ratio

        trace = explain_gradient_ratio(
            args.out, dataset=args.dataset, model=args.model, iterations=args.iterations,
            batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, seed=args.seed,
            value=args.value, eval_every=args.eval_every,
            data_dir=args.data_dir, download=args.download)
        tests = ", ".join(f"{k} {v:.2f} %" for k, v in trace.test_accuracy.items())
        print(f"final training accuracy {trace.accuracy[-1]:.2f} %; test accuracy: {tests}; "
              f"GR < 1 from iteration {trace.first_below_one()}; "
              f"wrote {args.out}/gradient_ratio.png")
        return
    from .explain.bias import explain_bias_run

    if args.images < 1:
        raise ConfigError(f"--images must be >= 1, got {args.images}")
    scores = explain_bias_run(args.run_dir, args.images, args.seed, args.split, args.out,
                              args.data_dir, args.threshold)
    for key, value in scores.items():
        print(f"{key:>22}: {value:.4f}" if isinstance(value, float) else f"{key:>22}: {value}")


def cmd_methods(_args) -> None:
    from .methods import METHODS
    from .methods.base import search_of

    for name, cls in sorted(METHODS.items()):
        needs = ", ".join(sorted(cls.requires)) or "nothing beyond targets"
        print(f"{name}  (needs: {needs}; model selection: {cls.default_selection})")
        for key, hp in cls.hparams.items():
            search = search_of(key, hp)
            print(f"    {key} = {hp.default!r}: {hp.doc}"
                  + (" [only to match the authors' code: docs/parity.md]"
                     if hp.authors_code else "")
                  + (f" [sweep: {search.describe()}]" if search else ""))


def cmd_sweep(args) -> None:
    from .bench.runner import default_workers
    from .bench.sweep import run_sweep
    from .train import RunConfig

    base = RunConfig(dataset=args.dataset, data_params=_data_params(args), method=args.method,
                     hparams=_pairs(args.hp, "--hp"), model=args.model,
                     model_options=_pairs(args.model_opt, "--model-opt"), epochs=args.epochs,
                     batch_size=args.batch_size, augment=args.augment,
                     optimizer=args.optimizer, momentum=args.momentum, schedule=args.schedule,
                     lr_step=args.lr_step, lr_gamma=args.lr_gamma, train_subset=args.train_subset,
                     eval_subset=args.eval_subset, data_dir=args.data_dir,
                     download=args.download, threads=1)
    names = [n.strip() for n in args.search.split(",")] if args.search else None
    grid = None
    if args.grid:
        if args.search:
            raise ConfigError("give --grid or --search, not both")
        name, sep, values = args.grid.partition("=")
        if not sep or not name or not values:
            raise ConfigError(f"--grid {args.grid!r} must look like NAME=V1,V2,...")
        grid = {name.replace("-", "_"): [_value(v) for v in values.split(",")]}
    text, _ = run_sweep(base, args.out, args.trials, args.seeds, names, args.rule,
                        args.workers or default_workers(), args.ray, grid=grid)
    print(text)


def cmd_export(args) -> None:
    from .export import TRACKERS, export_tensorboard

    if args.to not in TRACKERS:
        raise unknown_name("tracker", args.to, TRACKERS)
    written = export_tensorboard(args.run_dirs, args.out)
    print(f"wrote {len(written)} TensorBoard log folder(s) into {args.out}; view them with "
          f"tensorboard --logdir {args.out}")


def cmd_report(args) -> None:
    from .htmlreport import write_report

    print(f"wrote {write_report(args.paths, args.out, args.max_runs)}")


COMMANDS = {"train": cmd_train, "data": cmd_data_info, "bench": cmd_bench,
            "explain": cmd_explain, "methods": cmd_methods, "sweep": cmd_sweep,
            "export": cmd_export, "discover": cmd_discover, "report": cmd_report}


def main(argv=None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:
        # the reader of stdout has gone (`debiaskit data info ... | head -1`): stop without
        # a traceback; stdout now points at devnull, so that Python's own flush at exit
        # does not fail on the closed pipe again (exit status 1, as Python's docs do)
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout replaced by an object without a descriptor
            pass
        return 1


def _run(argv) -> int:
    args = build_parser().parse_args(argv)
    code = 0
    try:
        check_out_option(args)
        COMMANDS[args.command](args)
    except DebiaskitError as err:
        print(f"debiaskit: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("debiaskit: interrupted; run the same command again to resume", file=sys.stderr)
        code = 130
    sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
    return code


if __name__ == "__main__":
    sys.exit(main())
