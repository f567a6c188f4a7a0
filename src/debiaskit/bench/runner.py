"""Run a table preset: every (method, row, seed) as its own run directory, in parallel.

Runs already finished are skipped, so an interrupted bench continues where it stopped
(an unfinished run resumes from its checkpoint). Runs go to a local process pool, one
thread per worker by default so the workers do not fight over cores.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

from .. import runs
from ..errors import ConfigError, DebiaskitError
from ..methods import get_method
from ..train import RunConfig, check_config, train
from .presets import TablePreset


@dataclass(frozen=True)
class PlannedRun:
    method: str      # display name in the table
    row: str
    seed: int
    config: RunConfig
    run_dir: Path


def plan(preset: TablePreset, out: Path, seeds: int, methods=None, epochs: int | None = None,
         data_dir=None, threads: int = 1) -> list[PlannedRun]:
    """The runs of ``preset`` for seeds 0..seeds-1 (optionally fewer methods or epochs)."""
    methods = list(methods or preset.default_methods or preset.methods)
    unknown = [m for m in methods if m not in preset.methods]
    if unknown:
        raise ConfigError(f"preset {preset.name} has no method {', '.join(unknown)}; it has: "
                          f"{', '.join(preset.methods)}")
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}")
    out_planned = []
    for display in methods:
        for row in preset.rows:
            for seed in range(seeds):
                data_seed = seed if preset.data_seed is None else preset.data_seed
                cfg = RunConfig(dataset=preset.dataset, method=preset.methods[display],
                                data_params={**row.data_params, "seed": data_seed},
                                seed=seed, data_dir=None if data_dir is None else str(data_dir),
                                threads=threads, progress=False, **preset.run)
                if epochs is not None:
                    cfg = replace(cfg, epochs=epochs)
                check_config(cfg)
                run_dir = Path(out) / display / row.label / f"seed{seed}"
                out_planned.append(PlannedRun(display, row.label, seed, cfg, run_dir))
    return out_planned


def _run_one(cfg: RunConfig, run_dir: str) -> tuple[str, float, str | None]:
    """Worker body: train one run; errors come back as text, never kill the pool."""
    t0 = time.perf_counter()
    try:
        train(cfg, run_dir)
        return run_dir, time.perf_counter() - t0, None
    except DebiaskitError as err:
        return run_dir, time.perf_counter() - t0, str(err)


def execute(planned: list[PlannedRun], workers: int, log=print) -> list[str]:
    """Run what is not finished yet; returns the error messages of failed runs."""
    todo = [p for p in planned if not runs.is_finished(p.run_dir)]
    # longest runs first, so the pool does not end on one long run (LPT scheduling)
    todo.sort(key=lambda p: -p.config.epochs * get_method(p.config.method).relative_cost)
    log(f"{len(planned) - len(todo)} of {len(planned)} runs already finished; "
        f"running {len(todo)} on {workers} worker(s)")
    errors, done = [], 0
    if not todo:
        return errors
    names = {str(p.run_dir): p for p in todo}

    def report(run_dir, seconds, error):
        nonlocal done
        done += 1
        p = names[run_dir]
        if error:
            errors.append(f"{run_dir}: {error}")
            log(f"[{done}/{len(todo)}] {p.method} {p.row} seed {p.seed}: FAILED: {error}")
            return
        summary = runs.read_json(Path(run_dir) / runs.SUMMARY)
        test = summary["metrics"].get("test") or next(iter(summary["metrics"].values()))
        shown = ", ".join(f"{k} {test[k]:.2f}" for k in ("unbiased", "conflicting", "accuracy")
                          if test.get(k) is not None)
        log(f"[{done}/{len(todo)}] {p.method} {p.row} seed {p.seed}: {shown} ({seconds:.0f} s)")

    if workers <= 1:
        for p in todo:
            report(*_run_one(p.config, str(p.run_dir)))
        return errors
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_run_one, p.config, str(p.run_dir)) for p in todo]
        for fut in as_completed(futures):
            report(*fut.result())
    return errors


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))
