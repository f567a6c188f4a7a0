"""What a run directory states about a run beside its numbers: the protocol paragraph, the
optimiser, library versions, the machine, peak memory."""

from __future__ import annotations

import platform

import numpy as np
import torch

from .. import __version__, optim
from ..precision import cpu_name, describe_precision, native_bf16
from .config import SELECTION, RunConfig

def versions() -> dict:
    import torchvision
    return {"debiaskit": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__}


def machine(device: str = "cpu") -> dict:
    """Where a run computed: the CPU (model name, architecture, the kernel set torch picked:
    float results can differ between kernel sets, e.g. AVX2 and AVX512), native bf16, the
    torch threads and the device."""
    out = {"cpu": cpu_name(), "architecture": platform.machine(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "native_bf16": native_bf16("cpu"), "threads": torch.get_num_threads(),
           "device": str(device)}
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


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
