"""What a run directory states about a run beside its numbers: the protocol paragraph, the
optimiser, peak memory, and what the numbers depend on beyond the run's configuration (the
machine, the library versions, the arithmetic: precision, compilation, packing, seed
packing; :func:`depends_on`), also for each part of a run that was resumed elsewhere
(:func:`add_part`)."""

from __future__ import annotations

import platform

import numpy as np
import torch

from .. import __version__, optim
from ..precision import cpu_name, describe_precision, native_bf16
from .config import SELECTION, RunConfig

def versions() -> dict:
    """The versions of debiaskit, Python and the libraries that compute a run's numbers."""
    import torchvision
    return {"debiaskit": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__}


def machine(device: str = "cpu") -> dict:
    """Where a run computed: the CPU (model name, architecture, the kernel set torch picked:
    float results can differ between kernel sets, e.g. AVX2 and AVX512), native bf16, the
    torch threads (intra-op, whose count can change how sums are split, and inter-op) and
    the device; on a GPU its name and the CUDA and cuDNN versions torch was built with."""
    out = {"cpu": cpu_name(), "architecture": platform.machine(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "native_bf16": native_bf16("cpu"), "threads": torch.get_num_threads(),
           "interop_threads": torch.get_num_interop_threads(), "device": str(device)}
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()
    return out


#: How records name the values of the on / off / auto options (``pack``, ``compile``).
MODE_NAMES = {True: "on", False: "off", "auto": "auto"}

#: summary.json's ``seed_pack`` for a run trained on its own (``debiaskit train``, the
#: Python ``train``); :func:`debiaskit.train.train_seeds` (the bench) states its decision.
SEPARATE_RUN = {"packed": False, "reason": "trained on its own (only debiaskit bench packs "
                "seeds, --pack-seeds)"}


def computed_under(cfg: RunConfig, compile_choice: dict) -> dict:
    """What the epochs one process trains depend on beyond the run's identity: the
    machine, the library versions, whether the training step was compiled and the memory
    layout of convolution weights (all may change between a run's start and its resume)."""
    return {"machine": machine(cfg.device), "versions": versions(),
            "compiled": bool(compile_choice.get("compiled")),
            "memory_format": cfg.memory_format}


def add_part(parts: list, first_epoch: int, current: dict) -> list:
    """A run's ``machines`` record (``[{"from_epoch", "machine", "versions", "compiled",
    "memory_format"}, ...]``, in order) with ``current`` (:func:`computed_under`) as the
    part that trains from epoch ``first_epoch`` (1-based) on, unless the last part already
    computed under ``current``: one entry per distinct stretch, so a run whose list holds
    more than one entry was resumed under other conditions."""
    if parts and {k: v for k, v in parts[-1].items() if k != "from_epoch"} == current:
        return parts
    return [*parts, {"from_epoch": first_epoch, **current}]


def pack_record(pack: bool | str, pack_info: dict | None) -> dict:
    """summary.json's ``pack``: the method's packing decision (:attr:`Method.pack_info`),
    or, for a method that never computed networks on a shared batch, the option with
    ``packed`` False and why."""
    if pack_info is not None:
        return pack_info
    return {"mode": MODE_NAMES[pack], "packed": False,
            "reason": "not applicable: the method computes no two networks on one batch"}


def depends_on(cfg: RunConfig, precision_choice: dict | None, compile_choice: dict,
               pack_info: dict | None, parts: list) -> dict:
    """summary.json's statement of what its numbers depend on beyond the run's
    configuration: ``machine`` and ``versions`` (where it finished), ``machines`` (every
    part of the run, :func:`add_part`), ``precision`` (requested, chosen, why),
    ``compile``, ``pack`` (:func:`pack_record`) and ``seed_pack`` (a separate run's;
    the bench's trainer replaces it with its decision)."""
    return {"machine": machine(cfg.device), "versions": versions(), "machines": parts,
            "precision": precision_choice, "compile": compile_choice,
            "pack": pack_record(cfg.pack, pack_info), "seed_pack": dict(SEPARATE_RUN)}


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
