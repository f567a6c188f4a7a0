"""A discovery's settings (:class:`DiscoverConfig`), their checks, the names of the files it
writes and the output-folder rule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.folder_writer import check_empty_folder
from ..errors import ConfigError, unknown_name
from ..models import MODELS


RANKING, PAGE, LABELS = "ranking.csv", "discover.html", "labels.csv"
#: The SiH run folder inside the discovery folder, and the bias visualisation's PNG.
SIH_DIR, SIH_PNG = "sih", "sih_bias.png"

#: How an image's bias-conflicting likelihood is scored (``--score``).
SCORES = {
    "ce": "cross-entropy -log p_y of the trained biased model on each training image",
    "ema": "LfF's per-sample moving average (decay --ema) of the biased model's "
           "cross-entropy during training",
    "sih": "cross-entropy -log p_y of SiH's biased classifier (the head on its bias "
           "encoder's latent mean) on each training image (needs --sih; the same as "
           "--ranking sih)",
}

#: The rankings a discovery can compute (``--rankings``), in the order ties of the
#: selection rule are broken; the model each one comes from is in :data:`RANKING_MODELS`.
RANKINGS = {
    "gce": "the GCE-trained biased model's cross-entropy -log p_y on each training image "
           "after its last epoch (or, with --score ema, LfF's moving average of it)",
    "trajectory": "the GCE-trained biased model's loss trajectory: each image's "
                  "cross-entropy when its batch is visited, averaged over every epoch",
    "erm": "an early-stopped ERM model's cross-entropy -log p_y on each training image "
           "(JTT's identification model; stopped at the epoch the selection rule prefers)",
    "jtt": "that ERM model's error set first (JTT: the images it misclassifies), then the "
           "rest, each part by the ERM model's cross-entropy",
    "amplified": "a bias-amplified GCE ensemble's cross-entropy -log (mean p_y) on each "
                 "training image: trained without the --amplify-drop share of each class "
                 "a first GCE ensemble scores highest, so those are scored by models that "
                 "never saw them",
    "knn": "the share of each training image's --knn-k nearest neighbours (cosine, in "
           "the GCE model's penultimate features) whose class differs from its own, ties "
           "by the GCE model's cross-entropy (only when named in --rankings)",
    "sih": "cross-entropy -log p_y of SiH's biased classifier (the head on its bias "
           "encoder's latent mean) on each training image (needs --sih)",
}

#: The trained model each ranking is computed from.
RANKING_MODELS = {"gce": "gce", "trajectory": "gce", "erm": "erm", "jtt": "erm",
                  "amplified": "amplified", "knn": "gce", "sih": "sih"}

#: Rankings computed only when named in ``--rankings`` (``sih`` also with ``--sih``).
OPT_IN = ("knn", "sih")

#: ``--ranking auto``: the primary ranking is chosen by the label-free separation rule
#: (:mod:`.selection`).
AUTO = "auto"

#: Image sides (height, width) SiH's MLP VAE is built for (MNIST, Colored MNIST).
SIH_IMAGE_SIZE = (28, 28)

#: Training images the SiH bias visualisation draws from (a seeded random pool), how
#: many of them it visualises for its scores, and the columns of its PNG grid.
SIH_POOL, SIH_VISUALISED, SIH_COLUMNS = 1000, 100, 12

#: Brightness above which a pixel counts as foreground for the visualisation's shape
#: IoU (``debiaskit explain bias``'s default).
SIH_IOU_THRESHOLD = 0.2

#: One line under the bias visualisation on the page.
SIH_CAPTION = ("SiH's bias visualisation on training images: each column is an image, its "
               "VAE reconstruction, the reconstruction after DeepFool moves only the bias "
               "latent across the biased classifier's boundary to the class named above it, "
               "and the reconstruction with another image's bias latent swapped in "
               "(DisEnt-style); what changes from the second row to the third is what the "
               "biased classifier relies on.")

#: What the clusters are computed on (``--cluster-on``).
CLUSTER_FEATURES = {
    "features": "the biased model's penultimate features, each image's scaled to unit "
                "length",
    "colour": "mean RGB colour of each image's foreground pixels and of its background "
              "pixels (foreground: brightness above the threshold)",
}

#: The k of the precision / recall at k that a scored discovery reports (besides the
#: precision at K, K = the number of conflicting images).
PRECISION_AT = (100, 600)

#: Largest side (pixels) at which the page shows an image; small images are upscaled.
SHOW_SIZE = 64


@dataclass
class DiscoverConfig:
    """The settings of one discovery (defaults: LfF's biased model, briefly trained).

    ``epochs``, ``batch_size``, ``lr`` (Adam) and ``q`` (GCE) train the biased network
    ``model``; ``score`` names the ranking score (:data:`SCORES`) and ``ema`` its decay;
    ``cluster_on`` (:data:`CLUSTER_FEATURES`), ``clusters`` (None: one per class) and
    ``threshold`` (foreground brightness in [0, 1]; None: per image, halfway between its
    darkest and brightest pixel) set the clustering; ``rankings`` names the rankings to
    compute (:data:`RANKINGS`; None: all but the :data:`OPT_IN` ones; ``sih`` always with
    ``sih``), ``ranking`` the primary one (``auto``: the separation rule chooses) and
    ``erm_epochs`` the most epochs of the ERM model behind ``erm`` and ``jtt`` (it keeps the
    epoch the rule prefers); ``ensemble`` GCE models per stage, ``amplify_drop`` (the
    share of each class left out) and ``amplify_epochs`` (the second stage's epochs) make
    the ``amplified`` ranking (:func:`~.biased.train_amplified`), ``knn_k`` the neighbours
    of the ``knn`` ranking (:func:`~.biased.neighbour_disagreement`); ``top`` images are
    listed as the top of the ranking and shown on the page, ``examples`` per cluster;
    ``seed`` seeds the network, the batches, k-means and the example choice. ``sih`` also
    trains SiH for ``sih_epochs`` epochs (seeded by ``seed``; SiH's own batch size and
    hyper-parameters) for a second ranking and its bias visualisation.
    """

    epochs: int = 3
    model: str = "mlp"
    batch_size: int = 256
    lr: float = 1e-3
    q: float = 0.7
    score: str = "ce"
    ema: float = 0.7
    cluster_on: str = "features"
    clusters: int | None = None
    threshold: float | None = None
    top: int = 100
    examples: int = 12
    seed: int = 0
    sih: bool = False
    sih_epochs: int = 10
    rankings: tuple[str, ...] | None = None
    ranking: str = AUTO
    erm_epochs: int = 3
    ensemble: int = 3
    amplify_drop: float = 0.1
    amplify_epochs: int = 10
    knn_k: int = 20

    def ranking_names(self) -> tuple[str, ...]:
        """The rankings to compute, in :data:`RANKINGS` order: ``rankings``, or all but the
        :data:`OPT_IN` ones; ``sih`` always with ``sih``."""
        wanted = (set(self.rankings) if self.rankings is not None
                  else set(RANKINGS) - set(OPT_IN))
        if self.sih:
            wanted.add("sih")
        return tuple(name for name in RANKINGS if name in wanted)

    def primary_choice(self) -> str:
        """``auto`` or the named primary ranking (``--score sih`` names ``sih``)."""
        return "sih" if self.score == "sih" else self.ranking


def check_config(cfg: DiscoverConfig) -> None:
    """Range checks that need no data."""
    if cfg.score not in SCORES:
        raise unknown_name("score", cfg.score, SCORES)
    if cfg.score == "sih" and not cfg.sih:
        raise ConfigError("--score sih ranks by SiH's biased classifier, which only --sih "
                          "trains; add --sih or choose --score ce or ema")
    if cfg.rankings is not None:
        if not cfg.rankings:
            raise ConfigError("--rankings names no ranking; give some of "
                              + ",".join(RANKINGS))
        for name in cfg.rankings:
            if name not in RANKINGS:
                raise unknown_name("ranking", name, RANKINGS)
        if "sih" in cfg.rankings and not cfg.sih:
            raise ConfigError("--rankings sih ranks by SiH's biased classifier, which only "
                              "--sih trains; add --sih or leave sih out of --rankings")
    if cfg.ranking != AUTO and cfg.ranking not in RANKINGS:
        raise unknown_name("ranking", cfg.ranking, {AUTO: "the separation rule", **RANKINGS})
    if cfg.score == "sih" and cfg.ranking not in (AUTO, "sih"):
        raise ConfigError(f"--score sih makes SiH's ranking the primary one and --ranking "
                          f"names {cfg.ranking}; give one of them")
    primary = cfg.primary_choice()
    if primary != AUTO and primary not in cfg.ranking_names():
        raise ConfigError(f"--ranking {primary} is not among the rankings computed ("
                          + ",".join(cfg.ranking_names()) + "); "
                          + ("add --sih, which trains SiH" if primary == "sih"
                             else "add it to --rankings"))
    if cfg.sih_epochs < 1:
        raise ConfigError(f"--sih-epochs must be >= 1, got {cfg.sih_epochs}")
    if cfg.cluster_on not in CLUSTER_FEATURES:
        raise unknown_name("cluster feature", cfg.cluster_on, CLUSTER_FEATURES)
    if cfg.model not in MODELS:
        raise unknown_name("model", cfg.model, MODELS)
    for key in ("epochs", "batch_size", "top", "examples", "erm_epochs", "ensemble",
                "amplify_epochs", "knn_k"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(cfg, key)}")
    if cfg.clusters is not None and cfg.clusters < 2:
        raise ConfigError(f"--clusters must be >= 2, got {cfg.clusters}")
    if not 0.0 < cfg.q <= 1.0:
        raise ConfigError(f"--q must be in (0, 1], got {cfg.q}")
    if not 0.0 <= cfg.ema < 1.0:
        raise ConfigError(f"--ema must be in [0, 1), got {cfg.ema}")
    if not 0.0 < cfg.amplify_drop < 0.5:
        raise ConfigError(f"--amplify-drop must be in (0, 0.5), got {cfg.amplify_drop}")
    if not cfg.lr > 0:
        raise ConfigError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.threshold is not None and not 0.0 <= cfg.threshold < 1.0:
        raise ConfigError(f"--threshold must be in [0, 1), got {cfg.threshold}")


def check_out_dir(out, sih: bool = False) -> Path:
    """``out`` must be new or an empty folder (a discovery never overwrites); with ``sih``
    it may also hold only the ``sih`` run folder of an interrupted discovery (resumed)."""
    out = Path(out)
    if out.exists() and out.is_dir() and sih and all(
            p.name == SIH_DIR and p.is_dir() for p in out.iterdir()):
        return out
    return check_empty_folder(out, "discoveries")
