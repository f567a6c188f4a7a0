"""Export run directories to the experiment trackers users already have (TensorBoard).

The run directory stays the source of truth (:mod:`debiaskit.runs`); training never imports
a tracker. An export reads ``config.json`` and ``metrics.jsonl`` of each run and writes, per
run, one TensorBoard log folder named after the run's path below the runs' common parent:

- ``train/<statistic>`` for every numeric training statistic of an epoch (losses, weights),
- ``eval/<split>/<metric>`` for every numeric metric of every evaluated split (cells and
  other matrices are left out), ``lr/<network>`` and ``time/seconds``,
- the run's protocol text and its configuration as JSON (TensorBoard's text tab).

The step of every scalar is the epoch. The export is written into a temporary folder next
to ``out`` and renamed into place at the end, so ``out`` is whole or absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import runs
from .errors import ConfigError

#: tracker name -> what ``debiaskit export --to`` writes
TRACKERS = {"tensorboard": "TensorBoard event files (tensorboard --logdir OUT)"}


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def scalars(record: dict) -> dict[str, float]:
    """The scalars of one metrics.jsonl record, by TensorBoard tag."""
    out = {f"train/{k}": v for k, v in record.get("train", {}).items() if _numeric(v)}
    for split, metrics in record.get("eval", {}).items():
        out.update({f"eval/{split}/{k}": v for k, v in metrics.items() if _numeric(v)})
    out.update({f"lr/{k}": v for k, v in record.get("lr", {}).items() if _numeric(v)})
    if _numeric(record.get("val_objective")):
        out["eval/val_objective"] = record["val_objective"]
    if _numeric(record.get("seconds")):
        out["time/seconds"] = record["seconds"]
    return out


def _run_names(run_dirs: list[Path]) -> list[str]:
    """Each run's path below the common parent of all of them (its folder name alone if
    there is one run)."""
    if len(run_dirs) == 1:
        return [run_dirs[0].name]
    common = Path(os.path.commonpath([str(p) for p in run_dirs]))
    return [str(p.relative_to(common)) for p in run_dirs]


def export_tensorboard(run_dirs, out) -> list[Path]:
    """Write one TensorBoard log folder per run into ``out`` (which must not exist or be
    empty); returns the folders written."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("the TensorBoard export needs tensorboard: pip install "
                          "'debiaskit[tensorboard]'") from None
    run_dirs = [Path(p).resolve() for p in run_dirs]
    for run in run_dirs:
        if not (run / runs.CONFIG).is_file() or not runs.read_metrics(run):
            raise ConfigError(f"{run} is not a debiaskit run directory with recorded epochs "
                              "(config.json and metrics.jsonl); name run directories")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not empty; choose a new --out folder "
                          "(exports never overwrite)")
    names = _run_names(run_dirs)

    def fill(tmp: Path) -> None:
        for run, name in zip(run_dirs, names):
            config = runs.read_json(run / runs.CONFIG)
            writer = SummaryWriter(log_dir=str(tmp / name))
            writer.add_text("protocol", config.get("protocol", ""), 0)
            writer.add_text("config", "```\n" + json.dumps(config.get("run", {}), indent=1,
                                                           sort_keys=True) + "\n```", 0)
            for record in runs.read_metrics(run):
                for tag, value in scalars(record).items():
                    writer.add_scalar(tag, value, record["epoch"])
            writer.close()

    runs.write_folder(out, fill)
    written = [out / name for name in names]
    return written
