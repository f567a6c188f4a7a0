"""Run a table preset: every (method, row, seed) as its own run directory, in parallel.

Runs already finished are skipped, so an interrupted bench continues where it stopped
(an unfinished run resumes from its checkpoint). Every run holds its directory's lock while
it trains (:mod:`debiaskit.locks`), so two benches (or sweeps) started on one folder share
the work: a run that another process is training is left to it, waited for at the end and
reported with its numbers, and trained here only if that process ended without finishing
it. With seed packing on for the runs' device
(``pack_seeds``: auto = on a GPU only), the unfinished seeds of one cell are one job, trained
in one process as stacked networks (:func:`debiaskit.train.train_seeds`; methods and models
that cannot pack run seed by seed, and each summary.json says which happened). Runs go to
a local process pool, one thread per worker so the workers do not fight over cores, or,
with ``ray_address``, to a Ray cluster (``ray.init(address=...)``; "local" starts one on
this machine), where every run is a one-CPU task. On a cluster, ``--out`` and the data
directory must be paths that every node sees (a shared filesystem).
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

from .. import locks, runs
from ..data.sources import resolve_data_dir
from ..errors import ConfigError, DebiaskitError
from ..methods import get_method
from ..train import RunConfig, check_config, prepare, same_run, train_seeds
from ..train.seed_pack import cell_key, resolve_seed_pack, why_not_packed
from .presets import TablePreset


@dataclass(frozen=True)
class PlannedRun:
    method: str      # display name in the table
    row: str
    seed: int
    config: RunConfig
    run_dir: Path


def plan(preset: TablePreset, out: Path, seeds: int, methods=None, epochs: int | None = None,
         data_dir=None, threads: int = 1, rows=None,
         precision: str | None = None, hparams: dict | None = None,
         force_precision: bool = False, pack: bool | str = False,
         compile: bool | str = "auto", device: str = "auto") -> list[PlannedRun]:
    """The runs of ``preset`` for seeds 0..seeds-1 (optionally fewer methods, rows or
    epochs, another ``precision`` than the papers' float32, or method hyper-parameters
    ``hparams`` set over the preset's for every chosen method; the report states them),
    each on ``device`` (resolved once here: ``auto`` is the GPU if there is one)."""
    methods = list(methods or preset.default_methods or preset.methods)
    unknown = [m for m in methods if m not in preset.methods]
    if unknown:
        raise ConfigError(f"preset {preset.name} has no method {', '.join(unknown)}; it has: "
                          f"{', '.join(preset.methods)}")
    labels = [r.label for r in preset.rows]
    unknown = [r for r in rows or [] if r not in labels]
    if unknown:
        raise ConfigError(f"preset {preset.name} has no row {', '.join(unknown)}; it has: "
                          f"{', '.join(labels)}")
    chosen_rows = [r for r in preset.rows if not rows or r.label in rows]
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}")
    # absolute paths: worker processes (or Ray nodes) may start in another directory
    data_dir, out = str(resolve_data_dir(data_dir)), Path(out).resolve()
    out_planned = []
    for display in methods:
        for row in chosen_rows:
            for seed in range(seeds):
                data_seed = seed if preset.data_seed is None else preset.data_seed
                # run < preset's method < row's method < command line; hyper-parameters
                # merge key by key at every level
                layers = (preset.run, preset.method_run.get(display, {}),
                          row.method_run.get(display, {}), {"hparams": hparams or {}})
                fields = {k: v for layer in layers for k, v in layer.items()}
                fields["hparams"] = {k: v for layer in layers
                                     for k, v in layer.get("hparams", {}).items()}
                cfg = RunConfig(dataset=row.dataset or preset.dataset,
                                method=preset.methods[display],
                                data_params={**row.data_params, "seed": data_seed},
                                seed=seed, data_dir=data_dir, threads=threads,
                                progress=False, force_precision=force_precision, pack=pack,
                                compile=compile, device=device, **fields)
                if epochs is not None:
                    cfg = replace(cfg, epochs=epochs)
                if precision is not None:
                    cfg = replace(cfg, precision=precision)
                cfg = check_config(cfg)  # fills in the method's own selection policy
                run_dir = out / display / row.label / f"seed{seed}"
                out_planned.append(PlannedRun(display, row.label, seed, cfg, run_dir))
    return out_planned


def resolve_auto_precision(planned: list[PlannedRun], log=print) -> list[PlannedRun]:
    """``planned`` with precision ``auto`` resolved once per network and input (dataset,
    its parameters but the seed, model, its options, batch size, device, memory layout) by
    :func:`debiaskit.train.prepare`'s probe, for the runs that have not started; a started
    run keeps ``auto`` and so resumes in the precision of its first start."""
    chosen: dict = {}
    out = []
    for p in planned:
        cfg = p.config
        if cfg.precision != "auto" or (p.run_dir / runs.CONFIG).exists():
            out.append(p)
            continue
        key = json.dumps([cfg.dataset, {k: v for k, v in cfg.data_params.items() if k != "seed"},
                          cfg.model, cfg.model_options, cfg.batch_size, cfg.device,
                          cfg.memory_format], sort_keys=True, default=str)
        if key not in chosen:
            prep = prepare(cfg)
            chosen[key] = prep.cfg.precision
            log(f"precision for {cfg.model} on {cfg.dataset}: {prep.precision_choice['reason']}")
        out.append(replace(p, config=replace(cfg, precision=chosen[key])))
    return out


def exit_with_parent(parent_pid: int, poll_seconds: float = 1.0) -> None:
    """Pool worker initialiser: exit once the runner ``parent_pid`` is gone. SIGTERM and
    SIGKILL reach only the runner; without this its workers would train on for nobody and
    write into run folders that a restarted bench may be using. (Stage artefacts and
    checkpoints are written atomically, so an exit at any moment loses no result.)"""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


#: A job's result for a run that another process holds (:class:`debiaskit.locks.Busy`).
ELSEWHERE = "in use by another process"


def _run_job(cfgs: list[RunConfig], run_dirs: list[str], pack_seeds: str = "auto",
             reason: str | None = None) -> list[tuple[str, float, str | None]]:
    """Worker body: train one job (:func:`jobs`); each run's result, errors as text (they
    never kill the pool); :data:`ELSEWHERE` for the runs of a job that found one of its
    run directories held by another process."""
    t0 = time.perf_counter()
    try:
        train_seeds(cfgs, run_dirs, pack_seeds, reason=reason)
        error = None
    except locks.Busy:
        error = ELSEWHERE
    except DebiaskitError as err:
        error = str(err)
    return [(d, time.perf_counter() - t0, error) for d in run_dirs]


def jobs(todo: list[PlannedRun], pack_seeds: str = "auto"
         ) -> list[tuple[list[PlannedRun], str | None]]:
    """The runs ``todo`` as jobs ``(runs, reason)``: where seed packing is on for a run's
    device, the seeds of one cell (equal configurations but for the seed) that can pack
    are one job (reason None); every other run is a job of its own, with the reason its
    cell cannot pack if packing is on. Longest jobs first, so the pool does not end on one
    long job (LPT scheduling)."""
    grouped: dict[str, list[PlannedRun]] = {}
    for p in todo:
        key = (cell_key(p.config) if resolve_seed_pack(pack_seeds, p.config.device)
               else str(p.run_dir))
        grouped.setdefault(key, []).append(p)
    out = []
    for runs_of_cell in grouped.values():
        reason = None
        if len(runs_of_cell) > 1:
            reason = why_not_packed([p.config for p in runs_of_cell],
                                    [p.run_dir for p in runs_of_cell])
        if reason is None:
            out.append((runs_of_cell, None))
        else:
            out.extend(([p], reason) for p in runs_of_cell)
    return sorted(out, key=lambda job: -sum(
        p.config.epochs * get_method(p.config.method).relative_cost for p in job[0]))


def _ray_results(todo: list[tuple], address: str):
    """Yield each run's result as its Ray task (one job's ``_run_job`` arguments) finishes."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the Ray backend needs ray: pip install 'debiaskit[ray]'") from None
    ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
             log_to_driver=False, include_dashboard=False)
    # a task whose worker dies (a killed process, a lost node) runs again, and its runs
    # resume from their checkpoints
    task = ray.remote(num_cpus=1, max_retries=3)(_run_job)
    pending = [task.remote(*job) for job in todo]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield from ray.get(done[0])


def execute(planned: list[PlannedRun], workers: int, log=print,
            ray_address: str | None = None, pack_seeds: str = "auto") -> list[str]:
    """Run what is not finished yet, as :func:`jobs` (``pack_seeds``: auto, on or off);
    returns the error messages of failed runs. A finished
    run directory that holds another configuration (other epochs, hyper-parameters, ...)
    is an error, never silently reported as this table's run."""
    finished = {p.run_dir for p in planned if runs.is_finished(p.run_dir)}
    other = [p for p in planned if p.run_dir in finished
             and not same_run(p.config, runs.read_json(p.run_dir / runs.CONFIG))]
    if other:
        raise ConfigError(f"{other[0].run_dir} holds a finished run with another configuration "
                          f"({len(other)} such run(s)); use another --out for these options")
    todo = [p for p in planned if p.run_dir not in finished]
    work = jobs(todo, pack_seeds)
    packed = sum(len(job) for job, _ in work if len(job) > 1)
    where = f"Ray cluster {ray_address}" if ray_address else f"{workers} worker(s)"
    log(f"{len(planned) - len(todo)} of {len(planned)} runs already finished; "
        f"running {len(todo)} on {where}"
        + (f" ({packed} of them seed-packed)" if packed else ""))
    errors, done, started = [], 0, time.perf_counter()
    if not todo:
        return errors
    names = {str(p.run_dir): p for p in todo}

    def report(run_dir, seconds, error, by_other=False):
        nonlocal done
        done += 1
        p = names[run_dir]
        if error:
            errors.append(f"{run_dir}: {error}")
            log(f"[{done}/{len(names)}] {p.method} {p.row} seed {p.seed}: FAILED: {error}")
            return
        summary = runs.read_json(Path(run_dir) / runs.SUMMARY)
        metrics = summary["metrics"]  # the test split, else one with bias labels
        test = metrics.get("test") or next((m for m in metrics.values() if "unbiased" in m),
                                           next(iter(metrics.values())))
        shown = ", ".join(f"{k} {test[k]:.2f}" for k in ("unbiased", "conflicting", "accuracy")
                          if test.get(k) is not None)
        how = "finished by another process" if by_other else f"{seconds:.0f} s"
        log(f"[{done}/{len(names)}] {p.method} {p.row} seed {p.seed}: {shown} ({how})")

    while todo:
        elsewhere = []

        def collect(run_dir, seconds, error):
            if error == ELSEWHERE:
                elsewhere.append(names[run_dir])
            else:
                report(run_dir, seconds, error)

        _dispatch(work, pack_seeds, workers, ray_address, collect)
        todo = []
        if elsewhere:
            log(f"{len(elsewhere)} run(s) held by another process; waiting for them")
        for p in elsewhere:
            locks.wait_free(p.run_dir)
            if not runs.is_finished(p.run_dir):
                todo.append(p)  # its process ended without finishing it: train it here
            elif not same_run(p.config, runs.read_json(p.run_dir / runs.CONFIG)):
                report(str(p.run_dir), 0.0, "another process finished it with another "
                       "configuration; use another --out for these options")
            else:
                report(str(p.run_dir), 0.0, None, by_other=True)
        work = jobs(todo, pack_seeds)
    log(f"{len(names)} runs finished in {(time.perf_counter() - started) / 60:.1f} min "
        f"(wall clock) on {where}")
    return errors


def _dispatch(work: list[tuple[list[PlannedRun], str | None]], pack_seeds: str, workers: int,
              ray_address: str | None, collect) -> None:
    """Run the jobs ``work`` (:func:`jobs`) in this process, a local pool or on Ray,
    passing each run's ``(run_dir, seconds, error)`` to ``collect`` as it finishes."""
    args = [([p.config for p in job], [str(p.run_dir) for p in job], pack_seeds, reason)
            for job, reason in work]
    if ray_address:
        for result in _ray_results(args, ray_address):
            collect(*result)
    elif workers <= 1:
        for job in args:
            for result in _run_job(*job):
                collect(*result)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                 initializer=exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(_run_job, *job) for job in args]
            for fut in as_completed(futures):
                for result in fut.result():
                    collect(*result)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))
