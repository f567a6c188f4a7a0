"""The ranking variants of a discovery, from the biased models the literature uses to
find bias-conflicting images, and the choice of the primary one.

- ``gce``: LfF's biased model, trained with the generalized cross-entropy (Eq. 2); its
  cross-entropy after the last epoch (``score=ema``: LfF's moving average of it);
- ``trajectory``: the same GCE run's loss trajectory, each image's cross-entropy when its
  batch is visited averaged over all epochs (the epoch ensemble of ECS, Zhao et al. 2023,
  on the loss): an image fitted only late, by memorisation, keeps the high loss of its
  early epochs;
- ``erm``: JTT's identification model (Liu et al. 2021), trained with plain cross-entropy
  for at most ``erm_epochs`` epochs and stopped early at the epoch whose cross-entropy
  separates best (:mod:`.selection`), a label-free stand-in for JTT's choice of T on
  bias-labelled validation data; its cross-entropy;
- ``jtt``: that model's error set first, then the rest, each by the cross-entropy
  (:func:`~.biased.jtt_scores`);
- ``amplified``: a bias-amplified GCE ensemble (:func:`~.biased.train_amplified`): a
  second ensemble trained without the share of each class a first ensemble (whose first
  model is ``gce``'s) scores highest; the cross-entropy of its mean probability;
- ``knn``: the share of each image's nearest neighbours in the GCE model's feature space
  that belong to another class (:func:`~.biased.neighbour_disagreement`), ties by the GCE
  model's cross-entropy; computed only when named;
- ``sih``: SiH's biased classifier (:mod:`.sih`).
"""

from __future__ import annotations

import time

from .biased import (biased_outputs, jtt_scores, knn_scores, neighbour_disagreement,
                     train_amplified, train_model)
from .config import RANKING_MODELS, DiscoverConfig
from .inputs import DiscoveryInput
from .ranking import Ranking
from .selection import choose_primary, separation, split_separation
from .sih import train_sih


def compute_rankings(inp: DiscoveryInput, cfg: DiscoverConfig, device, sih_dir,
                     seconds: dict) -> tuple[dict, dict | None, bytes | None]:
    """Train the models behind ``cfg.ranking_names()`` and rank the training images by
    each: returns the rankings (name -> :class:`Ranking`, in :data:`RANKINGS` order) and,
    with SiH, its run record and bias visualisation PNG (else None, None): the GCE model
    (``gce``: its cross-entropy, or its EMA with ``score=ema``; ``trajectory``: its
    cross-entropy at each visit averaged over the epochs), the ERM model stopped early by
    the separation rule (``erm``: its cross-entropy; ``jtt``: its error set first), the
    bias-amplified ensemble (``amplified``), the GCE model's feature neighbours (``knn``),
    SiH's biased classifier (``sih``). Each ranking's ``rule`` is its value of the
    separation rule (:func:`~.selection.separation` of its scores; ``jtt``:
    :func:`~.selection.split_separation` of the ERM model's cross-entropy at its error
    set). Adds the seconds spent to ``seconds``."""
    data, names = inp.data, cfg.ranking_names()
    models = {RANKING_MODELS[n] for n in names}
    y = data.y.numpy()
    rankings, sih, sih_png, gce = {}, None, None, None
    if "gce" in models:
        t0 = time.perf_counter()
        gce = train_model(data, cfg, "gce", device)
        seconds["train"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        ce, pred, feats = biased_outputs(gce.net, data, "knn" in names, device)
        score = "ema" if cfg.score == "ema" else "ce"
        if "gce" in names:
            rankings["gce"] = Ranking(score, (ce if score == "ce" else gce.ema).double().numpy(),
                                      pred.numpy(), y, model="gce", net=gce.net,
                                      info={"epochs": gce.epochs})
        if "trajectory" in names:
            rankings["trajectory"] = Ranking("trajectory", gce.trajectory.double().numpy(),
                                             pred.numpy(), y, model="gce", net=gce.net,
                                             info={"epochs": gce.epochs})
        if "knn" in names:
            rankings["knn"] = Ranking("knn", knn_scores(
                neighbour_disagreement(feats, data.y, cfg.knn_k), ce.double().numpy(),
                cfg.knn_k), pred.numpy(), y, model="gce", net=gce.net,
                info={"epochs": gce.epochs, "k": cfg.knn_k})
        seconds["score"] = time.perf_counter() - t1
    if "erm" in models:
        t = time.perf_counter()
        erm = train_model(data, cfg, "erm", device, epochs=cfg.erm_epochs, stop_early=True)
        ce, pred, _ = biased_outputs(erm.net, data, False, device)
        ce, pred = ce.double().numpy(), pred.numpy()
        info = {"epochs": erm.epochs, "stopped_at": erm.stopped_at,
                "rule_by_epoch": erm.rule_by_epoch}
        if "erm" in names:
            rankings["erm"] = Ranking("erm", ce, pred, y, model="erm", net=erm.net, info=info)
        if "jtt" in names:
            rankings["jtt"] = Ranking("jtt", jtt_scores(ce, pred != y), pred, y, model="erm",
                                      net=erm.net, info=info,
                                      rule=split_separation(ce, pred != y))
        seconds["train_erm"] = time.perf_counter() - t
    if "amplified" in names:
        t = time.perf_counter()
        amp = train_amplified(data, cfg, device, first=gce)
        rankings["amplified"] = Ranking("amplified", amp.scores, amp.predictions, y,
                                        model="amplified", net=amp.net, info=amp.info)
        seconds["train_amplified"] = time.perf_counter() - t
    if "sih" in names:
        t = time.perf_counter()
        rankings["sih"], sih, sih_png = train_sih(inp, cfg, sih_dir, device)
        seconds["sih"] = time.perf_counter() - t
    for r in rankings.values():
        if r.rule is None:
            r.rule = separation(r.scores)
    return rankings, sih, sih_png


def select_primary(rankings: dict, cfg: DiscoverConfig) -> dict:
    """The primary ranking chosen from the rankings' rule values under ``cfg.ranking``
    (or ``score=sih``): :func:`~.selection.choose_primary`'s record."""
    return choose_primary({name: r.rule for name, r in rankings.items()},
                          cfg.primary_choice())
