"""Optimisers and learning-rate schedules chosen by name (as timm's optimiser factory).

The papers' default is Adam without a schedule, which every method builds for its own
networks (:func:`debiaskit.methods.base.adam`). A run may name another optimiser and a
schedule (``RunConfig.optimizer`` / ``schedule``): the trainer then rebuilds each of the
method's optimisers over the same parameter groups, keeping each group's learning rate
and weight decay, and steps the schedule once per epoch. Wang et al.'s CIFAR-10S baseline,
for example, is SGD (momentum 0.9) with the learning rate x0.1 every 50 epochs.
"""

from __future__ import annotations

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
}


def check(optimizer: str, schedule: str) -> None:
    if optimizer not in OPTIMIZERS:
        raise unknown_name("optimizer", optimizer, OPTIMIZERS)
    if schedule not in SCHEDULES:
        raise unknown_name("learning-rate schedule", schedule, SCHEDULES)


def rebuild(opt: torch.optim.Optimizer, name: str, momentum: float = 0.9):
    """A fresh optimiser ``name`` over ``opt``'s parameter groups, with each group's
    learning rate and weight decay."""
    groups = [{"params": g["params"], "lr": g["lr"], "weight_decay": g.get("weight_decay", 0.0)}
              for g in opt.param_groups]
    if name == "adam":
        return torch.optim.Adam(groups)
    if name == "sgd":
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum {momentum} is out of range; give a value in [0, 1)")
        return torch.optim.SGD(groups, momentum=momentum)
    raise unknown_name("optimizer", name, OPTIMIZERS)


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
