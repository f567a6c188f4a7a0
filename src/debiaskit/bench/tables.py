"""Bench reports: mean +- std over seeds next to the published numbers, as text,
Markdown, JSON, and a PNG of the aligned vs conflicting test-accuracy curves."""

from __future__ import annotations

import textwrap
from collections import defaultdict
from pathlib import Path

import numpy as np

from .. import runs
from ..explain.curves import ACCURACY_YLIM, draw_aligned_conflicting, save_png
from ..precision import NAMES as PRECISION_NAMES, describe_precision
from ..train import SELECTION, describe_optimiser
from .presets import TablePreset
from .runner import PlannedRun


#: How reports name the metric a table shows.
METRIC_NAMES = {"unbiased": "unbiased accuracy (mean over (class, bias) cells)",
                "accuracy": "plain accuracy",
                "conflicting": "bias-conflicting accuracy (mean over the off-diagonal cells)"}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single seed)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def collect(preset: TablePreset, planned: list[PlannedRun]) -> dict:
    """Finished runs' selected metrics per (method, row, column), and the aligned /
    conflicting curves of each row's first column."""
    cells = defaultdict(list)
    by_seed = defaultdict(dict)
    last_train = defaultdict(lambda: defaultdict(list))
    best = defaultdict(list)
    curves = defaultdict(list)
    stages, rss, packs, machines = {}, [], [], []
    for p in planned:
        if not runs.is_finished(p.run_dir):
            continue
        summary = runs.read_json(p.run_dir / runs.SUMMARY)
        if summary.get("peak_rss_mib") is not None:
            rss.append(summary["peak_rss_mib"])
        if summary.get("pack"):
            packs.append(summary["pack"])
        if summary.get("machine") and summary["machine"] not in machines:
            machines.append(summary["machine"])
        if summary.get("stages"):
            stages[f"{p.method}/{p.row}/seed{p.seed}"] = summary["stages"]
        row = preset.row(p.row)
        records = runs.read_metrics(p.run_dir)
        evals = [r for r in records if "eval" in r]
        trained = [r["train"] for r in records if "train" in r]
        for stat, value in (trained[-1] if trained else {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                last_train[(p.method, p.row)][stat].append(value)
        for column in preset.table_columns():
            split, metric = preset.split_of(row, column), preset.metric_of(column)
            cells[(p.method, p.row, column)].append(summary["metrics"][split])
            by_seed[(p.method, p.row, column)][p.seed] = summary["metrics"][split]
            per_epoch = [r["eval"][split][metric] for r in evals
                         if r["eval"].get(split, {}).get(metric) is not None]
            if len(per_epoch) > 1 and p.config.selection != "oracle":
                best[(p.method, p.row, column)].append(max(per_epoch))
        split = preset.split_of(row, preset.table_columns()[0])
        curves[(p.method, p.row)].append(
            [(r["epoch"], r["eval"][split].get("aligned"), r["eval"][split].get("conflicting"))
             for r in evals])
    return {"cells": cells, "by_seed": by_seed, "best": best, "curves": curves,
            "stages": stages, "rss": rss, "packs": packs, "last_train": last_train,
            "machines": machines}


def train_stat_lines(last_train: dict) -> list[str]:
    """Mean +- std over seeds of every training statistic of each run's last epoch (the
    loss terms, GBA's masked shares and D's accuracies, CF/F's Sal share, ...)."""
    if not last_train:
        return []
    lines = ["", "Training statistics of the last epoch (mean over its batches, or over "
             "training samples where the method says so), mean +- std over seeds:", "",
             "| method | row | statistic | value | seeds |", "|---|---|---|---|---|"]
    for (method, row), stats in last_train.items():
        for name, values in sorted(stats.items()):
            mu, sd = mean_std(values)
            lines.append(f"| {method} | {row} | {name} | {mu:.4g} +- {sd:.2g} | {len(values)} |")
    return lines + [""]


def paired_difference(values: list[float], others: list[float]) -> dict:
    """Mean of ``values[i] - others[i]`` with the two-sided 95 % t interval of that mean
    (``n - 1`` degrees of freedom; no interval for one pair)."""
    from scipy import stats

    diff = np.asarray(values, dtype=float) - np.asarray(others, dtype=float)
    mean = float(diff.mean())
    if len(diff) < 2:
        return {"mean": mean, "low": None, "high": None, "n": len(diff)}
    half = float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(diff)}


def paired_lines(preset: TablePreset, planned: list[PlannedRun], results: dict,
                 numbers: dict) -> list[str]:
    """Each method minus ``preset.paired_baseline`` on the seeds both finished (the same
    data and training seed), per row and column, with a 95 % t interval; adds ``paired``
    entries to ``numbers``."""
    base = preset.paired_baseline
    if base is None or base not in {p.method for p in planned}:
        return []
    lines = ["", f"Paired difference to {base} (each seed's run minus {base}'s run with the "
             f"same seed; mean and two-sided 95 % t interval over the seeds both finished):",
             "", "| method | row | column | difference | 95 % interval | seeds |",
             "|---|---|---|---|---|---|"]
    for m in dict.fromkeys(p.method for p in planned):
        if m == base:
            continue
        for row in dict.fromkeys(p.row for p in planned):
            for column in preset.table_columns():
                metric = preset.metric_of(column)
                mine = results["by_seed"].get((m, row, column), {})
                theirs = results["by_seed"].get((base, row, column), {})
                seeds = sorted(set(mine) & set(theirs))
                if not seeds:
                    continue
                d = paired_difference([mine[s][metric] for s in seeds],
                                      [theirs[s][metric] for s in seeds])
                key = f"{m}/{row}/{column}" if preset.columns else f"{m}/{row}"
                numbers.setdefault(key, {})["paired"] = {**d, "baseline": base,
                                                         "seeds": seeds}
                interval = ("-" if d["low"] is None
                            else f"[{d['low']:+.2f}, {d['high']:+.2f}]")
                lines.append(f"| {m} | {row} | {column} | {d['mean']:+.2f} | {interval} | "
                             f"{len(seeds)} |")
    return lines + [""]


PACK_TEXT = {True: "as one product", False: "one by one",
             "auto": "as one product where timing the first batch on the worker's CPU found "
                     "that faster (pack auto, see Packing below)"}


def packing_lines(decisions: list[dict]) -> list[str]:
    """What pack "auto" decided in the finished runs (their summaries' ``pack``)."""
    auto = [d for d in decisions if d.get("mode") == "auto" and "packed_ms" in d]
    if not auto:
        return []
    packed = sum(d["packed"] for d in auto)
    ratios = sorted(d["packed_ms"] / d["separate_ms"] for d in auto)
    return [f"Packing: pack auto packed {packed} of {len(auto)} runs with networks to pack "
            f"(packed / one-by-one time per step {ratios[0]:.2f}-{ratios[-1]:.2f}x, timed on "
            "each run's first batch)."]


def _precision_text(planned: list[PlannedRun]) -> str:
    """The precision the runs trained in, from their own config.json (``auto`` is resolved
    per run; runs not started yet count with their planned precision)."""
    counts: dict[str, int] = {}
    for p in planned:
        path = p.run_dir / runs.CONFIG
        precision = (runs.read_json(path)["run"].get("precision", "fp32") if path.exists()
                     else p.config.precision)
        counts[precision] = counts.get(precision, 0) + 1
    if len(counts) == 1:
        only = next(iter(counts))
        return ("precision auto (chosen per run when it starts)" if only == "auto"
                else describe_precision(only))
    return "mixed precisions: " + ", ".join(
        f"{'auto (not started)' if k == 'auto' else PRECISION_NAMES[k]} in {n} runs"
        for k, n in sorted(counts.items()))


def _selection_text(cfg) -> str:
    if cfg.selection == "early_stop":
        return f"{SELECTION[cfg.selection]}, at most {cfg.epochs} epochs, patience {cfg.patience}"
    return f"{SELECTION[cfg.selection]}, {cfg.epochs} epochs"


def protocol_lines(preset: TablePreset, planned: list[PlannedRun]) -> list[str]:
    cfg = planned[0].config
    seeds = sorted({p.seed for p in planned})
    missing = sum(not runs.is_finished(p.run_dir) for p in planned)
    if missing:
        seeds = (f"{seeds} ({missing} of the {len(planned)} planned runs have not finished; "
                 "each cell's n counts the seeds it holds)")
    per_method = {p.method: _selection_text(p.config) for p in planned}
    if len(set(per_method.values())) == 1:
        selection = per_method[planned[0].method]
    else:
        selection = "; ".join(f"{m}: {text}" for m, text in per_method.items())
    if preset.columns:
        ran = set(p.row for p in planned)
        where = "; ".join(
            f"{column}: " + ", ".join(f"{r.label} '{preset.split_of(r, column)}'"
                                      for r in preset.rows if r.label in ran)
            for column in preset.columns)
        where = f"the splits ({where})"
    else:
        where = f"the '{preset.split}' split"
    hparams = "; ".join(dict.fromkeys(f"{p.method} ({p.row}) {p.config.hparams}"
                                      for p in planned if p.config.hparams))
    metric = METRIC_NAMES.get(preset.metric, preset.metric)
    if preset.column_metrics:
        metric += " (" + "; ".join(f"column {c}: {METRIC_NAMES.get(m, m)}"
                                   for c, m in preset.column_metrics.items()) + ")"
    return [
        f"Source: {preset.source}.",
        f"Metric: {metric} (%) on {where}, "
        f"mean +- sample std over seeds {seeds}; ours vs published.",
        f"Model selection and length: {selection}.",
        f"Training: model {cfg.model}{' ' + str(cfg.model_options) if cfg.model_options else ''}"
        f", batch {cfg.batch_size}, augmentation {cfg.augment}, {describe_optimiser(cfg)}, "
        f"{_precision_text(planned)}, "
        f"the first layers of networks that read the same batch (LfF, DisEnt) computed "
        f"{PACK_TEXT[cfg.pack]} (equal up to float rounding), "
        f"method hyper-parameters {hparams or 'the paper defaults'}. {preset.notes}",
    ]


def table(preset: TablePreset, planned: list[PlannedRun], results: dict) -> tuple[str, dict]:
    """The Markdown table and the same numbers as a dict."""
    methods = list(dict.fromkeys(p.method for p in planned))
    rows = list(dict.fromkeys(p.row for p in planned))
    columns = preset.table_columns()
    header = [preset.row_header] + [
        f"{m} {c + ' ' if preset.columns else ''}{h}"
        for m in methods for c in columns for h in ("(ours)", "(paper)")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    numbers = {}
    for row in rows:
        cells = [row]
        for m in methods:
            for column in columns:
                metric = preset.metric_of(column)
                vals = [r[metric] for r in results["cells"].get((m, row, column), [])]
                key = f"{m}/{row}/{column}" if preset.columns else f"{m}/{row}"
                if vals:
                    mu, sd = mean_std(vals)
                    cells.append(f"{mu:.2f} +- {sd:.2f} (n={len(vals)})")
                    numbers[key] = {"mean": mu, "std": sd, "n": len(vals), "values": vals}
                else:
                    cells.append("not run")
                pub = preset.published_value(m, row, column)
                cells.append("-" if pub is None else f"{pub:.2f}" if isinstance(pub, (int, float))
                             else f"{pub[0]:.2f} +- {pub[1]:.2f}")  # (mean, std) or no std
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), numbers


def oracle_lines(preset: TablePreset, planned: list[PlannedRun], results: dict,
                 numbers: dict) -> list[str]:
    """The best test number over the evaluated epochs of each run, next to the selected
    one: a TEST-SET ORACLE (the epoch is chosen on the test set itself), shown only to
    compare with papers that reported it, never as a result. Adds ``oracle`` entries to
    ``numbers``."""
    if not results["best"]:
        return []
    lines = ["", "Best epoch on the test set (TEST-SET ORACLE: each run's highest test number "
             "over its evaluated epochs; not a valid model selection) next to the number "
             "selected above, mean +- std over seeds:", "",
             "| method | row | column | selected | best epoch (oracle) |", "|---|---|---|---|---|"]
    for (m, row, column), vals in results["best"].items():
        key = f"{m}/{row}/{column}" if preset.columns else f"{m}/{row}"
        mu, sd = mean_std(vals)
        numbers.setdefault(key, {})["oracle"] = {"mean": mu, "std": sd, "values": vals}
        selected = numbers.get(key, {})
        shown = (f"{selected['mean']:.2f} +- {selected['std']:.2f}" if "mean" in selected
                 else "-")
        lines.append(f"| {m} | {row} | {column} | {shown} | {mu:.2f} +- {sd:.2f} (n={len(vals)}) |")
    return lines + [""]


def plot_curves(preset: TablePreset, results: dict, path: Path) -> None:
    """Aligned (solid) and conflicting (dashed) test accuracy per epoch, mean over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(results["curves"])
    rows = list(dict.fromkeys(r for _, r in keys))
    methods = list(dict.fromkeys(m for m, _ in keys))
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.6), squeeze=False)
    colors = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, row in zip(axes[0], rows):
        for m in methods:
            seeds = results["curves"].get((m, row))
            if not seeds:
                continue
            n = min(len(s) for s in seeds)
            arr = np.array([[(e, a, c) for e, a, c in s[:n]] for s in seeds], dtype=float)
            draw_aligned_conflicting(ax, arr[0, :, 0], arr[:, :, 1].mean(0),
                                     arr[:, :, 2].mean(0), colors[m], m)
        ax.set_title(f"{preset.row_header.split(' (')[0]} {row}")
        ax.set_xlabel("epoch")
        ax.set_ylim(*ACCURACY_YLIM)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{preset.table_columns()[0]} accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(textwrap.fill(preset.title, 60 * len(rows)), fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


def stage_lines(stages: dict) -> list[str]:
    """Mean +- std over seeds of every number a pipeline stage reported (LAD: seconds,
    reconstruction quality, f's bias agreement, the walk's entropy and code changes)."""
    grouped = defaultdict(lambda: defaultdict(list))
    for run, records in stages.items():
        method, row, _ = run.rsplit("/", 2)
        for stage, record in records.items():
            for stat, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    grouped[(method, row)][f"{stage}.{stat}"].append(value)
    lines = []
    for (method, row), stats in grouped.items():
        seeds = max(len(values) for values in stats.values())
        lines += ["", f"Stages of {method}, {row} (mean +- std over {seeds} seeds; seconds are "
                  "wall time on a worker, so they depend on what ran beside it):", "",
                  "| stage.statistic | value |", "|---|---|"]
        lines += [f"| {name} | {m:.4g} +- {sd:.2g} |"
                  for name, (m, sd) in ((n, mean_std(v)) for n, v in stats.items())]
    return lines + [""] if lines else []


def reference_lines(preset: TablePreset, planned: list[PlannedRun]) -> list[str]:
    """Published numbers of methods not run here, for the rows this bench ran (a number, or
    a text such as "92.12 / 0.52" where the reference has several columns)."""
    rows = set(p.row for p in planned)
    shown = (lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else str(v))
    lines = [f"Published, not run here: {name}: " + ", ".join(
                 f"{row} {shown(value)}" for row, value in values.items() if row in rows) + "."
             for name, values in preset.references.items()
             if any(row in rows for row in values)]
    return lines + [""] if lines else []


def machine_lines(machines: list[dict]) -> list[str]:
    """Where the runs computed (each run's summary records it; runs written before it did
    are left out): one line, with a warning when they differ (float kernels differ)."""
    if not machines:
        return []
    shown = "; ".join(f"{m.get('cpu')} ({m.get('architecture')}, torch capability "
                      f"{m.get('cpu_capability')}, {m.get('threads')} thread(s), "
                      f"{m.get('device')})" for m in machines)
    more = (" The runs computed on different machines or settings: numbers may differ by "
            "float rounding between them." if len(machines) > 1 else "")
    return [f"Computed on: {shown}.{more}"]


def write_report(preset: TablePreset, planned: list[PlannedRun], out: Path) -> str:
    """Write report.md, results.json and curves.png into ``out``; return the text report."""
    results = collect(preset, planned)
    md_table, numbers = table(preset, planned, results)
    protocol = protocol_lines(preset, planned)
    oracle = oracle_lines(preset, planned, results, numbers)
    paired = paired_lines(preset, planned, results, numbers)
    memory = ([f"Memory: peak resident set of a worker process {max(results['rss']):.0f} MiB "
               f"(the largest of {len(results['rss'])} runs' peak_rss_mib, which covers the "
               "worker's earlier runs too)."] if results["rss"] else [])
    machines = machine_lines(results["machines"])
    text = "\n".join([f"# {preset.title}", "", md_table, "", *reference_lines(preset, planned),
                      *protocol, *packing_lines(results["packs"]), *memory, *machines, *paired,
                      *oracle, *train_stat_lines(results["last_train"]),
                      *stage_lines(results["stages"])])
    markdown = (text + "\n\n![curves](curves.png)\n").encode()
    runs.atomic_write(out / "report.md", lambda f: f.write(markdown))
    train_stats = {f"{m}/{row}": {k: mean_std(v) for k, v in stats.items()}
                   for (m, row), stats in results["last_train"].items()}
    runs.write_json(out / "results.json", {"preset": preset.name, "numbers": numbers,
                                           "last_epoch_training": train_stats,
                                           "protocol": protocol, "stages": results["stages"],
                                           "peak_rss_mib": max(results["rss"], default=None),
                                           **({"machines": results["machines"]}
                                              if results["machines"] else {})})
    if results["curves"]:
        plot_curves(preset, results, out / "curves.png")
    return text
