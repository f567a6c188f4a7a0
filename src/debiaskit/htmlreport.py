"""One static, self-contained HTML page of run directories and bench folders.

``debiaskit report PATH... --out report.html`` finds what each path is (a run directory,
a bench folder, or a folder to search for both), gathers the bench tables next to the
published numbers and their protocol from ``report.md``, each run's selected metrics,
aligned / conflicting / worst-group curves, sample-weight histogram and every PNG the
explain commands left in the folders, and renders them with a Jinja2 template. Every image
is embedded as a ``data:`` URI, so the page needs no server and no network.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, runs
from .errors import ConfigError, DebiaskitError
from .explain.images import data_uri

#: Metrics shown per split in a run's table, in this order (those a run has).
RUN_METRICS = ("accuracy", "unbiased", "aligned", "conflicting", "worst_group", "ece")
#: Run folders shown per bench folder or searched folder; the rest are counted.
MAX_RUNS = 12
WHAT = ("give run directories (config.json + metrics.jsonl), bench folders (results.json), "
        "explain gradient-ratio folders, or folders above them")
GRADIENT_RATIO = "gradient_ratio.json"


@dataclass
class Group:
    """What the page shows as one section: a bench folder (``kind`` "bench"), the run
    directories of a folder that belong to no bench folder ("runs"), or the output folder of
    ``debiaskit explain gradient-ratio`` ("gradient_ratio")."""

    path: Path
    kind: str
    runs: list[Path] = field(default_factory=list)


def is_run_dir(path: Path) -> bool:
    return (path / runs.CONFIG).is_file() and (path / runs.METRICS).is_file()


def is_bench_dir(path: Path) -> bool:
    """A folder whose results.json names a bench preset."""
    results = path / "results.json"
    if not results.is_file():
        return False
    try:
        data = json.loads(results.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {results} ({err}); repair or remove it, or leave "
                          "its folder out of the report") from None
    return isinstance(data, dict) and "preset" in data


def discover(paths) -> list[Group]:
    """Groups to report, in the order given: a run directory alone, a bench folder with the
    run directories below it, or for any other folder every bench folder (with their runs)
    and gradient-ratio folder below it, and a group of the run directories that belong to
    no bench folder."""
    groups = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise ConfigError(f"{path} does not exist or is not a folder; {WHAT}")
        if is_run_dir(path):
            groups.append(Group(path, "runs", runs=[path]))
            continue
        folders = [path, *sorted(p for p in path.rglob("*") if p.is_dir())]
        found = [Group(f, "bench") for f in folders if is_bench_dir(f)]
        benches = list(found)
        found += [Group(f, "gradient_ratio") for f in folders if (f / GRADIENT_RATIO).is_file()]
        loose = Group(path, "runs")
        for run in (f for f in folders if is_run_dir(f)):
            owners = [g for g in benches if g.path in run.parents]
            # a run belongs to the nearest bench folder above it
            (max(owners, key=lambda g: len(g.path.parts)) if owners else loose).runs.append(run)
        found += [loose] if loose.runs else []
        if not found:
            raise ConfigError(f"{path} holds no run directory and no bench folder; {WHAT}")
        groups += found
    return groups


def _images(folder: Path) -> list[dict]:
    """Every PNG directly in ``folder`` (curves.png first) as a caption and a data URI."""
    pngs = sorted(folder.glob("*.png"), key=lambda p: (p.name != "curves.png", p.name))
    return [{"caption": p.name, "src": data_uri(p.read_bytes())} for p in pngs]


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _table_row(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def parse_report_md(text: str) -> tuple[str, list[dict]]:
    """The title and the blocks of a bench's report.md: pipe tables as
    ``{"header", "rows"}`` (cells kept as written) and other lines as ``{"text"}``;
    image lines are left out (the PNGs are embedded separately)."""
    lines = text.splitlines()
    title = lines[0].lstrip("#").strip() if lines else ""
    blocks, table, after_header = [], None, False
    for line in (line.strip() for line in lines[1:]):
        if not line.startswith("|"):
            table = None  # a blank or text line ends a table
            if line and not line.startswith("!["):
                blocks.append({"text": line})
        elif table is None:
            table = {"header": _table_row(line), "rows": []}
            blocks.append(table)
            after_header = True
            continue
        elif not (after_header and set(line) <= set("|-: ")):  # not the header's underline
            table["rows"].append(_table_row(line))
        after_header = False
    return title, blocks


def bench_section(group: Group, max_runs: int) -> dict:
    """What the page shows of a bench folder: title, tables and lines of report.md (or, if
    it is missing, results.json's numbers and protocol), its PNGs and its runs."""
    folder = group.path
    results = json.loads((folder / "results.json").read_text())
    report = folder / "report.md"
    if report.is_file():
        title, blocks = parse_report_md(report.read_text())
    else:
        title = f"{results['preset']} (no report.md; numbers from results.json)"
        rows = [[key, f"{v['mean']:.2f} +- {v['std']:.2f} (n={v['n']})"]
                for key, v in results.get("numbers", {}).items() if "mean" in v]
        blocks = [{"header": ["method/row", "ours"], "rows": rows},
                  *({"text": line} for line in results.get("protocol", []))]
    others = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix != ".png"
                    and p.name not in ("report.md", "results.json"))
    return {"title": title, "preset": results.get("preset"),
            "blocks": blocks, "images": _images(folder), "other_files": others,
            **_runs_part(group, max_runs)}


def gradient_ratio_section(folder: Path) -> dict:
    """The summary numbers of an ``explain gradient-ratio`` folder and its PNGs."""
    data = runs.read_json(folder / GRADIENT_RATIO)
    rows = [[f"setting {k}", str(v)] for k, v in data.get("settings", {}).items()
            if k != "data_checksum"]
    rows += [[f"test accuracy ({k})", _fmt(v)] for k, v in data.get("test_accuracy", {}).items()]
    rows += [["final training accuracy", _fmt(data.get("final_train_accuracy"))],
             ["first iteration with GR < 1", str(data.get("first_iteration_gr_below_1"))]]
    return {"title": f"Gradient ratio (one-pixel problem) in {folder}",
            "table": {"header": ["quantity", "value"], "rows": rows},
            "images": _images(folder), "runs": [], "runs_left_out": 0}


def _runs_part(group: Group, max_runs: int) -> dict:
    shown = group.runs[:max_runs]
    return {"runs": [run_section(r, r.name if r == group.path
                                 else r.relative_to(group.path).as_posix()) for r in shown],
            "runs_left_out": len(group.runs) - len(shown)}


def _fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else "-"


def metrics_table(metrics: dict) -> dict:
    """Rows of split name and the :data:`RUN_METRICS` the run has, formatted with 2 decimals."""
    columns = [m for m in RUN_METRICS
               if any(isinstance(v, dict) and v.get(m) is not None for v in metrics.values())]
    rows = [[split, *(_fmt(values.get(m)) for m in columns)]
            for split, values in metrics.items() if isinstance(values, dict)]
    return {"header": ["split", *columns], "rows": rows}


def curves_png(records: list[dict], title: str) -> tuple[str, bytes] | None:
    """Aligned, conflicting and worst-group accuracy per epoch of the first split that has
    them (the final model's splits before auxiliary ones such as ``b/test``)."""
    from matplotlib.figure import Figure

    from .explain.curves import ACCURACY_YLIM

    evals = [r for r in records if "eval" in r]
    if not evals:
        return None
    keys = sorted(evals[-1]["eval"], key=lambda k: "/" in k)
    split = next((k for k in keys if all(evals[-1]["eval"][k].get(m) is not None
                                         for m in ("aligned", "conflicting"))), None)
    if split is None:
        return None
    epochs = [r["epoch"] for r in evals]
    fig = Figure(figsize=(5.2, 3.4))
    ax = fig.subplots()
    marker = "o" if len(evals) < 20 else None
    for metric, style in (("aligned", "-"), ("conflicting", "--"), ("worst_group", ":")):
        values = [r["eval"].get(split, {}).get(metric) for r in evals]
        values = [float("nan") if v is None else v for v in values]
        ax.plot(epochs, values, ls=style, marker=marker, ms=3, label=metric.replace("_", "-"))
    ax.set(xlabel="epoch", ylabel="accuracy (%)", ylim=ACCURACY_YLIM)
    ax.set_title(f"{title}: '{split}' split", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return split, _figure_png(fig)


def weights_png(record: dict, title: str) -> bytes:
    """Histogram of the per-sample training weights: aligned vs conflicting samples when
    the run knows which are which, else all samples."""
    import numpy as np
    from matplotlib.figure import Figure

    weights = np.asarray(record["weights"], dtype=float).ravel()
    finite = np.isfinite(weights)  # a diverged run's inf / NaN weights cannot be binned
    weights = weights[finite]
    fig = Figure(figsize=(5.2, 3.4))
    ax = fig.subplots()
    bins = np.histogram_bin_edges(weights, bins=40)
    aligned = record.get("aligned")
    if aligned is not None:
        aligned = np.asarray(aligned, dtype=bool).ravel()[finite]
        for mask, label in ((aligned, "aligned"), (~aligned, "conflicting")):
            ax.hist(weights[mask], bins=bins, alpha=0.6, label=f"{label} ({mask.sum()})")
        ax.legend(fontsize=7)
    else:
        ax.hist(weights, bins=bins, label="all samples")
    ax.set_yscale("log")
    ax.set(xlabel="sample weight", ylabel="samples (log scale)")
    ax.set_title(f"{title}: training sample weights", fontsize=9)
    fig.tight_layout()
    return _figure_png(fig)


def run_section(run_dir: Path, name: str) -> dict:
    """What the page shows of one run directory."""
    summary_path = run_dir / runs.SUMMARY
    summary = runs.read_json(summary_path) if summary_path.is_file() else None
    records = runs.read_metrics(run_dir)
    notes = []
    if summary:
        protocol = summary.get("protocol")
        metrics = summary.get("metrics", {})
        state = (f"finished; selected epoch {summary.get('selected_epoch')} of "
                 f"{summary.get('epochs_trained')} trained "
                 f"({summary.get('selection_description', summary.get('selection'))})")
    else:
        protocol = runs.read_json(run_dir / runs.CONFIG).get("protocol")
        evaluated = [r for r in records if "eval" in r]
        metrics = evaluated[-1]["eval"] if evaluated else {}
        state = (f"unfinished: {len(records)} epoch(s) recorded; metrics of the last "
                 "evaluated epoch" if evaluated else "unfinished: no epoch evaluated yet")
    plots = []
    curves = curves_png(records, name)
    if curves:
        plots.append({"caption": f"aligned / conflicting / worst-group accuracy per epoch "
                                 f"('{curves[0]}' split)", "src": data_uri(curves[1])})
    if (run_dir / runs.WEIGHTS).is_file():
        try:
            record = runs.load_torch(run_dir / runs.WEIGHTS)
            which = " (aligned vs conflicting)" if record.get("aligned") is not None else ""
            plots.append({"caption": f"sample weights after the last epoch{which}",
                          "src": data_uri(weights_png(record, name))})
        except DebiaskitError as err:
            notes.append(str(err))
    return {"name": name, "path": str(run_dir), "protocol": protocol, "state": state,
            "metrics": metrics_table(metrics), "plots": plots, "images": _images(run_dir),
            "notes": notes}


def build_page(paths, max_runs: int = MAX_RUNS) -> str:
    """The HTML page of ``paths`` (see :func:`discover`)."""
    import jinja2

    if max_runs < 1:
        raise ConfigError(f"--max-runs must be >= 1, got {max_runs}")
    sections = []
    for group in discover(paths):
        # a run directory given alone: its section is the run, without a "Runs" heading
        # and a second heading with its name
        alone = group.kind == "runs" and group.runs == [group.path]
        if group.kind == "bench":
            section = bench_section(group, max_runs)
        elif group.kind == "gradient_ratio":
            section = gradient_ratio_section(group.path)
        else:
            section = {"title": f"{'Run' if alone else 'Runs in'} {group.path}",
                       **_runs_part(group, max_runs)}
        sections.append({"kind": group.kind, "path": str(group.path), "alone": alone,
                         **section})
    env = jinja2.Environment(loader=jinja2.PackageLoader("debiaskit", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(
        sections=sections, paths=[str(p) for p in paths], version=__version__)


def write_report(paths, out, max_runs: int = MAX_RUNS) -> Path:
    """Render the page of ``paths`` and write it to ``out`` atomically (an existing file is
    replaced; a failure leaves the old file or none, never a partial one)."""
    out = runs.check_out(out, folder=False, example="report.html")
    html = build_page(paths, max_runs).encode("utf-8")
    runs.atomic_write(out, lambda f: f.write(html))
    return out
