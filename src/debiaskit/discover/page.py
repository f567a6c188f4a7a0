"""``discover.html``: a self-contained page (images as PNG data URIs, no scripts) rendered
from the Jinja2 template ``templates/discover.html.j2``."""

from __future__ import annotations

import io

import numpy as np
import torch

from ..explain.images import data_uri
from .config import CLUSTER_FEATURES, PRECISION_AT, SHOW_SIZE, DiscoverConfig
from .figures import naming_section
from .inputs import DiscoveryInput
from .output import ranking_description
from .ranking import Discovery
from .selection import RULE


def image_png(image: torch.Tensor) -> bytes:
    """One uint8 C x H x W image as PNG bytes, its longer side at most :data:`SHOW_SIZE`."""
    from PIL import Image

    arr = image.permute(1, 2, 0).numpy()
    pic = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr[..., :3])
    if max(pic.size) > SHOW_SIZE:
        pic.thumbnail((SHOW_SIZE, SHOW_SIZE))
    buf = io.BytesIO()
    pic.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def histogram_png(scores: np.ndarray, conflicting: np.ndarray | None, label: str) -> bytes:
    """Histogram of the scores (log count), split into truly aligned and conflicting
    images when the hidden labels exist."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    bins = np.linspace(float(scores.min()), float(scores.max()) + 1e-9, 50)
    if conflicting is None:
        ax.hist(scores, bins=bins, color="#4c72b0", label="all images")
    else:
        ax.hist([scores[~conflicting], scores[conflicting]], bins=bins, stacked=True,
                color=["#4c72b0", "#dd8452"],
                label=["bias-aligned (hidden label)", "bias-conflicting (hidden label)"])
    ax.set_yscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _hex(rgb) -> str:
    return "#" + "".join(f"{int(round(255 * min(max(v, 0.0), 1.0))):02x}" for v in rgb)


#: Names of the rankings on the page.
RANKING_NAMES = {"gce": "GCE model", "trajectory": "GCE loss trajectory",
                 "erm": "early-stopped ERM", "jtt": "JTT error set",
                 "amplified": "bias-amplified GCE ensemble",
                 "knn": "feature neighbours' classes",
                 "sih": "SiH's biased classifier"}

#: The models behind the rankings, on the page.
MODEL_NAMES = {"gce": "GCE", "erm": "ERM", "amplified": "amplified GCE", "sih": "SiH"}


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.1f} %"


def _auroc(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def rankings_section(res: Discovery) -> dict:
    """The table of every ranking: its model, the selection rule's value and the size of
    the high side it found, the model's training accuracy and error set, and with hidden
    bias labels its precision at K, AUROC, precision at 100 / 600, recall at 600, average
    precision and error set precision; plus how the primary ranking was chosen."""
    scored = all(r.evaluation for r in res.rankings.values())
    rows = []
    for name, r in res.rankings.items():
        row = {"name": RANKING_NAMES[name] + f" ({name})", "primary": name == res.primary,
               "description": ranking_description(name, r.score),
               "model": MODEL_NAMES[r.model] + (
                   f", epoch {r.info['stopped_at']} of {r.info['epochs']} kept"
                   if r.info.get("stopped_at") else ""),
               "rule": f"{r.rule['eta']:.3f}", "minority": r.rule["minority"],
               "accuracy": f"{r.accuracy:.1f} %", "error_set": int(r.errors.sum()),
               "metrics": []}
        if scored:
            ev = r.evaluation
            row["metrics"] = ([_percent(ev["precision_at_k"]), _auroc(ev["auroc"])]
                             + [_percent(ev[f"precision_at_{k}"]) for k in PRECISION_AT]
                             + [_percent(ev[f"recall_at_{PRECISION_AT[-1]}"]),
                                _percent(ev["average_precision"]),
                                _percent(ev["error_set"]["precision"])])
        rows.append(row)
    columns = (["precision at K", "AUROC"] + [f"precision at {k}" for k in PRECISION_AT]
               + [f"recall at {PRECISION_AT[-1]}", "average precision",
                  "error set precision"]) if scored else []
    return {"rows": rows, "columns": columns, "rule": RULE,
            "reason": res.selection["reason"] if res.selection else "",
            "primary": RANKING_NAMES[res.primary],
            "conflicting": next(iter(res.rankings.values())).evaluation["conflicting"]
            if scored else None}


def sih_section(res: Discovery) -> dict | None:
    """What the page shows of the SiH run: its settings, seconds, biased classifier and
    the bias visualisation (its ranking is in the rankings table)."""
    if res.sih is None:
        return None
    sih, ranking = res.sih, res.rankings["sih"]
    return {"epochs": sih["settings"]["epochs"], "run": sih["run"],
            "batch_size": sih["settings"]["batch_size"],
            "seconds": f"{res.seconds['sih']:.1f}",
            "train_seconds": f"{sih['seconds']['run_train_seconds']:.1f}",
            "reused": sih["reused_finished_run"],
            "accuracy": f"{ranking.accuracy:.1f}", "error_set": int(ranking.errors.sum()),
            "primary": RANKING_NAMES[res.primary],
            "png": None if res.sih_png is None else data_uri(res.sih_png),
            "caption": sih["visualisation"].get("caption"),
            "missing": sih["visualisation"].get("error")}


def render_page(inp: DiscoveryInput, cfg: DiscoverConfig, res: Discovery) -> str:
    """``discover.html`` from the Jinja2 template ``templates/discover.html.j2``."""
    import jinja2

    data, names, y = inp.data, inp.class_names, res.y
    conflicting = (~data.aligned).numpy() if data.has_bias else None
    main = res.main
    described_score = ranking_description(res.primary, main.score)

    def tile(i: int) -> dict:
        i = int(i)
        return {"index": i, "uri": data_uri(image_png(data.x[i])), "y": names[y[i]],
                "pred": names[res.predictions[i]], "score": f"{res.scores[i]:.3g}",
                "rank": int(res.ranks[i]), "cluster": int(res.clusters[i]),
                "path": inp.paths[i] if inp.paths else None,
                "conflicting": None if conflicting is None else bool(conflicting[i])}

    top = min(cfg.top, len(data))
    clusters = [{**c, "fg_hex": _hex(c["foreground_colour"]),
                 "bg_hex": _hex(c["background_colour"]),
                 "tiles": [tile(i) for i in c["examples"]]} for c in res.cluster_summary]
    source = inp.source
    described = (f"{source['dataset']} {source.get('params', {})}"
                 + (f", training subset {source['train_subset']} (seed {source['seed']})"
                    if source.get("train_subset") else ""))
    env = jinja2.Environment(loader=jinja2.PackageLoader("debiaskit", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template("discover.html.j2").render(
        source=described, size=len(data), shape="x".join(map(str, data.image_shape)),
        classes=names, settings=cfg, score_description=described_score,
        cluster_description=CLUSTER_FEATURES[cfg.cluster_on],
        k=len(res.cluster_summary), biased_accuracy=f"{main.accuracy:.1f}",
        error_set=int(main.errors.sum()), sih=sih_section(res),
        rankings=rankings_section(res), primary_model=MODEL_NAMES[main.model],
        models={r.model for r in res.rankings.values()},
        evaluation=res.evaluation, precision_at=PRECISION_AT,
        histogram=data_uri(histogram_png(res.scores, conflicting, described_score)),
        top=[tile(i) for i in res.order[:top]], clusters=clusters,
        naming=naming_section(res.naming),
        seconds={k: f"{v:.1f}" for k, v in res.seconds.items()})
