"""A run assembled before anything is written: data (subsets, held-out split), the method
with its networks and optimisers, checked against each other (:func:`prepare`); and a
finished run loaded back (:func:`load_trained`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import torch

from .. import precision, runs
from ..data.dataset import BiasedDataset, DataBundle
from ..data.infill import mixed_background_view
from ..data.protocols import build_data
from ..errors import ConfigError, DebiaskitError
from ..methods import DataSpec, RunContext, get_method
from ..models import NetworkFactory
from ..precision import PRECISION_AUTO_ENV, PRECISIONS, check_precision
from .config import MEMORY_FORMATS, RunConfig, check_config, config_from_run

@dataclass
class Prepared:
    """Data, splits and method, built and checked, before anything is written."""

    cfg: RunConfig
    bundle: DataBundle
    train: BiasedDataset
    evals: dict[str, BiasedDataset]
    method: object
    #: How ``precision="auto"`` was resolved (``requested``, ``precision``, ``reason``).
    precision_choice: dict = field(default_factory=dict)


def heldout_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_idx, val_idx)``: a seeded random ``fraction`` of ``n`` indices as
    validation, the rest for training, each in order."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    n_val = int(round(n * fraction))
    return order[n_val:].sort().values, order[:n_val].sort().values


def random_subset(ds: BiasedDataset, size: int | None, seed: int) -> BiasedDataset:
    """A seeded random subset of ``size`` samples (for quick experiments), kept in order."""
    if size is None or size >= len(ds):
        return ds
    index = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:size]
    return ds.subset(index.sort().values)


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of uint8 images N x C x H x W, in [0, 1]."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for lo in range(0, len(x), chunk):
        part = x[lo:lo + chunk].to(torch.float64).div_(255.0)
        total += part.sum((0, 2, 3))
        squares += part.pow(2).sum((0, 2, 3))
    n = len(x) * x.shape[2] * x.shape[3]
    mean = total / n
    return mean.tolist(), (squares / n - mean.pow(2)).clamp(min=0).sqrt().tolist()


def normalisation_from_data(options: dict, train: BiasedDataset) -> dict:
    """Model options with ``mean`` / ``std`` given as ``"train"`` replaced by the training
    set's own per-channel statistics (Wang et al. normalise CIFAR-10S that way)."""
    if "train" not in (options.get("mean"), options.get("std")):
        return options
    mean, std = channel_stats(train.x)
    return {**options, **{k: v for k, v in (("mean", mean), ("std", std))
                          if options.get(k) == "train"}}


def prepare(cfg: RunConfig) -> Prepared:
    """Build data and method and check their fit; raises DebiaskitError on bad input."""
    cfg = check_config(cfg)
    method_cls = get_method(cfg.method)
    bundle = build_data(cfg.dataset, cfg.data_dir, cfg.download, **cfg.data_params)
    train = random_subset(bundle.train, cfg.train_subset, cfg.seed)
    evals = {k: random_subset(v, cfg.eval_subset, cfg.seed) for k, v in bundle.evals.items()}
    if cfg.drop_bias_labels:
        train = train.without_bias()
    full_train, kept = train, None  # (a discovery's indices are into the unsplit set)
    if "bias" in method_cls.requires and not train.has_bias:
        raise ConfigError(f"method {cfg.method} needs bias labels and the training data has "
                          "none; use a label-free method (erm, lff) or data with bias labels")
    if "mask" in method_cls.requires and train.mask is None:
        raise ConfigError(f"method {cfg.method} needs foreground masks and {train.name} has "
                          "none; use a dataset with masks")
    if cfg.selection in ("heldout", "worst_group", "early_stop"):
        if cfg.selection == "worst_group" and not train.has_bias:
            raise ConfigError("selection worst_group needs bias labels; use --selection "
                              "heldout (label-free) or last")
        kept, held_out = heldout_indices(len(train), cfg.heldout_fraction, cfg.seed)
        train, val = train.subset(kept, train.name), train.subset(held_out, "val")
        # with foreground masks, the held-out images on other classes' backgrounds too:
        # background reliance measured without bias labels (the sweep rule heldout_mixed)
        mixed = {} if val.mask is None else {"val_mixed": mixed_background_view(val, cfg.seed)}
        evals = {"val": val, **mixed, **evals}
    if not evals:
        raise ConfigError(f"{cfg.dataset} has no evaluation split to report on; give some "
                          "images another split (metadata.csv's split column, e.g. test) or "
                          "use --selection heldout")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    spec = DataSpec(
        input_shape=train.image_shape, num_classes=train.num_classes, num_train=len(train),
        train_targets=train.y.to(device), num_bias=train.num_bias,
        train_bias=None if train.b is None else train.b.to(device))
    make_network = NetworkFactory(cfg.model, train.image_shape, train.num_classes,
                                  normalisation_from_data(dict(cfg.model_options), train))
    cfg, precision_choice = resolve_precision(cfg, make_network, train.image_shape,
                                              train.num_classes)
    torch.manual_seed(cfg.seed)
    method = method_cls(spec, make_network, cfg.hparams).to(device)
    method.begin_run(RunContext(
        epochs=cfg.epochs, pack=cfg.pack,
        discovery=None if cfg.reweight_from is None else (cfg.reweight_from, full_train, kept)))
    method.networks.to(memory_format=MEMORY_FORMATS[cfg.memory_format])  # 4-d weights only
    override = {}
    if cfg.optimizer != "adam":
        override.update(name=cfg.optimizer, momentum=cfg.momentum)
    if cfg.schedule != "none":
        override.update(schedule=cfg.schedule, lr_step=cfg.lr_step, lr_gamma=cfg.lr_gamma)
    if cfg.selection == "early_stop":
        # SiH's code: LR x0.1 after int(P/2) - 1 epochs without improvement
        # (docs/model-selection.md, early_stop)
        override.update(schedule="plateau", lr_step=max(cfg.patience // 2 - 1, 0), lr_gamma=0.1)
    if override:
        method.override_optimizers(**override)
    return Prepared(cfg, bundle, train, evals, method, precision_choice)


def resolve_precision(cfg: RunConfig, make_network, input_shape, num_classes: int
                      ) -> tuple[RunConfig, dict]:
    """``cfg`` with ``precision="auto"`` replaced by the choice of
    :func:`debiaskit.precision.choose_precision` (probing a fresh network from
    ``make_network`` at the run's batch size, once per machine and network:
    :func:`debiaskit.precision.remembered`; ``DEBIASKIT_PRECISION_AUTO`` fixes the choice
    without probing), and the record of the choice."""
    if cfg.precision != "auto":
        return cfg, {"requested": cfg.precision, "precision": cfg.precision,
                     "reason": "requested"}
    pinned = os.environ.get(PRECISION_AUTO_ENV)
    if pinned:
        if pinned not in PRECISIONS:
            raise ConfigError(f"{PRECISION_AUTO_ENV}={pinned}: name fp32 or bf16 (or unset it "
                              "to let --precision auto probe this machine)")
        check_precision(pinned, cfg.device, cfg.force_precision)
        chosen, reason = pinned, f"auto: {pinned}, fixed by {PRECISION_AUTO_ENV}"
    else:
        def probe():
            return precision.probe_seconds(make_network, input_shape, num_classes,
                                           cfg.batch_size, cfg.device,
                                           MEMORY_FORMATS[cfg.memory_format])
        key = {"cpu": precision.cpu_name(), "capability": torch.backends.cpu.get_cpu_capability(),
               "torch": torch.__version__, "device": cfg.device, "model": cfg.model,
               "model_options": cfg.model_options, "input": list(input_shape),
               "classes": num_classes, "batch": cfg.batch_size, "layout": cfg.memory_format}
        chosen, reason = precision.remembered(
            key, lambda: precision.choose_precision("auto", cfg.device, probe))
    return replace(cfg, precision=chosen), {"requested": "auto", "precision": chosen,
                                            "reason": reason}

def load_trained(run_dir, data_dir=None, device: str = "auto") -> Prepared:
    """A finished run's data and method, with the selected networks loaded, in eval mode.

    ``data_dir`` overrides the data directory the run used (e.g. on another machine);
    ``device`` is where the method is built (default ``auto``: a run trained on a GPU
    loads on a CPU-only machine and the other way round; the weights are read onto the
    CPU and copied to it).
    """
    run_dir = runs.require_run_dir(run_dir)
    if not runs.is_finished(run_dir) or not (run_dir / runs.MODEL).exists():
        raise DebiaskitError(f"{run_dir} holds no finished debiaskit run (no summary.json and "
                             "model.pt); train it to the end first")
    prep = prepare(config_from_run(runs.read_json(run_dir / runs.CONFIG), data_dir,
                                   device=device))
    prep.method.networks.load_state_dict(runs.load_torch(run_dir / runs.MODEL)["networks"])
    prep.method.train(False)
    return prep
