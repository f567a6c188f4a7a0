"""Learning curves of bias-aligned vs bias-conflicting accuracy.

A model that takes the shortcut reaches ~100 % on aligned samples within an epoch or two
while its conflicting accuracy stays near chance; a debiased model closes the gap. These
curves come straight from a run's ``metrics.jsonl``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .. import runs
from ..errors import DebiaskitError


#: y-limits of the accuracy plots (%): a margin below 0 and above 100, so that a curve at
#: 0 or 100 % is drawn inside the axes, not hidden under their frame.
ACCURACY_YLIM = (-3.0, 103.0)


def draw_aligned_conflicting(ax, epochs, aligned, conflicting, color, label: str) -> None:
    """Aligned (solid) and conflicting (dashed) accuracy per epoch on one axis."""
    ax.plot(epochs, aligned, color=color, label=f"{label} aligned")
    ax.plot(epochs, conflicting, color=color, ls="--", label=f"{label} conflicting")


def save_png(fig, path: Path) -> None:
    """Render ``fig`` and write it atomically (no half-written PNG)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    runs.atomic_write(Path(path), lambda f: f.write(buf.getvalue()))


def plot_run_curves(run_dir, out: Path | None = None) -> Path:
    """One panel per evaluation split with bias labels, every model of the run on it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = runs.require_run_dir(run_dir)
    records = runs.read_metrics(run_dir)
    if not records:
        raise DebiaskitError(f"{run_dir} holds no metrics.jsonl records; give a debiaskit run "
                             "directory that has trained at least one epoch")
    # epochs left unevaluated (RunConfig.eval_every) carry no "eval" and draw no point
    records = [r for r in records if "eval" in r]
    if not records:
        raise DebiaskitError(f"{run_dir} has evaluated no epoch yet (--eval-every); draw its "
                             "curves once it has")
    keys = [k for k, v in records[0]["eval"].items() if "conflicting" in v]
    if not keys:
        raise DebiaskitError(f"{run_dir}: no evaluation split has bias labels, so there are "
                             "no aligned/conflicting curves to draw")
    splits = list(dict.fromkeys(k.split("/")[-1] for k in keys))
    models = list(dict.fromkeys(k.split("/")[0] if "/" in k else "final" for k in keys))
    fig, axes = plt.subplots(1, len(splits), figsize=(4.5 * len(splits), 3.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    epochs = np.array([r["epoch"] for r in records])
    for ax, split in zip(axes[0], splits):
        for color, model in zip(colors, models):
            key = split if model == "final" else f"{model}/{split}"
            if key not in records[0]["eval"]:
                continue
            values = [(r["eval"][key]["aligned"], r["eval"][key]["conflicting"]) for r in records]
            aligned, conflicting = np.array(values, dtype=float).T
            draw_aligned_conflicting(ax, epochs, aligned, conflicting, color, model)
        ax.set_title(split)
        ax.set_xlabel("epoch")
        ax.set_ylim(*ACCURACY_YLIM)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{run_dir.name}: aligned vs conflicting accuracy", fontsize=9)
    fig.tight_layout()
    out = Path(out) if out else run_dir / "curves.png"
    save_png(fig, out)
    return out
