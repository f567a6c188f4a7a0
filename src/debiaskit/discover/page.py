"""``discover.html``: a self-contained page (images as PNG data URIs, no scripts) rendered
from the Jinja2 template ``templates/discover.html.j2``."""

from __future__ import annotations

import io

import numpy as np
import torch

from ..explain.images import data_uri
from .config import CLUSTER_FEATURES, PRECISION_AT, SCORES, SHOW_SIZE, DiscoverConfig
from .figures import naming_section
from .inputs import DiscoveryInput
from .ranking import Discovery


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
RANKING_NAMES = {"gce": "GCE model", "sih": "SiH's biased classifier"}


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.1f} %"


def sih_section(res: Discovery) -> dict | None:
    """What the page shows of the SiH run: its settings, seconds, biased classifier, the
    two rankings side by side (with hidden bias labels) and the bias visualisation."""
    if res.sih is None:
        return None
    sih, ranking = res.sih, res.rankings["sih"]
    rows = []
    if all(r.evaluation for r in res.rankings.values()):
        keys = ([(f"precision at {k}", f"precision_at_{k}") for k in PRECISION_AT]
                + [(f"recall at {PRECISION_AT[-1]}", f"recall_at_{PRECISION_AT[-1]}"),
                   ("R-precision", "r_precision"), ("average precision", "average_precision")])
        rows = [{"label": label, "values": [_percent(r.evaluation[key])
                                            for r in res.rankings.values()]}
                for label, key in keys]
        rows.append({"label": "error set: size, precision", "values": [
            f"{r.evaluation['error_set']['size']}, "
            f"{_percent(r.evaluation['error_set']['precision'])}"
            for r in res.rankings.values()]})
    return {"epochs": sih["settings"]["epochs"], "run": sih["run"],
            "batch_size": sih["settings"]["batch_size"],
            "seconds": f"{res.seconds['sih']:.1f}",
            "train_seconds": f"{sih['seconds']['run_train_seconds']:.1f}",
            "reused": sih["reused_finished_run"],
            "accuracy": f"{ranking.accuracy:.1f}", "error_set": int(ranking.errors.sum()),
            "primary": RANKING_NAMES[res.primary],
            "columns": [RANKING_NAMES[name] + (" (primary)" if name == res.primary else "")
                        for name in res.rankings], "rows": rows,
            "png": None if res.sih_png is None else data_uri(res.sih_png),
            "caption": sih["visualisation"].get("caption"),
            "missing": sih["visualisation"].get("error")}


def render_page(inp: DiscoveryInput, cfg: DiscoverConfig, res: Discovery) -> str:
    """``discover.html`` from the Jinja2 template ``templates/discover.html.j2``."""
    import jinja2

    data, names, y = inp.data, inp.class_names, res.y
    conflicting = (~data.aligned).numpy() if data.has_bias else None
    gce = res.rankings["gce"]

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
        classes=names, settings=cfg, score_description=SCORES[cfg.score],
        cluster_description=CLUSTER_FEATURES[cfg.cluster_on],
        k=len(res.cluster_summary), biased_accuracy=f"{gce.accuracy:.1f}",
        error_set=int(gce.errors.sum()), sih=sih_section(res),
        evaluation=res.evaluation, precision_at=PRECISION_AT,
        histogram=data_uri(histogram_png(res.scores, conflicting, SCORES[cfg.score])),
        top=[tile(i) for i in res.order[:top]], clusters=clusters,
        naming=naming_section(res.naming),
        seconds={k: f"{v:.1f}" for k, v in res.seconds.items()})
