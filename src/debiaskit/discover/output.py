"""The machine-readable result: ``discovery.json`` (format :data:`FORMAT`, read by
``debiaskit train --reweight-from``) and ``ranking.csv``."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict

import numpy as np
import torch

from ..methods.discovered import FORMAT, training_checksum
from .config import CLUSTER_FEATURES, RANKINGS, SCORES, DiscoverConfig
from .inputs import DiscoveryInput
from .ranking import Discovery, ranks_of


def result_json(inp: DiscoveryInput, cfg: DiscoverConfig, res: Discovery) -> dict:
    """The content of ``discovery.json``: indices are positions in the training set.
    The per-image fields (``scores``, ``order``, ``predictions``, ``error_set`` ...) are the
    primary ranking's (``ranking``), ``biased_model`` is its model; ``rankings`` holds every
    ranking computed (its description, model, per-image scores and predictions, accuracy,
    error set size, the selection rule's value and ``evaluation``), ``ranking_selection``
    how the primary one was chosen; with SiH, ``sih`` what was trained (settings, run
    folder, seconds, visualisation scores)."""
    data = inp.data
    top = min(cfg.top, len(data))
    main = res.main
    record = {
        "format": FORMAT,
        "settings": {**asdict(cfg), "clusters": cfg.clusters or data.num_classes,
                     "score_description": SCORES[cfg.score],
                     "cluster_description": CLUSTER_FEATURES[cfg.cluster_on],
                     "loss": f"generalized cross-entropy, q = {cfg.q} (LfF Eq. 2)"},
        "input": inp.source,
        "train": {"size": len(data), "image_shape": list(data.image_shape),
                  "classes": inp.class_names,
                  "class_counts": torch.bincount(data.y, minlength=data.num_classes).tolist(),
                  "checksum": training_checksum(data),
                  "bias_labels": "hidden; used only for 'evaluation'" if data.has_bias
                  else "none"},
        "biased_model": {"model": main.model, "train_accuracy": main.accuracy,
                         "error_set_size": int(main.errors.sum())},
        "ranking": res.primary,
        "ranking_selection": res.selection,
        "top": res.order[:top].tolist(),
        "order": res.order.tolist(),
        "scores": [round(float(s), 6) for s in res.scores],
        "ranks": res.ranks.tolist(),
        "predictions": res.predictions.tolist(),
        "error_set": np.flatnonzero(res.errors).tolist(),
        "clusters": res.clusters.tolist(),
        "cluster_summary": res.cluster_summary,
        "naming": None if res.naming is None else res.naming.record,  # (.naming)
        "evaluation": res.evaluation,
        "seconds": res.seconds,
    }
    record["rankings"] = {name: {
        "score": r.score, "description": ranking_description(name, r.score),
        "model": r.model, "primary": name == res.primary, **r.info,
        "train_accuracy": r.accuracy, "error_set_size": int(r.errors.sum()),
        "rule": r.rule, "evaluation": r.evaluation,
        "scores": [round(float(v), 6) for v in r.scores],
        "predictions": r.predictions.tolist()} for name, r in res.rankings.items()}
    if res.sih is not None:
        record["sih"] = res.sih
    return record


def ranking_description(name: str, score: str) -> str:
    """What a ranking's score is (:data:`RANKINGS`; ``gce`` by its ``--score``)."""
    return SCORES[score] if name == "gce" else RANKINGS[name]


def ranking_csv(inp: DiscoveryInput, res: Discovery) -> str:
    """``ranking.csv``: one row per image, by the primary rank: index, score, rank, class,
    the primary model's prediction, cluster, every other ranking's score and rank
    (``NAME_score,NAME_rank``, e.g. ``erm_score,erm_rank``), and the file path for
    folders."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    others = [(name, r.scores, ranks_of(r.order)) for name, r in res.rankings.items()
              if name != res.primary]
    writer.writerow(["index", "score", "rank", "y", "predicted", "cluster"]
                    + [f"{name}_{col}" for name, _, _ in others for col in ("score", "rank")]
                    + (["path"] if inp.paths else []))
    names, y = inp.class_names, inp.data.y.numpy()
    for r, i in enumerate(res.order):
        row = [int(i), f"{res.scores[i]:.6g}", r, names[y[i]], names[res.predictions[i]],
               int(res.clusters[i])]
        for _, scores, ranks in others:
            row += [f"{scores[i]:.6g}", int(ranks[i])]
        writer.writerow(row + ([inp.paths[i]] if inp.paths else []))
    return buf.getvalue()
