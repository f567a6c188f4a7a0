"""Optimisers and learning-rate schedules chosen by name (as timm's optimiser factory).

Every network of a method declares its own :class:`OptimizerSpec` (optimiser by name, its
learning rate, weight decay, momentum, and a schedule by name), so that e.g. a
discriminator can have its own learning rate; the papers' default is Adam without a
schedule. A run may override the optimiser and the schedule of every network at once
(``RunConfig.optimizer`` / ``schedule``), keeping each network's learning rate and weight
decay; the trainer steps each network's schedule once per epoch. Wang et al.'s CIFAR-10S
baseline, for example, is SGD (momentum 0.9) with the learning rate x0.1 every 50 epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ConfigError, unknown_name

#: optimiser name -> what it is (for help texts and reports)
OPTIMIZERS = {
    "adam": "Adam (the papers' default; fused where this torch build has it)",
    "sgd": "SGD with momentum (RunConfig.momentum) and weight decay, not Nesterov",
}
#: schedule name -> what it does once per epoch
SCHEDULES = {
    "none": "constant learning rate (the papers' default)",
    "step": "learning rate x lr_gamma every lr_step epochs",
    "cosine": "cosine annealing from the learning rate to 0 over the run's epochs",
    "plateau": "learning rate x lr_gamma after lr_step epochs without improvement of the "
               "held-out objective (SiH's early-stopping runs)",
}


@dataclass(frozen=True)
class OptimizerSpec:
    """One network's optimiser and per-epoch learning-rate schedule, declared by name."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9       # SGD only
    schedule: str = "none"
    lr_step: int = 50           # step: epochs per decay; plateau: patience in epochs
    lr_gamma: float = 0.1

    def describe(self) -> str:
        text = "Adam" if self.name == "adam" else (
            f"SGD (momentum {self.momentum})" if self.name == "sgd" else self.name)
        if self.schedule == "step":
            text += f", lr x{self.lr_gamma} every {self.lr_step} epochs"
        elif self.schedule == "plateau":
            text += f", lr x{self.lr_gamma} after {self.lr_step} epochs without improvement"
        elif self.schedule != "none":
            text += f", {self.schedule} schedule"
        return text


def build_optimizer(params, spec: OptimizerSpec) -> torch.optim.Optimizer:
    """The optimiser ``spec`` over ``params``. Adam is the fused implementation (one kernel
    for all parameters, the same update rule) where this torch build has it, since
    per-parameter Adam dominates small networks' steps."""
    check(spec.name, spec.schedule)
    params = list(params)
    if spec.name == "adam":
        try:
            return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay,
                                    fused=True)
        except (RuntimeError, TypeError):
            return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if not 0.0 <= spec.momentum < 1.0:
        raise ConfigError(f"momentum {spec.momentum} is out of range; give a value in [0, 1)")
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum,
                           weight_decay=spec.weight_decay)


def build_schedule(opt: torch.optim.Optimizer, spec: OptimizerSpec, epochs: int):
    """The per-epoch schedule of ``spec`` over ``opt`` (None for ``none``)."""
    if spec.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=spec.lr_gamma, patience=spec.lr_step, threshold=0.0)
    return schedule(opt, spec.schedule, epochs, spec.lr_step, spec.lr_gamma)


def check(optimizer: str, schedule: str) -> None:
    if optimizer not in OPTIMIZERS:
        raise unknown_name("optimizer", optimizer, OPTIMIZERS)
    if schedule not in SCHEDULES:
        raise unknown_name("learning-rate schedule", schedule, SCHEDULES)


def schedule(opt: torch.optim.Optimizer, name: str, epochs: int, step: int = 50,
             gamma: float = 0.1):
    """The per-epoch learning-rate schedule ``name`` of ``opt`` (None for ``none``)."""
    if name == "none":
        return None
    if name == "step":
        if step < 1 or not 0.0 < gamma <= 1.0:
            raise ConfigError(f"step schedule needs lr_step >= 1 and 0 < lr_gamma <= 1, got "
                              f"{step} and {gamma}")
        return torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=gamma)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    raise unknown_name("learning-rate schedule", name, SCHEDULES)
