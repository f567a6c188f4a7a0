"""Hyper-parameter sweeps: random search over the methods' declared distributions, run by
the bench runner (local worker pool or a Ray cluster), resumable, with trial selection by a
declared rule.

Sampling (the shape of DomainBed's ``hparams_registry``): every searched hyper-parameter
of trial ``t`` is drawn from its :class:`~debiaskit.methods.base.Search` distribution with
a generator seeded by a hash of (method, t, name), so a trial's values depend on its own
number only, not on how many trials run or in which order. Trial 0 is the defaults.

Each (trial, seed) is one run directory ``OUT/trialNNN/seedS`` trained with the run
selection of the chosen rule (``heldout``: best held-out plain accuracy; ``objective``:
early stopping on the method's own objective), both on a held-out split of the biased
training set, so no label beyond the class is used. Trials are then ranked by
:data:`RULES` (small policy classes, as DomainBed's ``model_selection``): the label-free
rule the sweep was run with, and, separately and labelled as such, the worst-group
accuracy on the bias-labelled held-out split (where the data has bias labels).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import runs
from ..data.protocols import PROTOCOLS
from ..data.sources import resolve_data_dir
from ..errors import ConfigError, unknown_name
from ..methods import get_method
from ..methods.hparams import search_of
from ..train import RunConfig, check_config, describe_optimiser
from .tables import mean_std
from .runner import PlannedRun, execute


def seed_hash(*args) -> int:
    """A 31-bit integer from the text of ``args`` (stable across runs and machines)."""
    return int(hashlib.md5(str(args).encode()).hexdigest(), 16) % (2 ** 31)


def searchable(method: str) -> dict:
    """name -> Search distribution of every searchable hyper-parameter of ``method``."""
    cls = get_method(method)
    return {k: s for k, hp in cls.declared_hparams.items() if (s := search_of(k, hp)) is not None}


def sample_hparams(method: str, trial: int, names=None) -> dict:
    """Trial ``trial``'s values of the hyper-parameters ``names`` (default: every searchable
    one); trial 0 is the defaults (an empty dict)."""
    space = searchable(method)
    names = list(space) if names is None else list(names)
    unknown = [n for n in names if n not in space]
    if unknown:
        raise ConfigError(
            f"method {method} has no searchable hyper-parameter {', '.join(unknown)}; "
            f"searchable: {', '.join(space) or 'none'}")
    if trial == 0:
        return {}
    return {n: space[n].sample(np.random.RandomState(seed_hash(method, trial, n)))
            for n in names}


class Rule:
    """How a trial is scored from its runs' summaries (mean over seeds)."""

    name = ""
    description = ""
    labelled = False
    selection = "heldout"   # the run selection the rule needs

    def value(self, summary: dict) -> float | None:
        raise NotImplementedError

    def score(self, summaries: list[dict]) -> float | None:
        values = [v for s in summaries if (v := self.value(s)) is not None]
        return float(np.mean(values)) if values and len(values) == len(summaries) else None


class HeldoutAccuracy(Rule):
    name = "heldout"
    description = ("label-free: plain accuracy on a held-out split of the biased training "
                   "set at each run's best epoch by the same, mean over seeds")
    selection = "heldout"

    def value(self, summary):
        return summary["metrics"]["val"]["accuracy"]


class HeldoutMixed(Rule):
    name = "heldout_mixed"
    description = ("label-free: accuracy on the held-out split with every image's background "
                   "taken from a held-out image of another class (its foreground tiled over; "
                   "needs foreground masks, not bias labels) at each run's best epoch by "
                   "held-out plain accuracy, mean over seeds")
    selection = "heldout"

    def value(self, summary):
        mixed = summary["metrics"].get("val_mixed")
        return None if mixed is None else mixed["accuracy"]


class Objective(Rule):
    name = "objective"
    description = ("label-free: minus the method's own training objective on a held-out "
                   "split of the biased training set at each run's early-stopped epoch, mean "
                   "over seeds")
    selection = "early_stop"

    def value(self, summary):
        return -summary["val_objective"] if summary.get("val_objective") is not None else None


class WorstGroupValidation(Rule):
    name = "worst_group"
    description = ("LABELLED: worst (class, bias) group accuracy on the bias-labelled "
                   "held-out split at each run's selected epoch, mean over seeds (uses bias "
                   "labels, which the label-free rules do not)")
    labelled = True

    def value(self, summary):
        return summary["metrics"]["val"].get("worst_group")


RULES = {r.name: r for r in (HeldoutAccuracy(), HeldoutMixed(), Objective(),
                             WorstGroupValidation())}
#: the label-free rules a sweep can be run with
LABEL_FREE = tuple(k for k, r in RULES.items() if not r.labelled)


def grid_hparams(method: str, grid: dict) -> dict:
    """Trial -> values of a grid sweep: ``grid`` maps one hyper-parameter to its list of
    values, trial t takes the t-th (checked against the method's ranges)."""
    if len(grid) != 1:
        raise ConfigError(f"a grid sweeps one hyper-parameter, got {len(grid)}: "
                          f"{', '.join(grid) or 'none'}; give one --grid NAME=V1,V2,...")
    (name, values), = grid.items()
    if not values:
        raise ConfigError(f"--grid {name} has no values; give NAME=V1,V2,...")
    trials = {t: {name: v} for t, v in enumerate(values)}
    for hp in trials.values():
        get_method(method).resolve_hparams(hp)  # unknown names, values out of range
    return trials


def plan_sweep(base: RunConfig, out, trials: int, seeds: int, names=None,
               rule: str = "heldout", grid: dict | None = None
               ) -> tuple[list[PlannedRun], dict]:
    """The runs of a sweep of ``base.method`` (``base.hparams`` fixed, the others sampled,
    or with ``grid`` one hyper-parameter's listed values, one trial each) and each trial's
    values."""
    if rule not in LABEL_FREE:
        raise ConfigError(f"unknown label-free rule {rule!r}; choose one of: "
                          f"{', '.join(LABEL_FREE)}")
    if grid:
        values = grid_hparams(base.method, grid)
        trials = len(values)
    if trials < 1 or seeds < 1:
        raise ConfigError(f"trials and seeds must be >= 1, got {trials} and {seeds}")
    if base.dataset not in PROTOCOLS:
        raise unknown_name("dataset", base.dataset, PROTOCOLS)
    # absolute paths: worker processes (or Ray nodes) may start in another directory
    base = replace(base, data_dir=str(resolve_data_dir(base.data_dir)))
    if not grid:
        names = [n for n in (names or searchable(base.method)) if n not in base.hparams]
        values = {t: sample_hparams(base.method, t, names) for t in range(trials)}
    out = Path(out).resolve()
    planned = []
    for t in range(trials):
        for s in range(seeds):
            cfg = check_config(replace(base, hparams={**base.hparams, **values[t]}, seed=s,
                                       selection=RULES[rule].selection, progress=False))
            planned.append(PlannedRun(f"trial{t:03d}", "sweep", s, cfg,
                                      out / f"trial{t:03d}" / f"seed{s}"))
    return planned, values


def sweep_results(planned: list[PlannedRun], values: dict, rule: str) -> dict:
    """Per trial: values, each rule's score, the test metrics (reported, never used to
    select); and the best trial by the label-free ``rule`` and by the labelled rule."""
    by_trial = defaultdict(list)
    for p in planned:
        if runs.is_finished(p.run_dir):
            summary = runs.read_json(p.run_dir / runs.SUMMARY)
            records = {r["epoch"]: r for r in runs.read_metrics(p.run_dir)}
            summary["val_objective"] = records.get(summary["selected_epoch"], {}).get(
                "val_objective")
            by_trial[p.method].append(summary)
    seeds = len({p.seed for p in planned})
    trials = {}
    for t, hp in values.items():
        name = f"trial{t:03d}"
        summaries = by_trial.get(name, [])
        entry = {"hparams": hp, "seeds_finished": len(summaries)}
        if len(summaries) == seeds:
            for key in (rule, "worst_group"):
                entry[key] = RULES[key].score(summaries)
            test = [s["metrics"].get("test") for s in summaries]
            if all(t is not None for t in test):
                for metric in ("accuracy", "unbiased", "worst_group"):
                    vals = [t.get(metric) for t in test]
                    if all(v is not None for v in vals):
                        entry[f"test_{metric}"] = mean_std(vals)
        trials[name] = entry
    best = {}
    for key in (rule, "worst_group"):
        scored = {k: v[key] for k, v in trials.items() if v.get(key) is not None}
        best[key] = max(scored, key=scored.get) if scored else None
    return {"rule": rule, "rules": {k: RULES[k].description for k in (rule, "worst_group")},
            "trials": trials, "best": best}


def report_text(base: RunConfig, results: dict, seeds: int) -> str:
    rule = results["rule"]
    names = sorted({k for t in results["trials"].values() for k in t["hparams"]})
    lines = [f"# Sweep of {base.method} on {base.dataset} {base.data_params}", "",
             f"{len(results['trials'])} trials x {seeds} seeds, {base.epochs} epochs, model "
             f"{base.model}, batch {base.batch_size}, augmentation {base.augment}, "
             f"{describe_optimiser(base)}; searched: {', '.join(names) or 'none'} "
             f"(trial 0: the defaults); fixed: {base.hparams or 'none'}.",
             f"Selection rule: {results['rules'][rule]}.",
             f"Separately: {results['rules']['worst_group']}.",
             "Test numbers are shown for reference and never used to select.", "",
             "| trial | " + " | ".join(names) + f" | {rule} | worst_group (labelled) | "
             "test unbiased | test accuracy |",
             "|---|" + "---|" * (len(names) + 4)]

    def shown(v):
        return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    for name, t in results["trials"].items():
        test = [t.get(f"test_{m}") for m in ("unbiased", "accuracy")]
        lines.append(f"| {name} | " + " | ".join(shown(t["hparams"].get(n, "default"))
                                                 for n in names)
                     + f" | {shown(t.get(rule))} | {shown(t.get('worst_group'))} | "
                     + " | ".join("-" if v is None else f"{v[0]:.2f} +- {v[1]:.2f}"
                                  for v in test) + " |")
    lines += ["", f"Best by {rule} (label-free): {results['best'][rule] or 'none finished'}.",
              f"Best by worst_group (LABELLED, uses bias labels): "
              f"{results['best']['worst_group'] or 'none (no bias labels or none finished)'}."]
    return "\n".join(lines)


def run_sweep(base: RunConfig, out, trials: int, seeds: int, names=None,
              rule: str = "heldout", workers: int = 1, ray_address: str | None = None,
              log=print, grid: dict | None = None) -> tuple[str, dict]:
    """Plan, run (skipping finished runs, resuming unfinished ones) and report a sweep into
    ``out`` (sweep.md, sweep.json); returns the report text and the results."""
    planned, values = plan_sweep(base, out, trials, seeds, names, rule, grid)
    errors = execute(planned, workers, log, ray_address)
    results = sweep_results(planned, values, rule)
    text = report_text(base, results, seeds)
    if errors:
        text += f"\n\n{len(errors)} run(s) failed:\n" + "\n".join(errors)
    out = Path(out)
    runs.write_json(out / "sweep.json", {"method": base.method, "dataset": base.dataset,
                                         "data_params": base.data_params, "seeds": seeds,
                                         **results})
    runs.atomic_write(out / "sweep.md", lambda f: f.write((text + "\n").encode()))
    return text, results
