"""Benchmark runner: reproduce a paper's table next to its published numbers."""

from __future__ import annotations

from pathlib import Path

from .. import runs
from ..errors import ConfigError
from .presets import PRESETS, TablePreset, get_preset
from .tables import write_report
from .runner import default_workers, execute, plan, resolve_auto_precision


def run_bench(name: str, out, seeds: int | None = None, workers: int | None = None,
              methods=None, epochs: int | None = None, data_dir=None, log=print,
              ray_address: str | None = None, rows=None, precision: str | None = None,
              hparams: dict | None = None, force_precision: bool = False,
              pack: bool | str = False, compile: bool | str = "auto",
              report_only: bool = False, device: str = "auto",
              pack_seeds: str = "auto") -> str:
    """Run preset ``name`` into ``out/name`` (skipping finished runs); return the report.

    ``ray_address`` sends the runs to a Ray cluster instead of a local process pool;
    ``methods`` and ``rows`` (row labels) restrict the table; ``precision`` "bf16" trains
    with autocast (refused without native bf16 unless ``force_precision``; the report says
    so); ``hparams`` sets
    method hyper-parameters over the preset's for every chosen method (stated in the report);
    ``pack`` (True, False or "auto") packs networks that read the same batch (stated too);
    ``compile`` (True, False or "auto") is every run's ``RunConfig.compile``. Precision
    ``auto`` is chosen once, before dispatch, for every run that has not started
    (:func:`~debiaskit.bench.runner.resolve_auto_precision`), so a table is uniform.
    Every run computes on ``device`` (default ``auto``: the GPU if there is one).
    ``pack_seeds`` ("auto": on a GPU only, "on", "off") trains the seeds of a cell in one
    process as stacked networks where the method and model allow
    (:func:`debiaskit.train.train_seeds`; each summary.json records the decision).
    ``report_only`` trains nothing: the report covers the runs already finished (each cell
    states its seeds), so a table that grows over several sessions can be read at any time.
    """
    preset = get_preset(name)
    out = Path(out) / name
    planned = plan(preset, out, seeds or preset.default_seeds, methods, epochs, data_dir,
                   rows=rows, precision=precision, hparams=hparams,
                   force_precision=force_precision, pack=pack, compile=compile,
                   device=device)
    if report_only:
        missing = [p for p in planned if not runs.is_finished(p.run_dir)]
        if len(missing) == len(planned):
            raise ConfigError(f"{out} holds no finished run of these options; run the bench "
                              "without --report-only first")
        log(f"report only: {len(planned) - len(missing)} of {len(planned)} runs finished; "
            f"{len(missing)} not trained")
        errors = []
    else:
        planned = resolve_auto_precision(planned, log)
        errors = execute(planned, workers or default_workers(), log, ray_address, pack_seeds)
    text = write_report(preset, planned, out)
    if errors:
        text += f"\n\n{len(errors)} run(s) failed:\n" + "\n".join(errors)
    return text


__all__ = ["PRESETS", "TablePreset", "get_preset", "run_bench"]
