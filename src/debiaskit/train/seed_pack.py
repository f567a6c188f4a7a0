"""Seed packing: several seeds of one run configuration trained in one process, their
networks as stacked weights (:class:`~debiaskit.models.stacked.StackedMLP`).

:func:`train_seeds` trains runs that differ only in their seed (and their data seed), each
into its own run directory. Packed (:class:`SeedPackTrainer`), every seed keeps what a
separate run of it has: the initial weights its seed draws, its batch order, its per-sample
tables (its own method object computes its objective,
:meth:`~debiaskit.methods.base.Method.objective_from_logits`), its optimisers, its
evaluation and model selection. Only the arithmetic is shared: each network role's G
copies are computed on the G seeds' batches with one batched product per layer, and each
seed's optimiser steps that seed's slices of the stacks in place. After every epoch the
slices are copied into each seed's networks and its optimisers' state into the seed's own
optimisers, which are then evaluated and checkpointed as a separate run's are, so reports,
bench tables, ``load_trained`` and resume read a packed seed's directory like any other
(it can even be resumed alone by :func:`~debiaskit.train.train`). Its numbers equal a
separate run's: bit for bit on the CPU this was measured on, up to float rounding where a
batched product rounds otherwise than a single one. The run's ``pack`` option (LfF's two
networks as one product) does not apply to a packed step.

What packs (:func:`why_not_packed`): two or more seeds of a method marked
``seed_packable`` (ERM, LfF) on the MLP, without early stopping or a learning-rate
schedule, interrupted (if at all) at the same epoch. Anything else runs seed by seed and
summary.json's ``seed_pack`` says why. ``mode`` "auto" packs on a GPU only: on a CPU the
batched products are no faster than separate ones (benchmarks/pack_seeds.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .. import optim, runs
from ..allocator import keep_freed_buffers
from ..device import resolve_device
from ..errors import ConfigError
from ..methods import get_method
from ..models.stacked import StackedMLP, stackable
from .assemble import Prepared, prepare
from .config import RunConfig, check_config
from .evaluation import arithmetic
from .record import MODE_NAMES
from .trainer import Trainer, read_checkpoint

#: ``--pack-seeds`` values: auto (on where the run's device is a GPU), on, off.
SEED_PACK_MODES = ("auto", "on", "off")
_RUNTIME_ONLY = ("seed", "progress")


def device_type(device: str) -> str:
    """"cuda" or "cpu" (etc.) for a run's ``device`` ("auto" as
    :func:`debiaskit.device.resolve_device` resolves it)."""
    if device == "auto":
        device = resolve_device(device)
    try:
        return torch.device(device).type
    except RuntimeError as err:
        raise ConfigError(f"unknown device {device!r} ({err})") from None


def _check_mode(mode: str) -> None:
    if mode not in SEED_PACK_MODES:
        raise ConfigError(f"--pack-seeds must be one of {', '.join(SEED_PACK_MODES)}, "
                          f"got {mode!r}")


def resolve_seed_pack(mode: str, device: str) -> bool:
    """Whether seeds are packed under ``mode`` on ``device`` ("auto": only on a GPU)."""
    _check_mode(mode)
    return device_type(device) == "cuda" if mode == "auto" else mode == "on"


def cell_key(cfg: RunConfig) -> str:
    """The configuration without its seed (and data seed): runs with equal keys are seeds
    of one cell and may be packed together."""
    fields = {k: v for k, v in asdict(cfg).items() if k not in _RUNTIME_ONLY}
    fields["data_params"] = {k: v for k, v in cfg.data_params.items() if k != "seed"}
    return json.dumps(runs.json_safe(fields), sort_keys=True)


def _checkpoint_epoch(out: Path) -> int:
    """The epoch an unfinished run directory resumes from (0 if none)."""
    ckpt, _ = read_checkpoint(out)
    return 0 if ckpt is None else ckpt["epoch"]


def why_not_packed(cfgs: list[RunConfig], out_dirs) -> str | None:
    """None if the runs ``cfgs`` (into ``out_dirs``) can train packed, else why not."""
    if len(cfgs) < 2:
        return "a single seed"
    if len({cell_key(c) for c in cfgs}) > 1:
        return "the runs differ in more than their seeds"
    cfg, method = cfgs[0], get_method(cfgs[0].method)
    if not method.seed_packable:
        return f"method {cfg.method} has no seed-packed step (packable: ERM, LfF)"
    if cfg.model != "mlp":
        return f"only the MLP is stacked, not {cfg.model}"
    if cfg.selection == "early_stop":
        return "early stopping ends each seed at its own epoch"
    if cfg.schedule != "none":
        return "learning-rate schedules are not stacked"
    if len({_checkpoint_epoch(d) for d in out_dirs}) > 1:
        return "the seeds were interrupted after different epochs"
    return None


def _data_reason(preps: list[Prepared]) -> str | None:
    """Why the prepared runs cannot be stacked (training sets or networks that differ)."""
    if len({(len(p.train), tuple(p.train.image_shape)) for p in preps}) > 1:
        return "the seeds' training sets differ in size or image shape"
    for role in preps[0].method.networks:
        reason = stackable([p.method.networks[role] for p in preps])
        if reason is not None:
            return reason
    return None


@dataclass
class _Seed:
    """One seed of a packed job: its trainer (run directory), prepared run, loaders,
    predictors, RNG state, best epoch so far."""

    trainer: Trainer
    prep: Prepared
    loader: object
    eval_loaders: dict
    predictors: dict
    rng: torch.Tensor
    start: int
    best: dict

    @property
    def method(self):
        return self.prep.method


class SeedPackTrainer:
    """Trains the seeds ``cfgs`` (one cell: :func:`why_not_packed` is None) into
    ``out_dirs`` together: :meth:`run` returns their summaries, or None when the prepared
    data or networks turn out not to stack (``reason`` then says why; nothing was written)."""

    def __init__(self, cfgs: list[RunConfig], out_dirs, mode: str = "on") -> None:
        self.trainers = [Trainer(c, d) for c, d in zip(cfgs, out_dirs)]
        self.mode = mode
        self.reason: str | None = None

    def _prepare(self) -> list[_Seed] | None:
        """Every seed's prepared run, opened (new or resumed) in its directory."""
        resumable = [t._check_out_dir() for t in self.trainers]  # (locked: run releases)
        preps, rngs = [], []
        for t in self.trainers:
            prep = prepare(t.cfg)
            t.cfg = prep.cfg  # precision "auto" resolved
            t.precision_choice = t.precision_choice or prep.precision_choice
            t.compile_choice = {"requested": t.cfg.compile, "compiled": False,
                                "reason": "seed packing trains its own stacked step"}
            prep.method.pack_info = {"mode": MODE_NAMES[t.cfg.pack], "packed": False,
                                     "reason": "seed packing trains its own stacked step"}
            preps.append(prep)
            rngs.append(torch.get_rng_state())  # what a separate run's RNG holds now
        self.reason = _data_reason(preps)
        if self.reason is not None:
            return None
        device = torch.device(self.trainers[0].cfg.device)
        seeds = []
        for t, prep, stored, rng in zip(self.trainers, preps, resumable, rngs):
            eval_loaders, predictors = t._evaluation(prep, device)
            torch.set_rng_state(rng)
            start, best = t._open(prep, stored, t._schedulers(prep.method))
            seeds.append(_Seed(t, prep, t._training_loader(prep, device), eval_loaders,
                               predictors, torch.get_rng_state(), start, best))
        return seeds

    def run(self) -> list[dict] | None:
        """Train the seeds packed, holding every seed's run-directory lock throughout."""
        try:
            return self._run()
        finally:
            for t in self.trainers:
                t.release()

    def _run(self) -> list[dict] | None:
        keep_freed_buffers()
        seeds = self._prepare()
        if seeds is None:
            return None
        cfg, size = self.trainers[0].cfg, len(seeds)
        roles = list(seeds[0].method.networks)
        stacks = {r: StackedMLP([s.method.networks[r] for s in seeds]) for r in roles}
        # one optimiser per seed and network over its slices of the stacks, restored from
        # the seed's own (a resumed run's checkpoint)
        views = [{r: stacks[r].slices(g) for r in roles} for g in range(size)]
        opts = [{r: optim.build_optimizer(views[g][r], s.method.optimizer_specs[r])
                 for r in roles} for g, s in enumerate(seeds)]
        for s, own in zip(seeds, opts):
            for r in roles:
                own[r].load_state_dict(s.method.optimizers[r].state_dict())
        start = seeds[0].start
        bar = tqdm(range(start, cfg.epochs), initial=start, total=cfg.epochs, unit="epoch",
                   disable=(not cfg.progress) if cfg.progress is not None else None,
                   desc=f"{cfg.method} x{size} seeds")
        for epoch in bar:
            t0 = time.perf_counter()
            stats = self._train_epoch(seeds, stacks, views, opts, epoch)
            share = (time.perf_counter() - t0) / size  # each seed's share of the epoch
            for r in roles:
                stacks[r].write_to([s.method.networks[r] for s in seeds])
            for g, s in enumerate(seeds):
                started = time.perf_counter() - share
                for r in roles:
                    s.method.optimizers[r].load_state_dict(opts[g][r].state_dict())
                evals, objective = s.trainer._evaluate_epoch(s.method, epoch, s.eval_loaders,
                                                             s.predictors)
                torch.set_rng_state(s.rng)  # the checkpoint keeps the seed's own RNG state
                s.best = s.trainer._close_epoch(s.method, epoch, stats[g], share, evals,
                                                objective, s.best, {}, s.loader.dataset,
                                                started)
        bar.close()
        record = {"mode": self.mode, "packed": True, "seeds": size,
                  "with_seeds": [t.cfg.seed for t in self.trainers],
                  "train_seconds": "each epoch's packed training time divided by the seeds"}
        out = []
        for s in seeds:
            s.trainer.summary_extra["seed_pack"] = record
            out.append(s.trainer._finish(s.prep, s.best))
        return out

    def _train_epoch(self, seeds: list[_Seed], stacks: dict, views: list[dict],
                     opts: list[dict], epoch: int) -> list[dict]:
        """One pass over every seed's own batches, in step; each seed's mean statistics."""
        cfg = self.trainers[0].cfg
        pools = [s.method.begin_epoch(epoch, s.loader) for s in seeds]
        for s in seeds:
            s.method.train(True)
        sums, steps = [{} for _ in seeds], 0
        for batches in zip(*(s.loader.epoch(epoch, p) for s, p in zip(seeds, pools)),
                           strict=True):
            with arithmetic(cfg):
                x = torch.stack([b.x for b in batches])
                logits = {r: stack(x) for r, stack in stacks.items()}
                total, step_stats = 0.0, []
                for g, (s, batch) in enumerate(zip(seeds, batches)):
                    loss, st = s.method.objective_from_logits(
                        batch, {r: out[g] for r, out in logits.items()})
                    total = total + loss  # each seed's loss reaches only its own slices
                    step_stats.append(st)
                for stack in stacks.values():
                    stack.zero_grad(set_to_none=True)
                total.backward()
                for g, own in enumerate(opts):
                    for r, opt in own.items():
                        stacks[r].pass_gradients(g, views[g][r])
                        opt.step()
            for acc, st in zip(sums, step_stats):  # in float64, as a separate run's floats
                for k, v in st.items():
                    acc[k] = acc.get(k, 0.0) + v.detach().double()
            steps += 1
        for s in seeds:
            s.method.train(False)
        return [{k: (v / max(steps, 1)).item() for k, v in acc.items()} for acc in sums]


def _not_packing(mode: str, device: str) -> str | None:
    """Why ``mode`` does not pack seeds on ``device``; None if it does."""
    if resolve_seed_pack(mode, device):
        return None
    if mode == "auto":
        return f"auto packs seeds on a GPU only; this run's device is {device}"
    return "--pack-seeds off"


def train_seeds(cfgs: list[RunConfig], out_dirs, mode: str = "auto", log=None,
                reason: str | None = None) -> list[dict]:
    """Train the runs ``cfgs`` into ``out_dirs`` (one each; unfinished ones resume), packed
    per ``mode`` (:data:`SEED_PACK_MODES`) when they are seeds of one cell that can pack
    (:func:`why_not_packed`), else one after another. ``reason``, if given, is why a
    caller found that they cannot pack (it trains them one by one, e.g. the bench runner
    splitting such a cell over its workers). Every summary.json records the decision as
    ``seed_pack``. Returns the summaries in the order of ``cfgs``."""
    _check_mode(mode)
    cfgs = [check_config(c) for c in cfgs]
    out_dirs = [Path(d) for d in out_dirs]
    if not cfgs:
        return []
    if reason is None:
        reason = _not_packing(mode, cfgs[0].device)
    if reason is None:
        reason = why_not_packed(cfgs, out_dirs)
    if reason is None:
        job = SeedPackTrainer(cfgs, out_dirs, mode)
        result = job.run()
        if result is not None:
            return result
        reason = job.reason
    if log is not None and mode != "off" and len(cfgs) > 1:
        log(f"seeds {', '.join(str(c.seed) for c in cfgs)} of {cfgs[0].method} run one by "
            f"one: {reason}")
    out = []
    for cfg, d in zip(cfgs, out_dirs):
        trainer = Trainer(cfg, d)
        trainer.summary_extra = {"seed_pack": {"mode": mode, "packed": False,
                                               "reason": reason}}
        out.append(trainer.run())
    return out
