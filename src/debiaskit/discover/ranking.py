"""Rankings of the training images by how likely each is bias-conflicting, the result of a
discovery, and their scores against hidden bias labels (precision at K and at fixed k,
recall at k, AUROC, average precision, the error set, cluster NMI)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.dataset import BiasedDataset
from .config import PRECISION_AT


@dataclass
class Ranking:
    """One biased model's ranking of the training images: per image (indexed by position
    in the training set) its score (``score`` names it: ``ce``, ``ema``, ``sih`` of
    :data:`~.config.SCORES`, or the ranking's name) and the model's prediction;
    ``evaluation`` is filled by :func:`score_ranking` when bias labels exist. ``model``
    names the trained model it comes from (``gce``, ``erm``, ``amplified``, ``sih``) and
    ``net`` is that network (eval mode; SiH's: its biased classifier,
    :class:`~.sih.SiHBiasedNet`; amplified: its first second-stage network), kept
    for whatever looks at the model next; ``rule`` is the selection rule's value
    (:mod:`.selection`) and ``info`` what else its training recorded (ERM: the epoch
    kept)."""

    score: str
    scores: np.ndarray
    predictions: np.ndarray
    y: np.ndarray
    evaluation: dict | None = None
    model: str = "gce"
    net: object = field(default=None, repr=False, compare=False)
    rule: dict | None = None
    info: dict = field(default_factory=dict)

    @property
    def order(self) -> np.ndarray:
        """Image indices, most likely bias-conflicting first."""
        return rank(self.scores)

    @property
    def errors(self) -> np.ndarray:
        """The model's error set: the images it misclassifies (bool per image)."""
        return self.predictions != self.y

    @property
    def accuracy(self) -> float:
        """The model's training accuracy (%)."""
        return 100.0 * float((~self.errors).mean())


@dataclass
class Discovery:
    """A discovery's result before it is written: every ranking computed (name ->
    :class:`Ranking`: ``gce``, ``trajectory``, ``erm``, ``jtt``, ``amplified``, ``knn``, and
    ``sih`` with its run record ``sih`` and bias visualisation PNG ``sih_png``), the name of
    the ``primary`` one, whose per-image arrays (indexed by position in the training set)
    the result's top-level
    fields are, how it was chosen (``selection``: :func:`~.selection.choose_primary`'s
    record), and the clusters and summaries. Each ranking's trained network is
    ``rankings[name].net``; :attr:`networks` maps the names to them and :attr:`network` is
    the primary ranking's."""

    rankings: dict
    primary: str
    clusters: np.ndarray
    cluster_summary: list
    evaluation: dict | None
    seconds: dict
    colour: np.ndarray
    sih: dict | None = None
    sih_png: bytes | None = None
    selection: dict | None = None
    #: What the biased model looks at, per class and cluster (:class:`.naming.Naming`).
    naming: object | None = None

    @property
    def main(self) -> Ranking:
        """The primary ranking."""
        return self.rankings[self.primary]

    @property
    def networks(self) -> dict:
        """Each ranking's trained network (eval mode), by ranking name (rankings of one
        model share its network)."""
        return {name: r.net for name, r in self.rankings.items()}

    @property
    def network(self):
        """The primary ranking's trained network (eval mode)."""
        return self.main.net

    @property
    def scores(self) -> np.ndarray:
        return self.main.scores

    @property
    def order(self) -> np.ndarray:
        """Image indices, most likely bias-conflicting first."""
        return self.main.order

    @property
    def predictions(self) -> np.ndarray:
        return self.main.predictions

    @property
    def y(self) -> np.ndarray:
        return self.main.y

    @property
    def ranks(self) -> np.ndarray:
        """Each image's rank (0: most likely bias-conflicting)."""
        return ranks_of(self.order)

    @property
    def errors(self) -> np.ndarray:
        """The primary ranking's error set (:attr:`Ranking.errors`)."""
        return self.main.errors


def rank(scores: np.ndarray) -> np.ndarray:
    """Image indices by descending score (ties: lower index first)."""
    return np.argsort(-scores, kind="stable")


def score_ranking(order: np.ndarray, errors: np.ndarray, data: BiasedDataset,
                  scores: np.ndarray | None = None) -> dict | None:
    """How well a ranking and an error set find the truly bias-conflicting images, from
    the hidden bias labels (None without them).

    precision@k = |top k ∩ conflicting| / k and recall@k = |top k ∩ conflicting| /
    |conflicting| for k in :data:`PRECISION_AT`; ``precision_at_k``: precision at K, K =
    |conflicting| (the top K of ``order``, ties in score broken by ``order``: the lower
    index first), the same number as R-precision (``r_precision``); ``auroc``: the area
    under the ROC curve of ``scores`` (scikit-learn's ``roc_auc_score``, positive =
    conflicting), the probability that a random conflicting image scores above a random
    aligned one, ties counting one half (without ``scores``: of the order's ranks, no
    ties), a fraction in [0, 1] where the precisions and recalls are percentages;
    average precision over the whole ranking (scikit-learn, over the order); the
    error set's (the biased model's misclassified images) precision and recall.
    """
    if not data.has_bias:
        return None
    from sklearn.metrics import average_precision_score, roc_auc_score

    conflicting = (~data.aligned).numpy()
    total = int(conflicting.sum())
    hits = np.cumsum(conflicting[order])
    out = {"conflicting": total, "images": len(order)}
    if 0 < total < len(order):
        by = -ranks_of(order) if scores is None else np.asarray(scores, dtype=np.float64)
        out["auroc"] = float(roc_auc_score(conflicting, by))
    else:
        out["auroc"] = None
    for k in PRECISION_AT:
        kk = min(k, len(order))
        out[f"precision_at_{k}"] = 100.0 * float(hits[kk - 1]) / kk
        out[f"recall_at_{k}"] = 100.0 * float(hits[kk - 1]) / total if total else None
    if total:
        out["r_precision"] = 100.0 * float(hits[total - 1]) / total  # at k = |conflicting|
        out["precision_at_k"] = out["r_precision"]
        out["average_precision"] = 100.0 * float(
            average_precision_score(conflicting, -ranks_of(order)))
    else:
        out["r_precision"] = out["precision_at_k"] = out["average_precision"] = None
    size = int(errors.sum())
    caught = int((errors & conflicting).sum())
    out["error_set"] = {"size": size,
                        "precision": 100.0 * caught / size if size else None,
                        "recall": 100.0 * caught / total if total else None}
    return out


def score_discovery(order: np.ndarray, errors: np.ndarray, clusters: np.ndarray,
                    data: BiasedDataset, scores: np.ndarray | None = None) -> dict | None:
    """:func:`score_ranking` of the primary ranking, plus the normalised mutual
    information between the cluster ids and the bias values, and between the cluster ids
    and the classes (None without bias labels)."""
    out = score_ranking(order, errors, data, scores)
    if out is None:
        return None
    from sklearn.metrics import normalized_mutual_info_score

    out["cluster_nmi_bias"] = float(normalized_mutual_info_score(data.b.numpy(), clusters))
    out["cluster_nmi_class"] = float(normalized_mutual_info_score(data.y.numpy(), clusters))
    return out


def ranks_of(order: np.ndarray) -> np.ndarray:
    """Each image's position in ``order`` (0: first)."""
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    return ranks
