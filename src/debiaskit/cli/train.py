"""``debiaskit train``: one method on one dataset into a run directory."""

from __future__ import annotations

from .options import add_pack_options, add_precision_options, add_run_options, run_config

NAME = "train"


def add_parser(sub) -> None:
    from ..train import SELECTION, RunConfig

    cfg = RunConfig()  # every default below is the config's, not repeated here
    t = sub.add_parser(NAME, help="train one method on one dataset into a run directory")
    t.add_argument("--method", help=f"method (default {cfg.method}; discovered with "
                   "--reweight-from; see 'debiaskit methods')")
    add_run_options(t)
    add_precision_options(t)
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
    add_pack_options(t)
    t.add_argument("--no-bias-labels", action="store_true",
                   help="drop the training set's bias labels (as a practitioner would have)")
    t.add_argument("--out", help="run directory (default runs/METHOD-DATASET-seedN)")
    t.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    t.add_argument("--memory-format", default=cfg.memory_format, help="layout of convolution "
                   "weights: channels_last (faster CPU convolutions) or contiguous")
    t.add_argument("--reuse-stages", metavar="RUN_DIR",
                   help="copy cached stages (LAD's VQ-VAE, f, walk) from another run when "
                        "their settings match, e.g. to try another --model on the same walk")
    t.add_argument("--reweight-from", metavar="DISCOVERY", help="train the discovered method "
                   "from a 'debiaskit discover' folder on the same training images (JTT-style "
                   "upsampling of its error set, or --hp mode=groupdro over its clusters)")


def method_of(args) -> str:
    """--method, else ``discovered`` with --reweight-from, else RunConfig's default."""
    from ..train import RunConfig

    return args.method or ("discovered" if args.reweight_from else RunConfig.method)


def out_of(args) -> str:
    """The run directory: --out, else ``runs/METHOD-DATASET-seedN``."""
    return args.out or f"runs/{method_of(args)}-{args.dataset}-seed{args.seed}"


def outputs(args) -> list:
    """The run directory, a folder (see :func:`out_of`)."""
    return [(out_of(args), None)]


def run(args) -> None:
    from ..train import train

    out = out_of(args)
    summary = train(run_config(args, method=method_of(args)), out)
    print(summary["protocol"])
    print(f"selected epoch {summary['selected_epoch']} of {summary['epochs_trained']} trained")
    for split, m in summary["metrics"].items():
        shown = "  ".join(f"{k} {v:.2f}" for k, v in m.items()
                          if k != "cells" and isinstance(v, float))
        print(f"{split:>14}: {shown}")
    print(f"run directory: {out}")
