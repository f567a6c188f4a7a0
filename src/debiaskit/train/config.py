"""A run's configuration (:class:`RunConfig`), its checks, the model-selection policies, and
the rebuilding of a configuration from a run directory's ``config.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .. import optim, runs
from ..device import resolve_device
from ..data.augment import AUGMENTATIONS
from ..errors import ConfigError, unknown_name
from ..methods import get_method
from ..models.packed import PACK_MODES
from ..precision import check_precision

#: Model-selection policies (docs/model-selection.md): name -> what it is, for every report.
SELECTION = {
    "last": "last epoch (no selection; the papers' default)",
    "heldout": "best plain accuracy on a held-out split of the biased training set (label-free)",
    "worst_group": "best worst-group accuracy on a bias-labelled held-out validation split",
    "early_stop": "lowest training objective on a held-out split of the biased training set, "
                  "stopping after `patience` epochs without improvement, learning rate x0.1 "
                  "on plateaus, best epoch restored (SiH's label-free protocol)",
    "oracle": "TEST-SET ORACLE: best unbiased accuracy on the test split (for comparison with "
              "papers that did this; not a valid model-selection protocol)",
}

#: Config fields that do not change the result (left out of the resume identity check).
VOLATILE = ("device", "threads", "memory_format", "progress", "data_dir", "download",
            "reuse_stages", "eval_every", "force_precision", "pack", "compile")

#: ``RunConfig.compile`` values: on, off, or auto (:data:`debiaskit.methods.base.Method.compile_step`).
COMPILE_MODES = (True, False, "auto")

#: Memory layouts of convolutional networks' weights (``RunConfig.memory_format``).
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


@dataclass
class RunConfig:
    """Everything that defines a run. Defaults are LfF's Colored MNIST setting.

    ``selection`` None means the method's own policy (``Method.default_selection``).
    ``patience`` is the early-stopping patience (SiH: 2 for the MLP, 20 for ResNet-18); the
    learning rate drops by 10x after ``patience // 2 - 1`` epochs without improvement, as
    SiH's code does. ``train_subset`` / ``eval_subset`` train and evaluate on seeded random
    subsets (quick experiments and tests; the papers use the full sets).
    ``drop_bias_labels`` hides the training set's bias labels, as a practitioner's data
    would be. ``augment`` names a batched training augmentation
    (``debiaskit.data.augment.AUGMENTATIONS``). ``reuse_stages`` names another run's
    directory whose cached stages (LAD's VQ-VAE, f, walk) are copied in when their keys
    match (:class:`debiaskit.stages.StageStore`); it does not change the result.
    ``precision`` (:data:`debiaskit.precision.CHOICES`) is the arithmetic of the final
    classifier's training and evaluation passes: ``fp32`` (the papers'), ``bf16`` autocast,
    or ``auto`` (the default), which :func:`~debiaskit.train.prepare` resolves per run to
    bf16 where the device computes it natively and a probe of the run's network finds it
    faster, float32 otherwise (:func:`debiaskit.precision.choose_precision`); the resolved
    precision is part of the run's identity, and a resumed run keeps its own. Method stages
    computed before training (LAD's VQ-VAE, f, walk) always run in float32. bf16 is refused
    on hardware without native bf16 unless ``force_precision``.
    ``compile`` runs the training step (``Method.update``: forward, losses, per-sample
    tables, backward, optimiser steps) through ``torch.compile``: True, False, or "auto"
    (default: on for methods that declare ``compile_step`` when their networks are
    convolutional; the decision is in summary.json's ``compile``). It changes results by
    float rounding only, so it is not part of the identity.
    ``memory_format`` is the layout of convolution weights (and so of their activations):
    ``channels_last`` (default) runs CPU convolutions faster than ``contiguous``; like
    ``threads`` it changes only the rounding of float sums, so it is not part of the run's
    identity.
    ``device``: ``auto`` (default: ``cuda`` when a CUDA GPU is available, else ``cpu``),
    ``cpu``, ``cuda`` or ``cuda:N`` (:mod:`debiaskit.device`); :func:`check_config` resolves
    it, so ``config.json`` records the device used. Not part of the run's identity: a run
    started on a GPU resumes on a CPU and the other way round.
    ``optimizer`` / ``schedule`` (:mod:`debiaskit.optim`) replace the methods' Adam with
    another optimiser over the same parameter groups (``momentum`` for SGD) and add a
    per-epoch learning-rate schedule (``lr_step``, ``lr_gamma`` for ``step``); the default,
    Adam without a schedule, is the papers'.
    ``eval_every`` evaluates every N-th epoch and the last one only (selection "last"
    alone: the other policies choose among every epoch); it changes what metrics.jsonl
    records, not what is trained, so it is not part of the run's identity.
    ``pack`` computes the first layers of networks that read the same batch (LfF's two
    MLPs, DisEnt's two encoders) as one matrix product (:mod:`debiaskit.models.packed`):
    True, False, or "auto" (default: the first batch times both and keeps the faster; the
    decision is in summary.json's ``pack``); results equal an unpacked run's up to float
    rounding, so it is not part of the identity.
    ``reweight_from`` names the folder of a ``debiaskit discover`` result on the same
    training images, which the ``discovered`` method trains from (and needs).
    """

    dataset: str = "colored_mnist"
    data_params: dict = field(default_factory=dict)
    method: str = "erm"
    hparams: dict = field(default_factory=dict)
    model: str = "mlp"
    model_options: dict = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 256
    augment: str = "none"
    precision: str = "auto"
    optimizer: str = "adam"
    momentum: float = 0.9
    schedule: str = "none"
    lr_step: int = 50
    lr_gamma: float = 0.1
    seed: int = 0
    selection: str | None = None
    heldout_fraction: float = 0.1
    patience: int = 2
    drop_bias_labels: bool = False
    train_subset: int | None = None
    eval_subset: int | None = None
    device: str = "auto"
    threads: int | None = None
    memory_format: str = "channels_last"
    progress: bool | None = None
    data_dir: str | None = None
    download: bool = False
    reuse_stages: str | None = None
    eval_every: int = 1
    force_precision: bool = False
    # off by default: "auto" decides by timing, so two processes may pack differently and
    # differ by float rounding (docs/cli.md)
    pack: bool | str = False
    reweight_from: str | None = None
    compile: bool | str = "auto"

    def identity(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in VOLATILE}


def check_config(cfg: RunConfig) -> RunConfig:
    """Range checks that need no data; returns ``cfg`` with the method's default selection
    filled in and its device resolved (``auto`` -> ``cuda`` or ``cpu``)."""
    cfg = replace(cfg, device=resolve_device(cfg.device))  # a device not here: ConfigError
    method_cls = get_method(cfg.method)
    method_cls.resolve_hparams(cfg.hparams)  # unknown names, values out of range
    if cfg.selection is None:
        cfg = replace(cfg, selection=method_cls.default_selection)
    if cfg.selection not in SELECTION:
        raise unknown_name("model-selection policy", cfg.selection, SELECTION)
    if cfg.augment not in AUGMENTATIONS:
        raise unknown_name("augmentation", cfg.augment, AUGMENTATIONS)
    check_precision(cfg.precision, cfg.device, cfg.force_precision)
    if cfg.compile not in COMPILE_MODES:
        raise ConfigError(f"compile must be true, false or auto, got {cfg.compile!r}")
    if cfg.pack not in PACK_MODES:
        raise ConfigError(f"pack must be true, false or auto, got {cfg.pack!r}")
    if cfg.memory_format not in MEMORY_FORMATS:
        raise unknown_name("memory format", cfg.memory_format, MEMORY_FORMATS)
    optim.check(cfg.optimizer, cfg.schedule)
    if cfg.schedule != "none" and cfg.selection == "early_stop":
        raise ConfigError("early_stop selection lowers the learning rate on plateaus itself; "
                          "use --schedule none with it")
    if cfg.schedule == "plateau" and cfg.selection != "early_stop":
        raise ConfigError("the plateau schedule steps on the held-out objective, which only "
                          "--selection early_stop computes (and then applies itself); use "
                          "--schedule none, step or cosine")
    if cfg.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {cfg.batch_size}")
    for key in ("train_subset", "eval_subset"):
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {getattr(cfg, key)}")
    if not 0.0 < cfg.heldout_fraction < 1.0:
        raise ConfigError(f"held-out fraction must be in (0, 1), got {cfg.heldout_fraction}")
    if cfg.patience < 1:
        raise ConfigError(f"patience must be >= 1, got {cfg.patience}")
    if cfg.eval_every < 1:
        raise ConfigError(f"eval_every must be >= 1, got {cfg.eval_every}")
    if cfg.eval_every > 1 and cfg.selection != "last":
        raise ConfigError(f"--eval-every {cfg.eval_every} needs --selection last (selection "
                          f"{cfg.selection} chooses among every epoch's evaluation)")
    if cfg.reuse_stages is not None and not (Path(cfg.reuse_stages) / runs.STAGES).is_dir():
        raise ConfigError(f"--reuse-stages {cfg.reuse_stages}: no stages folder there; name "
                          "the directory of a run that has cached stages (e.g. a LAD run)")
    if "discovery" in method_cls.requires and cfg.reweight_from is None:
        raise ConfigError(f"method {cfg.method} trains from a bias discovery; give "
                          "--reweight-from DIR (the --out folder of 'debiaskit discover')")
    if cfg.reweight_from is not None and "discovery" not in method_cls.requires:
        raise ConfigError(f"--reweight-from is read by the discovered method, not "
                          f"{cfg.method}; use --method discovered (or leave --method out)")
    if cfg.selection == "early_stop" and not method_cls.has_objective():
        raise ConfigError(f"method {cfg.method} has no objective to early-stop on; use "
                          "--selection last or heldout")
    return cfg

def same_run(cfg: RunConfig, stored: dict) -> bool:
    """Whether a run directory's stored ``config.json`` describes the run ``cfg`` (fields
    added to RunConfig since it was written count as their defaults; precision ``auto``
    matches the precision the stored run resolved it to)."""
    current = runs.json_safe(cfg.identity())
    stored_run = stored.get("run", {})
    if current["precision"] == "auto":  # resolved when the stored run started
        current["precision"] = stored_run.get("precision", "fp32")
    # a field added since the run was written counts as its default; runs from before
    # precision had a default of auto trained in float32
    defaults = {**runs.json_safe(RunConfig().identity()), "precision": "fp32"}
    return runs.with_defaults(stored_run, current, defaults) == current


def config_from_run(stored: dict, data_dir=None, hparams: dict | None = None,
                    device: str = "auto") -> RunConfig:
    """The :class:`RunConfig` of a run directory's ``config.json`` content ``stored``: its
    run fields, the download setting it ran with, ``data_dir`` if given (the data may live
    elsewhere now) else its own, ``hparams`` over its hyper-parameters, and ``device``
    (default ``auto``: this machine's GPU if it has one, whatever the run trained on; the
    device is not part of a run's identity)."""
    runtime = stored.get("runtime", {})
    run = dict(stored["run"])
    if hparams:
        run["hparams"] = {**run.get("hparams", {}), **hparams}
    return RunConfig(**run, device=device,
                     download=runtime.get("download", False),
                     data_dir=data_dir or runtime.get("data_dir"))
