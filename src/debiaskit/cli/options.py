"""What the commands share: the one-line-error parser, ``KEY=VALUE`` options, the data
options, the run options of ``train`` and ``sweep`` (their defaults are
:class:`~debiaskit.train.RunConfig`'s, not repeated here), ``--device`` and ``--pack``."""

from __future__ import annotations

import argparse
import dataclasses
import json

from ..errors import ConfigError

#: --data-dir of the explain commands that reload a run's data.
EXPLAIN_DATA_DIR = "data directory, if not the one the run was trained with"
DATA_DIR = "folder with mnist.npz etc. (default: $DEBIASKIT_DATA)"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message):
        self.exit(2, f"debiaskit: error: {message} (see '{self.prog} --help')\n")


def parse_value(text: str):
    """A ``KEY=VALUE`` value: JSON when it parses (numbers, lists, true), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def pairs(items, what: str) -> dict:
    """``KEY=VALUE`` options (``--hp``, ``--data`` ...) as a dict; dashes in keys become
    underscores."""
    out = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} {item!r} must look like key=value")
        out[key.replace("-", "_")] = parse_value(val)
    return out


def data_params(args) -> dict:
    """The protocol parameters of ``--data``, ``--conflict-ratio`` and ``--aligned-ratio``
    (converted to a conflict ratio, rounded to 9 decimals)."""
    params = pairs(args.data, "--data")
    if args.conflict_ratio is not None:
        params["conflict_ratio"] = args.conflict_ratio
    if args.aligned_ratio is not None:
        if "conflict_ratio" in params:
            raise ConfigError("give either --conflict-ratio or --aligned-ratio, not both")
        params["conflict_ratio"] = round(1.0 - args.aligned_ratio, 9)
    return params


def add_data_options(p) -> None:
    p.add_argument("--conflict-ratio", type=float, help="fraction of bias-conflicting training "
                   "samples (the API's convention; SiH's %% / 100)")
    p.add_argument("--aligned-ratio", type=float, help="fraction of bias-aligned samples (LfF's "
                   "'ratio' / 100); converted to --conflict-ratio")
    p.add_argument("--data", action="append", metavar="KEY=VALUE",
                   help="other protocol parameters, e.g. severity=4, sigma=0.01, seed=1")
    p.add_argument("--data-dir", help=DATA_DIR)
    p.add_argument("--download", action="store_true",
                   help="download missing datasets through torchvision")


def add_run_options(p) -> None:
    """The options ``train`` and ``sweep`` share: dataset, data, hyper-parameters, network,
    length, optimiser, schedule and subsets."""
    from ..data.augment import AUGMENTATIONS
    from ..data.protocols import PROTOCOLS
    from ..models import MODELS
    from ..optim import OPTIMIZERS, SCHEDULES
    from ..train import RunConfig

    cfg = RunConfig()
    p.add_argument("--dataset", default=cfg.dataset,
                   help="dataset protocol (see 'debiaskit data info'): " + ", ".join(PROTOCOLS))
    add_data_options(p)
    p.add_argument("--hp", action="append", metavar="KEY=VALUE", help="method hyper-parameter")
    p.add_argument("--model", default=cfg.model, help="network: " + ", ".join(MODELS))
    p.add_argument("--model-opt", action="append", metavar="KEY=VALUE",
                   help="network option, e.g. weights=PATH (resnet18_imagenet), mean=[...]")
    p.add_argument("--epochs", type=int, default=cfg.epochs, help="epochs (the most epochs "
                   "under early stopping; SiH's paper allows 500)")
    p.add_argument("--batch-size", type=int, default=cfg.batch_size,
                   help="training minibatch size")
    p.add_argument("--augment", default=cfg.augment, help="batched training augmentation: "
                   + ", ".join(AUGMENTATIONS))
    p.add_argument("--optimizer", default=cfg.optimizer, help="; ".join(
        f"{k}: {v}" for k, v in OPTIMIZERS.items()))
    p.add_argument("--momentum", type=float, default=cfg.momentum, help="SGD momentum")
    p.add_argument("--schedule", default=cfg.schedule, help="; ".join(
        f"{k}: {v}" for k, v in SCHEDULES.items()))
    p.add_argument("--lr-step", type=int, default=cfg.lr_step, help="epochs between steps "
                   "of the step schedule")
    p.add_argument("--lr-gamma", type=float, default=cfg.lr_gamma,
                   help="factor of the step schedule")
    p.add_argument("--train-subset", type=int, help="train on a seeded random subset of N images")
    p.add_argument("--eval-subset", type=int, help="evaluate on seeded random subsets of N images")
    add_device_option(p)


def add_device_option(p) -> None:
    """``--device``, default RunConfig's ``auto`` (:mod:`debiaskit.device`)."""
    from ..train import RunConfig

    p.add_argument("--device", default=RunConfig.device, help="torch device: auto (the "
                   "default: cuda when a CUDA GPU is available, else cpu), cpu, cuda or "
                   "cuda:N; a device that is not here is an error")


#: ``--pack`` / ``--compile`` choices -> their RunConfig values.
ON_OFF_AUTO = {"auto": "auto", "on": True, "off": False}


def add_pack_options(p, more: str = "the same numbers in every process") -> None:
    p.add_argument("--pack", choices=tuple(ON_OFF_AUTO), default="off",
                   help=f"networks that read the same batch: one by one (off, the default: "
                   f"{more}), first layers as one product (on), or whichever the first batch "
                   "times faster on this CPU (auto); on and auto change results by float "
                   "rounding")
    p.add_argument("--no-pack", action="store_true", help="same as --pack off")


def pack_mode(args):
    """RunConfig.pack from --pack / --no-pack."""
    return False if args.no_pack else ON_OFF_AUTO[args.pack]


def add_precision_options(p, more: str = "") -> None:
    """--precision, --force-precision and --compile (the arithmetic of the training step)."""
    from ..precision import PRECISION_AUTO_ENV
    p.add_argument("--precision", default="auto", help="arithmetic of the training and "
                   "evaluation passes: auto (the default: bf16 where the device computes it "
                   "natively and a short probe of the run's network finds it faster, else "
                   f"fp32; {PRECISION_AUTO_ENV}=fp32|bf16 fixes the choice), fp32 (the "
                   "papers') or bf16 (autocast; slightly different numbers; refused where the "
                   f"hardware has no native bf16){more}")
    p.add_argument("--force-precision", action="store_true",
                   help="run bf16 even without native bf16 (to measure it)")
    p.add_argument("--compile", choices=tuple(ON_OFF_AUTO), default="auto",
                   help="run the training step through torch.compile: auto (the default: on "
                   "for methods whose compiled step is measured and tested, when their "
                   "networks are convolutional), on or off; changes results by float rounding")


def compile_mode(args):
    """RunConfig.compile from --compile."""
    return ON_OFF_AUTO[args.compile]


#: Options whose RunConfig field has another name or needs parsing.
_RENAMED = {"no_bias_labels": "drop_bias_labels"}


def run_config(args, **given):
    """The :class:`~debiaskit.train.RunConfig` of the parsed options: every option named
    like a field (or in ``_RENAMED``), ``--data`` / ``--hp`` / ``--model-opt`` parsed,
    ``--pack`` resolved; ``given`` fields override."""
    from ..train import RunConfig

    names = {f.name for f in dataclasses.fields(RunConfig)}
    values = {_RENAMED.get(k, k): v for k, v in vars(args).items()}
    fields = {k: v for k, v in values.items() if k in names}
    fields.update(data_params=data_params(args), hparams=pairs(args.hp, "--hp"),
                  model_options=pairs(args.model_opt, "--model-opt"))
    if "pack" in fields:
        fields["pack"] = pack_mode(args)
    if "compile" in fields:
        fields["compile"] = compile_mode(args)
    fields.update(given)
    return RunConfig(**fields)
