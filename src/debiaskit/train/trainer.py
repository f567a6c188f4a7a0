"""The training loop: one configuration into one run directory, epoch by epoch, with a
checkpoint after each so that the same command resumes and ends with the same numbers."""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from .. import locks, optim, runs
from ..data.augment import AUGMENTATIONS
from ..data.loader import InMemoryLoader
from ..device import synchronize
from ..errors import DebiaskitError
from ..allocator import keep_freed_buffers
from ..stages import StageStore
from .assemble import Prepared, prepare
from .config import SELECTION, VOLATILE, RunConfig, check_config, same_run
from .evaluation import EVAL_BATCH, arithmetic, evaluate, heldout_objective, selection_score
from .record import (add_part, computed_under, depends_on, machine, peak_rss_mib,
                     protocol_text, versions)


#: ``compile="auto"`` compiles only runs with at least this many training steps, enough to
#: repay a cold compilation by the per-step saving in every case docs/speed.md measured.
COMPILE_MIN_STEPS = 2500


def read_checkpoint(out) -> tuple[dict | None, list[str]]:
    """The training state an unfinished run in ``out`` resumes from: its latest checkpoint
    if whole, else the one before (``checkpoint.prev.pt``, one epoch earlier), else None;
    and the names of the checkpoint files found damaged (:func:`runs.load_verified`)."""
    damaged = []
    for name in (runs.CHECKPOINT, runs.PREVIOUS_CHECKPOINT):
        path = Path(out) / name
        if path.exists():
            try:
                return runs.load_verified(path), damaged
            except runs.Damaged:
                damaged.append(name)
    return None, damaged


def _note(message: str) -> None:
    tqdm.write(f"debiaskit: {message}", file=sys.stderr)


def compiled_update(method):
    """``method.update`` through ``torch.compile``: Dynamo traces the whole step (forward,
    losses, per-sample tables, backward, optimiser steps), breaking the graph where Python
    values leave it (the logged ``.item()`` statistics)."""
    return torch.compile(method.update)


class Trainer:
    """Runs one configuration into one run directory: :meth:`run` opens the directory
    (new, or resumed from its checkpoint), then per epoch trains (:meth:`_train_epoch`),
    evaluates (:meth:`_evaluate_epoch`), steps the schedules, keeps the selected epoch and
    saves the checkpoint (:meth:`_save_epoch`); :meth:`_finish` writes the model and the
    summary."""

    def __init__(self, cfg: RunConfig, out_dir) -> None:
        self.cfg = check_config(cfg)
        self.out = Path(out_dir)
        self.stage_records: dict = {}
        self.precision_choice: dict | None = None  # set when a resumed run keeps its own
        self.compile_choice: dict = {}
        #: entries :meth:`_finish` adds to summary.json (e.g. seed packing's record)
        self.summary_extra: dict = {}
        #: what each part of the run trained under (record.add_part; kept in the checkpoint)
        self.machines: list = []
        self.lock: locks.Lock | None = None
        self._created: Path | None = None  # the outermost folder this run created

    def _lock_out_dir(self) -> None:
        """Create the run directory if needed and lock it (:mod:`debiaskit.locks`): another
        live process training into it is a one-line :class:`~debiaskit.locks.Busy`; the
        lock of a killed one is taken over."""
        missing = self.out.resolve()
        while not missing.parent.exists() and missing.parent != missing:
            missing = missing.parent
        self._created = None if missing.exists() else missing
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise runs._disk_error(self.out, err) from None
        self.lock = locks.hold(self.out, f"run directory {self.out}")
        if self.lock.previous:  # (a record, not a message: a refusal stays one line)
            self.summary_extra.setdefault("recovered", []).append(
                f"took over the lock of process {self.lock.previous.get('pid')} on "
                f"{self.lock.previous.get('host')}, which ended without releasing it")
        runs.remove_temporaries(self.out)  # a killed writer's, never renamed into place

    def release(self) -> None:
        """Give up the run directory's lock; a directory left without a run (the run failed
        before writing its config) is removed again if this run created it, so a refused
        command leaves nothing behind."""
        if self.lock is None or not self.lock.held:
            return
        empty = (not (self.out / runs.CONFIG).exists()
                 and all(p.name == locks.LOCK for p in self.out.iterdir()))
        self.lock.release()
        if empty and self._created is not None:
            folder = self.out.resolve()
            while True:
                try:
                    folder.rmdir()
                except OSError:
                    break
                if folder == self._created:
                    break
                folder = folder.parent

    def _check_out_dir(self) -> dict | None:
        """Lock the run directory, refuse a finished run or a different run's directory;
        return a resumable config (the lock stays held: :meth:`release`)."""
        runs.check_out(self.out)  # a file, a path below a file, an unwritable place
        self._lock_out_dir()
        try:
            return self._check_locked_out_dir()
        except BaseException:
            self.release()
            raise

    def _check_locked_out_dir(self) -> dict | None:
        if runs.is_finished(self.out):
            raise DebiaskitError(f"{self.out} holds a finished run; choose another output "
                                 "directory (results are never overwritten)")
        cfg_path = self.out / runs.CONFIG
        if not cfg_path.exists():
            if any(p.name != locks.LOCK for p in self.out.iterdir()):
                raise DebiaskitError(f"{self.out} is not empty and holds no debiaskit run; "
                                     "choose another output directory")
            return None
        stored = runs.read_json(cfg_path)
        if self.cfg.precision == "auto":
            # a resumed run keeps the precision its first start chose (float32 before auto)
            self.cfg = replace(self.cfg, precision=stored.get("run", {}).get("precision", "fp32"))
            self.precision_choice = {**stored.get("precision_choice", {}),
                                     "kept": "resumed with the precision of its first start"}
        if not same_run(self.cfg, stored):
            raise DebiaskitError(f"{self.out} holds an unfinished run with a different "
                                 "configuration; use another output directory or the same options")
        return stored

    def _open(self, prep: Prepared, resumable: dict | None, schedulers: dict) -> tuple:
        """Write ``config.json`` for a new run, or restore the checkpoint of an unfinished
        one (networks, optimisers, schedules, RNG, the best epoch so far, its metrics up to
        the checkpoint). Returns the first epoch to train and the best epoch so far."""
        cfg, method, train = self.cfg, prep.method, prep.train
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
                "machine": machine(cfg.device),
                "precision_choice": self.precision_choice,
                "data": {"protocol": prep.bundle.protocol, "params": prep.bundle.params,
                         "train_checksum": train.checksum(), "train_size": len(train),
                         "eval_checksums": {k: v.checksum() for k, v in prep.evals.items()}},
            })
        elif (ckpt := self._resume_checkpoint()) is not None:
            method.load_training_state(ckpt["method"])
            for k, sched in schedulers.items():
                sched.load_state_dict(ckpt["schedulers"][k])
            torch.set_rng_state(ckpt["rng"])
            device = torch.device(cfg.device)
            if ckpt.get("cuda_rng") is not None and device.type == "cuda":
                # (a checkpoint written on a CPU has none; one written on a GPU resumed on a
                # CPU needs none)
                torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
            start, best = ckpt["epoch"], ckpt["best"]
            method.restore_packing(ckpt.get("pack"), ckpt.get("pack_info"))
            self.machines = ckpt.get("machines", [])
            runs.rewrite_metrics(self.out, self._metrics_up_to(start))
        else:  # interrupted before the first checkpoint: start over, keep the config
            runs.rewrite_metrics(self.out, [])
        return start, best

    def _resume_checkpoint(self) -> dict | None:
        """The checkpoint to resume from (:func:`read_checkpoint`). A damaged latest one is
        replaced by the one before it (noted on stderr and in summary.json's ``recovered``);
        with no whole checkpoint left but a damaged one: a one-line error saying what to do."""
        ckpt, damaged = read_checkpoint(self.out)
        if damaged and ckpt is None:
            names = " and ".join(damaged)
            raise DebiaskitError(f"{self.out}: {names} damaged (truncated or changed) and no "
                                 f"earlier whole checkpoint; delete {names} to train the run "
                                 "again from its first epoch, or delete the run directory")
        if damaged:
            (self.out / runs.CHECKPOINT).unlink(missing_ok=True)  # the next save replaces it
            note = (f"{runs.CHECKPOINT} was damaged (truncated or changed); resumed from "
                    f"{runs.PREVIOUS_CHECKPOINT}, epoch {ckpt['epoch']}")
            _note(f"{self.out}: {note}")
            self.summary_extra.setdefault("recovered", []).append(note)
        return ckpt

    def _metrics_up_to(self, epoch: int) -> list[dict]:
        """metrics.jsonl's records of epochs 1..``epoch`` (a checkpoint's), checked: one
        whole record per epoch, in order (a cut last line and records after the checkpoint
        are dropped by the caller's rewrite); anything else is a one-line error."""
        records = runs.read_metrics(self.out, up_to_epoch=epoch)
        found = [r.get("epoch") for r in records]
        if found != list(range(1, epoch + 1)):
            raise DebiaskitError(
                f"{self.out / runs.METRICS} holds epochs {found} where its checkpoint needs "
                f"1..{epoch} once each (edited, or written by two processes); delete the run "
                "directory and train the run again")
        return records

    def _training_loader(self, prep: Prepared, device) -> InMemoryLoader:
        """The method's training data (after its cached stages, e.g. LAD's walk) in
        shuffled, augmented minibatches."""
        cfg, method = self.cfg, prep.method
        reuse_from = None if cfg.reuse_stages is None else Path(cfg.reuse_stages) / runs.STAGES
        stages = StageStore(self.out / runs.STAGES, reuse_from)
        train = method.prepare_training_data(prep.train, prep.evals, stages, cfg.seed, device)
        self.stage_records = stages.records
        return InMemoryLoader(train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                              drop_last=method.drop_last, device=device,
                              augment=AUGMENTATIONS[cfg.augment]())

    def _training_step(self, method, steps: int):
        """``method.update``, through ``torch.compile`` when the run's ``compile`` option
        says so (auto: the method declares ``compile_step``, its networks are
        convolutional and the run has at least :data:`COMPILE_MIN_STEPS` training steps to
        repay the compilation); records the decision in :attr:`compile_choice`."""
        requested = self.cfg.compile
        if requested == "auto":
            why_not = None
            if not method.compile_step:
                why_not = f"method {method.name} does not declare a compiled step"
            elif not any(isinstance(m, torch.nn.Conv2d) for m in method.networks.modules()):
                why_not = "no convolutional network"
            elif steps < COMPILE_MIN_STEPS:
                why_not = f"{steps} training steps, fewer than {COMPILE_MIN_STEPS}"
            use = why_not is None
            reason = (f"auto: off, {why_not}" if why_not else
                      f"auto: on, convolutional networks, {steps} training steps")
        else:
            use, reason = bool(requested), "requested"
        self.compile_choice = {"requested": requested, "compiled": use, "reason": reason}
        return compiled_update(method) if use else method.update

    def _train_epoch(self, method, loader: InMemoryLoader, epoch: int) -> dict:
        """One pass over the training minibatches; the mean of each step statistic."""
        pool = method.begin_epoch(epoch, loader)
        method.train(True)
        sums, steps = {}, 0
        for batch in loader.epoch(epoch, pool):  # (augmented in float32)
            with arithmetic(self.cfg):
                step_stats = self._step(batch)
            for k, v in step_stats.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
        method.train(False)
        return {k: v / max(steps, 1) for k, v in sums.items()}

    def _evaluate_epoch(self, method, epoch: int, eval_loaders: dict,
                        predictors: dict) -> tuple[dict, float | None]:
        """Metrics on every split (on evaluated epochs) and, for early stopping, the
        held-out objective."""
        cfg = self.cfg
        evaluated = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
        evals, objective = {}, None
        with arithmetic(cfg):
            if evaluated:
                evals = {f"{prefix}{split}": metrics for split, ld in eval_loaders.items()
                         for prefix, metrics in evaluate(predictors, ld).items()}
            if cfg.selection == "early_stop":
                objective = heldout_objective(method, eval_loaders["val"])
        return evals, objective

    def _save_epoch(self, method, record: dict, best: dict, schedulers: dict) -> None:
        """Append the epoch's record to metrics.jsonl and write the checkpoint."""
        runs.append_metrics(self.out, record)
        runs.save_verified(self.out / runs.CHECKPOINT, {
            "epoch": record["epoch"], "method": method.training_state(),
            "rng": torch.get_rng_state(),
            # the GPU's generator too (e.g. DisEnt's permutations, dropout drawn there)
            "cuda_rng": (torch.cuda.get_rng_state(torch.device(self.cfg.device))
                         if torch.device(self.cfg.device).type == "cuda" else None),
            "best": best, "schedulers": {k: v.state_dict() for k, v in schedulers.items()},
            "machines": self._trained_under(record["epoch"]),
            # a resumed run keeps the packing its first epochs used (pack auto decides once)
            "pack": method.pack, "pack_info": method.pack_info},
            previous=self.out / runs.PREVIOUS_CHECKPOINT)

    def _trained_under(self, epoch: int) -> list:
        """:attr:`machines` with this process's part in it: from ``epoch``, the first epoch
        it trained, unless the part before computed under the same conditions."""
        self.machines = add_part(self.machines, epoch,
                                 computed_under(self.cfg, self.compile_choice))
        return self.machines

    @staticmethod
    def _evaluation(prep: Prepared, device) -> tuple[dict, dict]:
        """Loaders of the evaluation splits and the predictors evaluated on them (the final
        classifier and the method's auxiliary ones)."""
        method = prep.method
        eval_loaders = {k: InMemoryLoader(v, EVAL_BATCH, shuffle=False, device=device)
                        for k, v in prep.evals.items()}
        predictors = {"": method.predict_batch, **{
            f"{k}/": (lambda batch, p=p: p(batch.x))
            for k, p in method.auxiliary_predictors().items()}}
        return eval_loaders, predictors

    def _schedulers(self, method) -> dict:
        """Each network's declared schedule (prepare() applied the run's overrides)."""
        return {k: sched for k, opt in method.optimizers.items()
                if (sched := optim.build_schedule(opt, method.optimizer_specs[k],
                                                  self.cfg.epochs)) is not None}

    def _close_epoch(self, method, epoch: int, stats: dict, train_time: float, evals: dict,
                     objective: float | None, best: dict, schedulers: dict, train,
                     started: float) -> dict:
        """After an epoch's training and evaluation: the per-epoch statistics, the
        schedules' step, the record, the best epoch so far (returned) and the checkpoint."""
        cfg = self.cfg
        stats.update(method.epoch_stats(train))
        for sched in schedulers.values():
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(objective)
            else:
                sched.step()
        record = {"epoch": epoch + 1, "train": stats, "train_seconds": train_time,
                  "seconds": time.perf_counter() - started}
        if evals:
            record["eval"] = evals
        if cfg.selection == "early_stop":
            record["val_objective"] = objective
        if schedulers:
            record["lr"] = {k: o.param_groups[0]["lr"] for k, o in method.optimizers.items()}
        score = selection_score(cfg, evals, objective)
        if score is not None and (best["score"] is None or score > best["score"]):
            best = {"epoch": epoch + 1, "score": score,
                    "state": copy.deepcopy(method.networks.state_dict())}
        self._save_epoch(method, record, best, schedulers)
        return best

    def run(self) -> dict:
        """Train (or resume) the run, holding its directory's lock throughout."""
        keep_freed_buffers()
        resumable = self._check_out_dir()
        try:
            return self._run(resumable)
        finally:
            self.release()

    def _run(self, resumable: dict | None) -> dict:
        prep = prepare(self.cfg)
        self.cfg = prep.cfg  # precision "auto" resolved
        self.precision_choice = self.precision_choice or prep.precision_choice
        cfg, method = self.cfg, prep.method
        device = torch.device(cfg.device)
        eval_loaders, predictors = self._evaluation(prep, device)
        early_stop = cfg.selection == "early_stop"
        schedulers = self._schedulers(method)
        start, best = self._open(prep, resumable, schedulers)
        loader = self._training_loader(prep, device)
        train = loader.dataset
        self._step = self._training_step(method, cfg.epochs * len(loader))
        main = next(iter(prep.evals))

        bar = tqdm(range(start, cfg.epochs), initial=start, total=cfg.epochs, unit="epoch",
                   disable=(not cfg.progress) if cfg.progress is not None else None,
                   desc=f"{cfg.method}")
        for epoch in bar:
            if early_stop and best["epoch"] is not None and epoch - best["epoch"] >= cfg.patience:
                break  # (checked first, so a resumed run that had stopped stops again)
            t0 = time.perf_counter()
            stats = self._train_epoch(method, loader, epoch)
            synchronize(device)  # (a GPU's queued kernels count in the epoch's time)
            train_time = time.perf_counter() - t0
            evals, objective = self._evaluate_epoch(method, epoch, eval_loaders, predictors)
            best = self._close_epoch(method, epoch, stats, train_time, evals, objective, best,
                                     schedulers, train, t0)
            if evals:
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
            **depends_on(cfg, self.precision_choice, self.compile_choice, method.pack_info,
                         self.machines),
        }
        summary.update(self.summary_extra)
        if self.stage_records:
            summary["stages"] = {}
            for name, rec in self.stage_records.items():
                summary["stages"][name] = {"checksum": rec["checksum"], **rec["stats"]}
                if "reused_from" in rec:
                    summary["stages"][name]["reused_from"] = rec["reused_from"]
        runs.write_json(self.out / runs.SUMMARY, summary)
        for name in (runs.CHECKPOINT, runs.PREVIOUS_CHECKPOINT):
            (self.out / name).unlink(missing_ok=True)
        return summary


def train(cfg: RunConfig, out_dir) -> dict:
    """Train ``cfg`` into ``out_dir`` (resuming if it holds the same unfinished run)."""
    return Trainer(cfg, out_dir).run()
