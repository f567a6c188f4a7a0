"""The trainer: epochs, evaluation on every split, model selection, run directory, resume.

``train(RunConfig(...), out_dir)`` builds the data and the method, checks that the data
carries the supervision the method needs, and trains. Everything is validated before the
run directory is created, so bad input writes nothing. After every epoch it evaluates each
split (the final classifier and any auxiliary one, e.g. LfF's biased model), appends the
record to ``metrics.jsonl`` and writes ``checkpoint.pt`` atomically; started again with the
same configuration, it resumes from that checkpoint and ends with the same numbers.
With ``early_stop`` selection it also computes the method's objective on a held-out split
after every epoch, lowers the learning rate on plateaus and stops when it stops improving.
"""

from __future__ import annotations

import copy
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import __version__, optim, runs
from .speed import keep_freed_buffers
from .data.augment import AUGMENTATIONS
from .data.dataset import BiasedDataset, DataBundle
from .data.infill import mixed_background_view
from .data.loader import InMemoryLoader
from .data.protocols import build_data
from .errors import ConfigError, DebiaskitError, unknown_name
from .methods import DataSpec, get_method
from .metrics import classification_metrics
from .models import NetworkFactory
from .models.packed import PACK_MODES
from .precision import check_precision, describe_precision
from .precision import arithmetic as precision_context
from .stages import StageStore

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


#: Evaluation batch size (large enough to amortise per-batch overhead, small enough for cache).
EVAL_BATCH = 1024

#: Config fields that do not change the result (left out of the resume identity check).
VOLATILE = ("device", "threads", "memory_format", "progress", "data_dir", "download",
            "reuse_stages", "eval_every", "force_precision", "pack")

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
    ``precision`` (:data:`debiaskit.precision.PRECISIONS`) is the arithmetic of the final classifier's training and
    evaluation passes; the papers train in float32 (the default). Method stages computed
    before training (LAD's VQ-VAE, f, walk) always run in float32. bf16 is refused on
    hardware without native bf16 unless ``force_precision`` (:mod:`debiaskit.precision`).
    ``memory_format`` is the layout of convolution weights (and so of their activations):
    ``channels_last`` (default) runs CPU convolutions faster than ``contiguous``; like
    ``threads`` it changes only the rounding of float sums, so it is not part of the run's
    identity.
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
    precision: str = "fp32"
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
    device: str = "cpu"
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

    def identity(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in VOLATILE}


def check_config(cfg: RunConfig) -> RunConfig:
    """Range checks that need no data; returns ``cfg`` with the method's default selection
    filled in."""
    method_cls = get_method(cfg.method)
    method_cls.resolve_hparams(cfg.hparams)  # unknown names, values out of range
    if cfg.selection is None:
        cfg = replace(cfg, selection=method_cls.default_selection)
    if cfg.selection not in SELECTION:
        raise unknown_name("model-selection policy", cfg.selection, SELECTION)
    if cfg.augment not in AUGMENTATIONS:
        raise unknown_name("augmentation", cfg.augment, AUGMENTATIONS)
    check_precision(cfg.precision, cfg.device, cfg.force_precision)
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


@dataclass
class Prepared:
    """Data, splits and method, built and checked, before anything is written."""

    cfg: RunConfig
    bundle: DataBundle
    train: BiasedDataset
    evals: dict[str, BiasedDataset]
    method: object


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
    method_cls.resolve_hparams(cfg.hparams)
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
    torch.manual_seed(cfg.seed)
    make_network = NetworkFactory(cfg.model, train.image_shape, train.num_classes,
                                  normalisation_from_data(dict(cfg.model_options), train))
    method = method_cls(spec, make_network, cfg.hparams).to(device)
    method.pack = cfg.pack
    if cfg.reweight_from is not None:
        method.attach_discovery(cfg.reweight_from, full_train, kept)
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
    return Prepared(cfg, bundle, train, evals, method)


def arithmetic(cfg: RunConfig) -> torch.autocast:
    """The autocast context of ``cfg.precision`` (:func:`debiaskit.precision.arithmetic`)."""
    return precision_context(cfg.precision, cfg.device)


@torch.no_grad()
def evaluate(predictors: dict, loader: InMemoryLoader) -> dict:
    """Metrics of every predictor (name -> logits function of a batch) on ``loader``'s
    whole dataset, in one pass over the data. (``no_grad``, not ``inference_mode``: GBA's
    test-time mask takes a gradient inside ``enable_grad``.)"""
    preds = {name: [] for name in predictors}
    for batch in loader.epoch(0):
        for name, predict in predictors.items():
            confidence, pred = predict(batch).float().softmax(1).max(1)
            preds[name].append((pred, confidence))
    ds = loader.dataset
    return {name: classification_metrics(torch.cat([p for p, _ in out]), ds.y, ds.b,
                                         ds.num_classes, ds.num_bias, ds.aligned_bias,
                                         torch.cat([c for _, c in out]))
            for name, out in preds.items()}


@torch.no_grad()
def heldout_objective(method, loader: InMemoryLoader) -> float:
    """Mean of the method's training objective over ``loader``'s data, changing no state."""
    total = 0.0
    for batch in loader.epoch(0):
        total += method.loss(batch, training=False)[0].item() * len(batch.y)
    return total / len(loader.dataset)


def selection_score(cfg: RunConfig, evals: dict, objective: float | None) -> float | None:
    """The number the policy maximises for this epoch (None for "last")."""
    if cfg.selection == "last":
        return None
    if cfg.selection == "early_stop":
        return -objective
    if cfg.selection == "heldout":
        return evals["val"]["accuracy"]
    if cfg.selection == "worst_group":
        return evals["val"]["worst_group"]
    test = next(k for k in evals if k not in ("val", "val_mixed"))
    return evals[test].get("unbiased", evals[test]["accuracy"])


def versions() -> dict:
    import torchvision
    return {"debiaskit": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__}


def peak_rss_mib() -> float | None:
    """The process's peak resident memory so far, in MiB (None where unknown). In a bench
    worker it covers the worker's earlier runs too."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if platform.system() == "Darwin" else 1 << 10), 1)


def describe_optimiser(cfg: RunConfig) -> str:
    """How a report states the run's optimiser and its schedule (the papers': Adam, none)."""
    return optim.OptimizerSpec(name=cfg.optimizer, momentum=cfg.momentum,
                               schedule=cfg.schedule, lr_step=cfg.lr_step,
                               lr_gamma=cfg.lr_gamma).describe()


def protocol_text(cfg: RunConfig, evals: dict) -> str:
    """The one-paragraph protocol statement every report carries."""
    epochs = (f"up to {cfg.epochs} epochs (patience {cfg.patience})"
              if cfg.selection == "early_stop" else f"{cfg.epochs} epochs")
    optimiser = describe_optimiser(cfg)
    images = "; ".join(f"{k}: {v.meta['test_images']}" for k, v in evals.items()
                       if v.meta.get("test_images"))
    return (f"{cfg.method} on {cfg.dataset} {cfg.data_params}, model {cfg.model}, "
            f"{epochs}, batch {cfg.batch_size}, augmentation {cfg.augment}, {optimiser}, "
            f"{describe_precision(cfg.precision)}, seed {cfg.seed}; "
            f"model selection: "
            f"{SELECTION[cfg.selection]}; evaluated on: {', '.join(evals)}"
            + (f" ({images})" if images else ""))


class Trainer:
    """Runs one configuration into one run directory."""

    def __init__(self, cfg: RunConfig, out_dir) -> None:
        self.cfg = check_config(cfg)
        self.out = Path(out_dir)
        self.stage_records: dict = {}

    def _check_out_dir(self) -> dict | None:
        """Refuse a finished run or a different run's directory; return a resumable config."""
        runs.check_out(self.out)  # a file, a path below a file, an unwritable place
        if runs.is_finished(self.out):
            raise DebiaskitError(f"{self.out} holds a finished run; choose another output "
                                 "directory (results are never overwritten)")
        cfg_path = self.out / runs.CONFIG
        if not cfg_path.exists():
            if self.out.exists() and any(self.out.iterdir()):
                raise DebiaskitError(f"{self.out} is not empty and holds no debiaskit run; "
                                     "choose another output directory")
            return None
        stored = runs.read_json(cfg_path)
        if not same_run(self.cfg, stored):
            raise DebiaskitError(f"{self.out} holds an unfinished run with a different "
                                 "configuration; use another output directory or the same options")
        return stored

    def run(self) -> dict:
        keep_freed_buffers()
        resumable = self._check_out_dir()
        prep = prepare(self.cfg)
        cfg, method, train = self.cfg, prep.method, prep.train
        device = torch.device(cfg.device)
        eval_loaders = {k: InMemoryLoader(v, EVAL_BATCH, shuffle=False, device=device)
                        for k, v in prep.evals.items()}
        predictors = {"": method.predict_batch, **{
            f"{k}/": (lambda batch, p=p: p(batch.x))
            for k, p in method.auxiliary_predictors().items()}}
        method.total_epochs = cfg.epochs

        early_stop = cfg.selection == "early_stop"
        # each network's declared schedule (prepare() applied the run's overrides)
        schedulers = {k: sched for k, opt in method.optimizers.items()
                      if (sched := optim.build_schedule(opt, method.optimizer_specs[k],
                                                        cfg.epochs)) is not None}
        start, best = 0, {"epoch": None, "score": None, "state": None}
        stored_data = (resumable or {}).get("data", {})
        if stored_data.get("train_checksum") not in (None, train.checksum()):
            raise DebiaskitError(
                f"{self.out} holds an unfinished run on other training data (checksum "
                f"{stored_data['train_checksum'][:12]}..., now {train.checksum()[:12]}...: the "
                "data or the code that generates it changed); use another output directory")
        if resumable is None:
            self.out.mkdir(parents=True, exist_ok=True)
            runs.write_json(self.out / runs.CONFIG, {
                "run": cfg.identity(), "runtime": {k: getattr(cfg, k) for k in VOLATILE},
                "versions": versions(), "protocol": protocol_text(cfg, prep.evals),
                "data": {"protocol": prep.bundle.protocol, "params": prep.bundle.params,
                         "train_checksum": train.checksum(), "train_size": len(train),
                         "eval_checksums": {k: v.checksum() for k, v in prep.evals.items()}},
            })
        elif (self.out / runs.CHECKPOINT).exists():
            ckpt = runs.load_torch(self.out / runs.CHECKPOINT)
            method.load_training_state(ckpt["method"])
            for k, sched in schedulers.items():
                sched.load_state_dict(ckpt["schedulers"][k])
            torch.set_rng_state(ckpt["rng"])
            start, best = ckpt["epoch"], ckpt["best"]
            if ckpt.get("pack_info") is not None:
                method.pack, method.pack_info = ckpt["pack"], ckpt["pack_info"]
            runs.rewrite_metrics(self.out, runs.read_metrics(self.out, up_to_epoch=start))
        else:  # interrupted before the first checkpoint: start over, keep the config
            runs.rewrite_metrics(self.out, [])
        reuse_from = None if cfg.reuse_stages is None else Path(cfg.reuse_stages) / runs.STAGES
        stages = StageStore(self.out / runs.STAGES, reuse_from)
        train = method.prepare_training_data(train, prep.evals, stages, cfg.seed, device)
        loader = InMemoryLoader(train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                drop_last=method.drop_last, device=device,
                                augment=AUGMENTATIONS[cfg.augment]())
        self.stage_records = stages.records

        bar = tqdm(range(start, cfg.epochs), initial=start, total=cfg.epochs, unit="epoch",
                   disable=(not cfg.progress) if cfg.progress is not None else None,
                   desc=f"{cfg.method}")
        for epoch in bar:
            if early_stop and best["epoch"] is not None and epoch - best["epoch"] >= cfg.patience:
                break  # (checked first, so a resumed run that had stopped stops again)
            t0 = time.perf_counter()
            pool = method.begin_epoch(epoch, loader)
            method.train(True)
            sums, steps = {}, 0
            for batch in loader.epoch(epoch, pool):  # (augmented in float32)
                with arithmetic(cfg):
                    step_stats = method.update(batch)
                for k, v in step_stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                steps += 1
            train_time = time.perf_counter() - t0
            method.train(False)
            evaluated = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
            evals, objective = {}, None
            with arithmetic(cfg):
                if evaluated:
                    evals = {f"{prefix}{split}": metrics for split, ld in eval_loaders.items()
                             for prefix, metrics in evaluate(predictors, ld).items()}
                if early_stop:
                    objective = heldout_objective(method, eval_loaders["val"])
            stats = {k: v / max(steps, 1) for k, v in sums.items()}
            stats.update(method.epoch_stats(train))
            for sched in schedulers.values():
                if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    sched.step(objective)
                else:
                    sched.step()
            record = {"epoch": epoch + 1, "train": stats, "train_seconds": train_time,
                      "seconds": time.perf_counter() - t0}
            if evaluated:
                record["eval"] = evals
            if early_stop:
                record["val_objective"] = objective
            if schedulers:
                record["lr"] = {k: o.param_groups[0]["lr"] for k, o in method.optimizers.items()}
            score = selection_score(cfg, evals, objective)
            if score is not None and (best["score"] is None or score > best["score"]):
                best = {"epoch": epoch + 1, "score": score,
                        "state": copy.deepcopy(method.networks.state_dict())}
            runs.append_metrics(self.out, record)
            runs.save_torch(self.out / runs.CHECKPOINT, {
                "epoch": epoch + 1, "method": method.training_state(),
                "rng": torch.get_rng_state(),
                "best": best, "schedulers": {k: v.state_dict() for k, v in schedulers.items()},
                # a resumed run keeps the packing its first epochs used (pack auto decides once)
                "pack": method.pack, "pack_info": method.pack_info})
            main = next(iter(prep.evals))
            if evaluated:
                bar.set_postfix({k: f"{evals[main][k]:.1f}" for k in
                                 ("accuracy", "aligned", "conflicting") if k in evals[main]})
        bar.close()
        return self._finish(prep, best)

    def _finish(self, prep: Prepared, best: dict) -> dict:
        cfg, method = self.cfg, prep.method
        records = runs.read_metrics(self.out)
        if cfg.selection == "last":
            selected = records[-1]
            networks = method.networks.state_dict()
        else:
            selected = next(r for r in records if r["epoch"] == best["epoch"])
            networks = best["state"]
        runs.save_torch(self.out / runs.MODEL, {"method": cfg.method, "model": cfg.model,
                                                "networks": networks})
        weights = method.training_weights(prep.train)
        if weights is not None:
            runs.save_torch(self.out / runs.WEIGHTS, {
                "weights": weights, "y": prep.train.y,
                "aligned": prep.train.aligned if prep.train.has_bias else None})
        note = method.protocol_note()
        summary = {
            "protocol": protocol_text(cfg, prep.evals) + (f"; {note}" if note else ""),
            "selection": cfg.selection,
            "selection_description": SELECTION[cfg.selection],
            "selected_epoch": selected["epoch"], "epochs": cfg.epochs,
            "epochs_trained": records[-1]["epoch"], "seed": cfg.seed,
            "metrics": selected["eval"], "last_epoch_metrics": records[-1]["eval"],
            "train_seconds": sum(r["train_seconds"] for r in records),
            "peak_rss_mib": peak_rss_mib(),
        }
        if method.pack_info is not None:
            summary["pack"] = method.pack_info
        if self.stage_records:
            summary["stages"] = {}
            for name, rec in self.stage_records.items():
                summary["stages"][name] = {"checksum": rec["checksum"], **rec["stats"]}
                if "reused_from" in rec:
                    summary["stages"][name]["reused_from"] = rec["reused_from"]
        runs.write_json(self.out / runs.SUMMARY, summary)
        (self.out / runs.CHECKPOINT).unlink(missing_ok=True)
        return summary


def same_run(cfg: RunConfig, stored: dict) -> bool:
    """Whether a run directory's stored ``config.json`` describes the run ``cfg`` (fields
    added to RunConfig since it was written count as their defaults)."""
    current = runs.json_safe(cfg.identity())
    return runs.with_defaults(stored.get("run", {}), current,
                              runs.json_safe(RunConfig().identity())) == current


def load_trained(run_dir, data_dir=None) -> Prepared:
    """A finished run's data and method, with the selected networks loaded, in eval mode.

    ``data_dir`` overrides the data directory the run used (e.g. on another machine).
    """
    run_dir = runs.require_run_dir(run_dir)
    if not runs.is_finished(run_dir) or not (run_dir / runs.MODEL).exists():
        raise DebiaskitError(f"{run_dir} holds no finished debiaskit run (no summary.json and "
                             "model.pt); train it to the end first")
    stored = runs.read_json(run_dir / runs.CONFIG)
    runtime = stored.get("runtime", {})
    cfg = RunConfig(**stored["run"], device=runtime.get("device", "cpu"),
                    download=runtime.get("download", False),
                    data_dir=data_dir or runtime.get("data_dir"))
    prep = prepare(cfg)
    prep.method.networks.load_state_dict(runs.load_torch(run_dir / runs.MODEL)["networks"])
    prep.method.train(False)
    return prep


def train(cfg: RunConfig, out_dir) -> dict:
    """Train ``cfg`` into ``out_dir`` (resuming if it holds the same unfinished run)."""
    return Trainer(cfg, out_dir).run()
