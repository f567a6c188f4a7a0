"""The method contract and the registry (the shape of DomainBed's ``algorithms.py``).

A method is a ``torch.nn.Module`` that owns its networks (``self.networks``) and one
optimiser per network, each declared by name with its own learning rate and schedule
(:class:`~debiaskit.optim.OptimizerSpec`). Its other state (per-sample loss tables, group
weights, counters) is buffers, of the method or of the modules in ``self.tables``, so
``state_dict`` / ``load_state_dict`` carry all of it and a resumed run continues exactly;
:meth:`Method.training_state` adds the optimisers for checkpoints. It is built from a
:class:`DataSpec`, a :class:`~debiaskit.models.NetworkFactory` and hyper-parameters; the
trainer calls
``prepare_training_data`` once (pipeline stages, e.g. LAD's), ``begin_epoch`` before each
epoch, ``update(batch)`` once per batch and ``predict(x)`` to evaluate. A method whose
objective can be computed without side effects implements ``loss(batch, training)``; the
default ``update`` then is one optimiser step on it, and the trainer can early-stop on it
over held-out data. A method declares the supervision it
needs beyond the target (``"bias"`` labels, foreground ``"mask"``); the trainer refuses
data without it, and its ``default_selection`` is the model-selection policy of its paper.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry
from ..models import packed
from ..optim import OptimizerSpec, build_optimizer
from .hparams import HParam, resolve
from .migration import load_pre_module_state

#: Every method by its ``name`` (:func:`register` adds one).
METHODS = Registry("method")


def register(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make a method available by its ``name``."""
    return METHODS.register(cls.name, cls)


def get_method(name: str) -> type["Method"]:
    return METHODS.find(name)


@dataclass(frozen=True)
class RunContext:
    """What a run tells its method beyond data and hyper-parameters
    (:meth:`Method.begin_run`): its length in ``epochs``, the ``pack`` option, and for a
    method that trains from a bias discovery ``(folder, training set before any held-out
    split, indices of it the run trains on or None)``."""

    epochs: int
    pack: bool | str = False
    discovery: tuple | None = None


@dataclass
class DataSpec:
    """What a method may know about its training data before it sees a batch."""

    input_shape: tuple[int, int, int]
    num_classes: int
    num_train: int
    train_targets: torch.Tensor
    num_bias: int = 0
    train_bias: torch.Tensor | None = None


class Method(nn.Module):
    """Base class. Subclasses set ``name``, ``requires``, ``declared_hparams`` (the
    declarations; the values a run resolves are ``self.hp``) and implement
    ``update`` (or ``loss``) and ``predict``; networks are added with :meth:`add_network`,
    other state is buffers (``register_buffer``) or modules with buffers in ``self.tables``."""

    name: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()
    declared_hparams: ClassVar[dict[str, HParam]] = {}
    #: Training cost relative to ERM with the same network (for scheduling bench runs).
    relative_cost: ClassVar[float] = 1.0
    #: Whether ``compile="auto"`` runs this method's training step through torch.compile
    #: when its networks are convolutional (set where benchmarks/step_profile.py measured
    #: it to pay and the compiled step was tested against the eager one).
    compile_step: ClassVar[bool] = False
    #: Model-selection policy (see ``debiaskit.train.SELECTION``) when a run names none.
    default_selection: ClassVar[str] = "last"
    #: Whether networks that read the same batch share packed arithmetic
    #: (:mod:`debiaskit.models.packed`; equal results up to float rounding): True, False, or
    #: "auto" (decided by timing both on the first batch); set by :meth:`begin_run` from
    #: the run's ``pack`` option; :attr:`pack_info` then records the decision.
    pack: bool | str = "auto"
    pack_info: dict | None = None
    #: The run's length in epochs, set by :meth:`begin_run` (for methods whose schedule
    #: follows the run's progress, e.g. GBA's dann lambda); None outside a run.
    total_epochs: int | None = None
    #: Whether several seeds of this method can train as stacked networks in one process
    #: (:mod:`debiaskit.train.seed_pack`): its training step is
    #: :meth:`objective_from_logits` on every network's logits of ``batch.x``, then one
    #: step of every optimiser, with no gradient clipping and no random numbers drawn.
    seed_packable: ClassVar[bool] = False

    def __init__(self, spec: DataSpec, make_network: Callable[[], nn.Module],
                 hparams: dict | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.hp = self.resolve_hparams(hparams or {})
        self.networks = nn.ModuleDict()
        self.tables = nn.ModuleDict()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.optimizer_specs: dict[str, OptimizerSpec] = {}

    def begin_run(self, context: RunContext) -> None:
        """The one call by which a run tells its method what is not data or a
        hyper-parameter (:class:`RunContext`), made once after construction."""
        self.pack = context.pack
        self.total_epochs = context.epochs
        if context.discovery is not None:
            self.attach_discovery(*context.discovery)

    def attach_discovery(self, path, full_train, kept=None) -> None:
        """Read a bias discovery (only methods that require ``"discovery"`` do)."""
        raise ConfigError(f"method {self.name} does not train from a bias discovery")

    def restore_packing(self, pack: bool | str, info: dict | None) -> None:
        """A resumed run keeps the packing its first epochs used (``auto`` decides once)."""
        if info is not None:
            self.pack, self.pack_info = pack, info

    @property
    def drop_last(self) -> bool:
        """Whether the trainer drops each epoch's last incomplete batch (no, unless a method
        says otherwise, as DisEnt does after its authors' loader)."""
        return False

    @classmethod
    def resolve_hparams(cls, given: dict) -> dict:
        """The method's values: its declared defaults overridden by ``given``
        (:func:`~debiaskit.methods.hparams.resolve`)."""
        return resolve(cls.name, cls.declared_hparams, given)

    def add_network(self, role: str, module: nn.Module, **optimizer) -> nn.Module:
        """Register ``module`` as network ``role`` with its own optimiser, declared by the
        :class:`~debiaskit.optim.OptimizerSpec` fields in ``optimizer`` (default: Adam, no
        schedule, learning rate and weight decay from the method's ``lr`` and, if it has
        one, ``weight_decay`` hyper-parameters)."""
        spec = OptimizerSpec(**{"lr": self.hp["lr"],
                                "weight_decay": self.hp.get("weight_decay", 0.0), **optimizer})
        self.networks[role] = module
        self.optimizer_specs[role] = spec
        self.optimizers[role] = build_optimizer(module.parameters(), spec)
        return module

    def check_bias_values(self) -> None:
        """Refuse a bias attribute with fewer than two values (nothing to tell apart), for
        methods that model the bias label itself (GBA's discriminator, per-domain heads)."""
        if self.spec.num_bias < 2:
            raise ConfigError(f"{self.name} needs a bias attribute with at least two values, "
                              f"got {self.spec.num_bias}; use data with bias labels")

    def override_optimizers(self, **fields) -> None:
        """Rebuild every network's optimiser with ``fields`` of its spec replaced (a run's
        ``--optimizer`` / ``--schedule``), keeping each network's learning rate and weight
        decay."""
        for role, spec in self.optimizer_specs.items():
            spec = replace(spec, **fields)
            self.optimizer_specs[role] = spec
            self.optimizers[role] = build_optimizer(self.networks[role].parameters(), spec)

    # --- the contract -------------------------------------------------------------
    def loss(self, batch, training: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
        """The training objective on ``batch`` (a scalar tensor) and statistics to log.

        With ``training=False`` it changes no state (per-sample tables etc.): the trainer
        uses it on held-out data for early stopping.
        """
        raise NotImplementedError

    @classmethod
    def has_objective(cls) -> bool:
        """Whether ``loss`` is implemented (needed for early stopping)."""
        return cls.loss is not Method.loss

    def update(self, batch) -> dict[str, float]:
        """One optimisation step on ``batch``; returns scalar statistics to log.

        Default: one step of every optimiser on ``loss(batch)``, the gradients first
        passed through :meth:`clip_gradients`.
        """
        loss, stats = self.loss(batch)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        self.clip_gradients()
        for opt in self.optimizers.values():
            opt.step()
        return stats

    def objective_from_logits(self, batch, logits: dict[str, torch.Tensor]
                              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training objective on ``batch`` from each network's logits on ``batch.x``
        (by role), with the side effects of a training step (per-sample tables), and the
        statistics to log as detached scalar tensors. Methods marked
        :attr:`seed_packable` implement it and compute their own update through it, so a
        seed-packed step and a separate one share the method's code."""
        raise NotImplementedError

    def clip_gradients(self) -> None:
        """Between the backward pass and the optimiser steps of :meth:`update`: changes the
        gradients in place if the method clips them (default: nothing)."""

    def forward_shared(self, modules, x: torch.Tensor) -> list:
        """``[m(x) for m in modules]`` for networks that read the same batch, packed per
        :attr:`pack` (:func:`debiaskit.models.packed.forward_shared`); with "auto" the first
        call decides (:func:`~debiaskit.models.packed.pack_decision`) and records it in
        :attr:`pack_info`."""
        if self.pack == "auto":
            self.pack_info = {"mode": "auto", **packed.pack_decision(modules, x)}
            self.pack = self.pack_info["packed"]
        elif self.pack_info is None:
            self.pack_info = {"mode": "on" if self.pack else "off",
                              "packed": bool(self.pack) and packed.packable(modules)}
            if self.pack and not self.pack_info["packed"]:  # e.g. two ResNets: one by one
                self.pack_info["reason"] = "the networks cannot be packed"
        return packed.forward_shared(modules, x, self.pack)

    def begin_epoch(self, epoch: int, train_loader) -> torch.Tensor | None:
        """Called before training epoch ``epoch`` (0-based) with the training loader (also
        on resume). Returns the training-set indices this epoch's batches are drawn from
        (repeats upsample, e.g. JTT's error set), or None for every sample once."""
        return None

    def prepare_training_data(self, train, evals: dict, store, seed: int, device):
        """Called once before training (also on resume) with the training set, the
        evaluation splits and the run's :class:`~debiaskit.stages.StageStore`; returns the
        dataset the epochs draw from. Methods whose training data is itself produced by
        training (LAD's decoded latent walks) compute it here as cached stages. Default:
        ``train`` unchanged."""
        return train

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the method's final classifier."""
        raise NotImplementedError

    def predict_batch(self, batch) -> torch.Tensor:
        """Logits on an evaluation batch; methods whose inference may read the batch's bias
        labels (GBA's oracle mask, Domain-Independent's conditional head) override it."""
        return self.predict(batch.x)

    def auxiliary_predictors(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """Other classifiers worth evaluating (e.g. LfF's biased model), by name."""
        return {}

    def epoch_stats(self, train) -> dict[str, float]:
        """Statistics computed once per epoch on the training set (optional)."""
        return {}

    def protocol_note(self) -> str | None:
        """What the method decided from the training data that a report's protocol must
        state (e.g. LAD's walk length chosen by its rule), once the training data are
        prepared; None if nothing."""
        return None

    def training_weights(self, train) -> torch.Tensor | None:
        """The weight the method gives each training sample of ``train`` now (LfF's and
        DisEnt's relative difficulty, SiH's focal weight, JTT's upweighting), for reports'
        histograms; None for methods that weight no samples. Default: ``sample_weights``
        over every index if the method has it."""
        weights = getattr(self, "sample_weights", None)
        if weights is None:
            return None
        device = self.spec.train_targets.device
        return weights(torch.arange(len(train), device=device)).detach().cpu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict(x)

    # --- state ------------------------------------------------------------------------
    def training_state(self) -> dict:
        """Everything a checkpoint needs: the module state (networks, buffers, tables)
        and every optimiser's state."""
        return {"module": self.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}}

    def load_training_state(self, state: dict) -> None:
        """Restore :meth:`training_state` (checkpoints of older versions through
        :mod:`debiaskit.methods.migration`)."""
        if "module" in state:
            self.load_state_dict(state["module"])
        else:
            load_pre_module_state(self, state)
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])


def aligned_conflicting_means(values: torch.Tensor, dataset) -> dict[str, float]:
    """Mean of a per-sample quantity (e.g. a method's weights) over the bias-aligned and
    the bias-conflicting samples of ``dataset`` (reported, never used for training)."""
    values, aligned = values.detach().cpu(), dataset.aligned
    return {"weight_aligned": values[aligned].mean().item(),
            "weight_conflicting": values[~aligned].mean().item() if (~aligned).any()
            else float("nan")}


def adam(module: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The papers' optimiser (Adam, fused where available) over ``module``'s parameters,
    for networks a method trains outside the trainer's loop (LAD's stages, probes)."""
    return build_optimizer(module.parameters(), OptimizerSpec(lr=lr, weight_decay=weight_decay))
