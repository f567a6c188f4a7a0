"""Bias discovery without bias labels: which training images conflict with the shortcut,
and what the shortcut is.

``debiaskit discover`` takes images and class labels only (a folder, or a built-in protocol
whose bias labels are hidden from every step and used only to score the result) and:

1. trains a label-free biased model on all training images with LfF's generalized
   cross-entropy (Eq. 2, ``GCE = (1 - p_y^q) / q``, q = 0.7), which amplifies the easiest
   cue, so that the model follows the shortcut;
2. scores every training image by how likely it is bias-conflicting: ``ce`` (default) is
   the trained biased model's cross-entropy ``-log p_y`` on the image; ``ema`` is LfF's
   per-sample exponential moving average of that cross-entropy during training
   (``ema <- a ema + (1 - a) CE`` at each visit, the first visit storing CE). Images the
   biased model cannot fit go against the shortcut; the ranking orders them by score,
   highest first (rank 0);
3. clusters what the biased model may rely on with k-means (scikit-learn; k = number of
   classes by default): ``colour`` (default) clusters per-image colour statistics, the
   mean RGB colour of the foreground pixels and of the background pixels, where a pixel is
   foreground when its brightness (mean of R, G, B in [0, 1]) is above a threshold
   (default per image: halfway between its darkest and brightest pixel); ``features``
   clusters the biased model's penultimate features. Each cluster reports its size, the
   biased model's training accuracy on it, its dominant class and example images;
4. with hidden bias labels, scores the discovery: precision at k (the share of truly
   bias-conflicting images among the k top-ranked), recall at k, average precision, the
   error set's precision and recall, and the normalised mutual information (NMI) between
   the clusters and the true bias values (and, for contrast, the classes);
5. with ``sih`` (MNIST-size 28 x 28 images only, where SiH's MLP VAE fits), also trains
   SiH (:mod:`debiaskit.methods.sih`) label-free with the library's trainer into the run
   folder ``OUT/sih`` (selection "last", ``sih_epochs`` epochs, bias labels dropped), scores
   every training image by the cross-entropy of SiH's biased classifier (the head on its
   bias encoder's latent mean) as a second ranking, and renders SiH's bias visualisation
   (:mod:`debiaskit.explain.bias`: DeepFool on the bias latent, next to a DisEnt-style
   swap) on training images. The GCE ranking stays the primary one (``scores``,
   ``order``, error set, clusters' top counts) unless ``score`` is ``sih``; both rankings
   are scored side by side.

Everything but the SiH run is computed before anything is written; the output folder
(new or empty) is then written whole through a temporary folder renamed into place:
``discovery.json``, ``ranking.csv`` and ``discover.html`` (a self-contained page: images as
base64 PNG data URIs, no scripts, no external resources), plus ``labels.csv`` when the
classes came from sub-folders (so that ``debiaskit train --dataset folder`` can read the
same images) and, with ``sih``, ``sih_bias.png``. The SiH run is a normal run directory
written by the trainer while it trains: until the rest is written, ``OUT`` holds only
``sih/``, and the same command run again resumes it (or reuses it once finished); the
finished run is then moved into the temporary folder before the rename.
``debiaskit train --reweight-from DIR`` trains a debiased model from the result
(:mod:`debiaskit.methods.discovered`).
"""

from __future__ import annotations

import base64
import csv
import io
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import runs
from ..data.dataset import BiasedDataset
from ..data.loader import InMemoryLoader, as_float_images
from ..data.protocols import build_data
from ..errors import ConfigError, DataError, DebiaskitError, unknown_name
from ..losses import PerSampleEMA, generalized_cross_entropy
from ..methods.base import adam
from ..methods.discovered import DISCOVERY, FORMAT, training_checksum
from ..models import MODELS, build_model

RANKING, PAGE, LABELS = "ranking.csv", "discover.html", "labels.csv"
#: The SiH run folder inside the discovery folder, and the bias visualisation's PNG.
SIH_DIR, SIH_PNG = "sih", "sih_bias.png"

#: How an image's bias-conflicting likelihood is scored (``--score``).
SCORES = {
    "ce": "cross-entropy -log p_y of the trained biased model on each training image",
    "ema": "LfF's per-sample moving average (decay --ema) of the biased model's "
           "cross-entropy during training",
    "sih": "cross-entropy -log p_y of SiH's biased classifier (the head on its bias "
           "encoder's latent mean) on each training image (needs --sih)",
}

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
    "colour": "mean RGB colour of each image's foreground pixels and of its background "
              "pixels (foreground: brightness above the threshold)",
    "features": "the biased model's penultimate features",
}

#: The k of the precision / recall at k that a scored discovery reports.
PRECISION_AT = (100, 600)

#: File types read from class sub-folders.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: Largest side (pixels) at which the page shows an image; small images are upscaled.
SHOW_SIZE = 64


@dataclass
class DiscoverConfig:
    """The settings of one discovery (defaults: LfF's biased model, briefly trained).

    ``epochs``, ``batch_size``, ``lr`` (Adam) and ``q`` (GCE) train the biased network
    ``model``; ``score`` names the ranking score (:data:`SCORES`) and ``ema`` its decay;
    ``cluster_on`` (:data:`CLUSTER_FEATURES`), ``clusters`` (None: one per class) and
    ``threshold`` (foreground brightness in [0, 1]; None: per image, halfway between its
    darkest and brightest pixel) set the clustering; ``top`` images are listed as the top
    of the ranking and shown on the page, ``examples`` per cluster; ``seed`` seeds the
    network, the batches, k-means and the example choice. ``sih`` also trains SiH for
    ``sih_epochs`` epochs (seeded by ``seed``; SiH's own batch size and hyper-parameters)
    for a second ranking and its bias visualisation.
    """

    epochs: int = 3
    model: str = "mlp"
    batch_size: int = 256
    lr: float = 1e-3
    q: float = 0.7
    score: str = "ce"
    ema: float = 0.7
    cluster_on: str = "colour"
    clusters: int | None = None
    threshold: float | None = None
    top: int = 100
    examples: int = 12
    seed: int = 0
    sih: bool = False
    sih_epochs: int = 10


def check_config(cfg: DiscoverConfig) -> None:
    """Range checks that need no data."""
    if cfg.score not in SCORES:
        raise unknown_name("score", cfg.score, SCORES)
    if cfg.score == "sih" and not cfg.sih:
        raise ConfigError("--score sih ranks by SiH's biased classifier, which only --sih "
                          "trains; add --sih or choose --score ce or ema")
    if cfg.sih_epochs < 1:
        raise ConfigError(f"--sih-epochs must be >= 1, got {cfg.sih_epochs}")
    if cfg.cluster_on not in CLUSTER_FEATURES:
        raise unknown_name("cluster feature", cfg.cluster_on, CLUSTER_FEATURES)
    if cfg.model not in MODELS:
        raise unknown_name("model", cfg.model, MODELS)
    for key in ("epochs", "batch_size", "top", "examples"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(cfg, key)}")
    if cfg.clusters is not None and cfg.clusters < 2:
        raise ConfigError(f"--clusters must be >= 2, got {cfg.clusters}")
    if not 0.0 < cfg.q <= 1.0:
        raise ConfigError(f"--q must be in (0, 1], got {cfg.q}")
    if not 0.0 <= cfg.ema < 1.0:
        raise ConfigError(f"--ema must be in [0, 1), got {cfg.ema}")
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
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not empty; choose a new --out folder "
                          "(discoveries never overwrite)")
    return out


# ---------------------------------------------------------------------------------------
# Input: a folder of images, or a built-in protocol with its bias labels hidden


@dataclass
class DiscoveryInput:
    """The training images to discover on. ``data`` may carry bias labels, which only
    :func:`score_discovery` reads; ``paths`` are the images' files (folders only);
    ``source`` says how to build the same training set again (for ``debiaskit train``);
    ``labels_csv`` is the CSV text to write beside the result (class sub-folders);
    ``eval_splits`` names the evaluation splits ``debiaskit train`` would report on with
    this data, and ``data_dir`` / ``download`` where a built-in protocol's files come from
    (both read by ``--sih``, which trains SiH with the library's trainer)."""

    data: BiasedDataset
    class_names: list[str]
    source: dict
    paths: list[str] | None = None
    labels_csv: str | None = None
    eval_splits: tuple[str, ...] = ()
    data_dir: str | None = None
    download: bool = False


def _need_two_classes(data: BiasedDataset, class_names, where: str) -> None:
    present = torch.unique(data.y).tolist()
    if len(present) < 2:
        name = class_names[present[0]] if present else "none"
        raise DataError(f"{where} names only one class ({name}); discovery compares classes, "
                        "give images of at least two classes")


def _resolve_labels(folder: Path, labels) -> Path:
    """The labels CSV: as given (relative to the working folder), else inside ``folder``."""
    given = Path(labels).expanduser()
    if given.is_file() or given.is_absolute():
        return given.resolve()
    inside = folder / given
    return inside.resolve() if inside.is_file() else given.resolve()


def load_folder_input(folder, labels=None, image_size=None) -> DiscoveryInput:
    """The images of ``folder`` with their classes: from the CSV ``labels`` (columns
    ``path,y``, paths relative to ``folder``; read by the ``folder`` protocol, whose other
    columns it keeps: a ``bias`` column is hidden and only scores the discovery), else
    from one sub-folder per class (sub-folder name = class name)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist; name the folder holding "
                        "the images")
    folder = folder.resolve()
    if labels is not None:
        from ..data.sources.folder import read_csv

        csv_path = _resolve_labels(folder, labels)
        if not csv_path.is_file():
            raise DataError(f"labels file {labels} not found (looked in the working folder "
                            f"and in {folder}); give a CSV with columns path,y")
        params = {"path": str(folder), "csv": str(csv_path)}
        if image_size is not None:
            params["image_size"] = image_size
        bundle = build_data("folder", **params)
        data = bundle.train
        rows = [r for r in read_csv(csv_path)
                if ((r.get("split") or "train").strip() or "train") == data.meta["split"]]
        classes = list(data.meta["classes"])
        _need_two_classes(data, classes, str(csv_path))
        return DiscoveryInput(data, classes, {"dataset": "folder", "params": bundle.params},
                              paths=[r["path"].strip() for r in rows],
                              eval_splits=tuple(bundle.evals))
    return _subfolder_input(folder, image_size)


def _subfolder_input(folder: Path, image_size) -> DiscoveryInput:
    """One sub-folder per class; images are read as the ``folder`` protocol reads a CSV's
    (RGB, resized when ``image_size`` is given), in sorted order."""
    from ..data.sources.folder import _class_list, _label, _read_image, _size

    entries = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(sub.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                entries.append((f.relative_to(folder).as_posix(), sub.name))
    if not entries:
        raise DataError(f"{folder} holds no images in class sub-folders; put each class's "
                        "images in a sub-folder named after it, or give --labels CSV")
    rows = [{"y": name} for _, name in entries]
    classes = _class_list(rows, None, folder / "no-classes-file")
    size = _size(image_size)
    images, labels = [], []
    for rel, name in entries:
        labels.append(_label(name, classes, str(folder / rel)))
        image = _read_image(folder / rel, "RGB", size, str(folder / rel), "image")
        if images and image.shape != images[0].shape:
            raise DataError(f"{folder / rel}: image is {image.shape[1]}x{image.shape[0]}, the "
                            f"first was {images[0].shape[1]}x{images[0].shape[0]}; pass "
                            "--image-size to resize them")
        images.append(image)
    x = torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)))
    data = BiasedDataset(name="folder/train", x=x, y=torch.tensor(labels, dtype=torch.int64),
                         num_classes=len(classes), meta={"split": "train"})
    _need_two_classes(data, list(classes), str(folder))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "y"])
    writer.writerows(entries)
    params = {"path": str(folder)}
    if image_size is not None:
        params["image_size"] = image_size
    return DiscoveryInput(data, list(classes), {"dataset": "folder", "params": params,
                                                "classes_from": "sub-folders", "csv":
                                                f"{LABELS} in the discovery folder"},
                          paths=[rel for rel, _ in entries], labels_csv=buf.getvalue())


def load_protocol_input(name: str, data_dir=None, download: bool = False,
                        params: dict | None = None, train_subset: int | None = None,
                        seed: int = 0) -> DiscoveryInput:
    """The training set of protocol ``name`` (a seeded random ``train_subset`` of it as
    ``debiaskit train --train-subset N --seed S`` takes). Its bias labels stay on the
    dataset but only :func:`score_discovery` reads them."""
    from ..train import random_subset

    if train_subset is not None and train_subset < 1:
        raise ConfigError(f"--train-subset must be >= 1, got {train_subset}")
    bundle = build_data(name, data_dir, download, **(params or {}))
    data = random_subset(bundle.train, train_subset, seed)
    classes = [str(c) for c in data.meta.get("classes", range(data.num_classes))]
    source = {"dataset": name, "params": bundle.params, "train_subset": train_subset,
              "seed": seed}
    return DiscoveryInput(data, classes, source, eval_splits=tuple(bundle.evals),
                          data_dir=None if data_dir is None else str(data_dir),
                          download=download)


# ---------------------------------------------------------------------------------------
# The biased model, the scores, the clusters


def train_biased_model(data: BiasedDataset, cfg: DiscoverConfig, device="cpu"):
    """Train ``cfg.model`` with GCE (LfF Eq. 2) on ``data`` (bias labels never read);
    returns the network (eval mode) and the per-sample EMA of its cross-entropy."""
    data = data.without_bias()
    torch.manual_seed(cfg.seed)
    net = build_model(cfg.model, data.image_shape, data.num_classes).to(device)
    opt = adam(net, cfg.lr)
    loader = InMemoryLoader(data, cfg.batch_size, shuffle=True, seed=cfg.seed, device=device)
    ema = PerSampleEMA(data.y.to(device), data.num_classes, cfg.ema)
    net.train()
    for epoch in range(cfg.epochs):
        for batch in loader.epoch(epoch):
            logits = net(batch.x)
            ce = F.cross_entropy(logits, batch.y, reduction="none")
            ema.update(batch.index, ce)
            loss = generalized_cross_entropy(logits, batch.y, cfg.q, ce=ce).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    return net, ema.values.detach().cpu()


@torch.no_grad()
def biased_outputs(net, data: BiasedDataset, features: bool, device="cpu"):
    """The biased model's cross-entropy, prediction and (if ``features``) penultimate
    features on every image of ``data``, in order."""
    loader = InMemoryLoader(data.without_bias(), 1024, shuffle=False, device=device)
    ce, pred, feats = [], [], []
    for batch in loader.epoch(0):
        f = net.forward_features(batch.x)
        logits = net.forward_head(f)
        ce.append(F.cross_entropy(logits, batch.y, reduction="none").cpu())
        pred.append(logits.argmax(1).cpu())
        if features:
            feats.append(f.float().cpu())
    return torch.cat(ce), torch.cat(pred), (torch.cat(feats) if features else None)


def colour_statistics(x: torch.Tensor, threshold: float | None = None,
                      chunk: int = 4096) -> np.ndarray:
    """Per image (uint8 N x C x H x W), the mean RGB colour in [0, 1] of its foreground
    pixels and of its background pixels (N x 6; grey images count as R = G = B).

    A pixel is foreground when its brightness, the mean of its channels, is above
    ``threshold``, or, when None, above the image's own midpoint ``(min + max) / 2``. An
    image with no pixel on one side (a uniform image) gets its overall mean colour there.
    """
    out = np.empty((len(x), 6), dtype=np.float32)
    for lo in range(0, len(x), chunk):
        part = x[lo:lo + chunk].float().div_(255.0)
        if part.shape[1] == 1:
            part = part.expand(-1, 3, -1, -1)
        part = part[:, :3].flatten(2)  # N x 3 x P
        bright = part.mean(1)  # N x P
        if threshold is None:
            cut = (bright.amin(1, keepdim=True) + bright.amax(1, keepdim=True)) / 2
        else:
            cut = torch.full((len(part), 1), float(threshold))
        fg = (bright > cut).float()
        overall = part.mean(2)
        stats = []
        for side in (fg, 1.0 - fg):
            count = side.sum(1, keepdim=True)
            mean = (part * side[:, None]).sum(2) / count.clamp_min(1)
            stats.append(torch.where(count > 0, mean, overall))
        out[lo:lo + chunk] = torch.cat(stats, 1).numpy()
    return out


def kmeans(points: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's k-means (k-means++ initialisation, best of 10 starts): labels and
    centres."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(points)
    return km.labels_.astype(np.int64), km.cluster_centers_


@dataclass
class Ranking:
    """One biased model's ranking of the training images: per image (indexed by position
    in the training set) its ``score`` (a key of :data:`SCORES`) and the model's
    prediction; ``evaluation`` is filled by :func:`score_ranking` when bias labels exist."""

    score: str
    scores: np.ndarray
    predictions: np.ndarray
    y: np.ndarray
    evaluation: dict | None = None

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
    """A discovery's result before it is written: per-image arrays (indexed by position
    in the training set) and the summaries. ``scores``, ``order`` and ``predictions`` are
    the primary ranking's; ``rankings`` holds every ranking computed (``gce``, and ``sih``
    with its run record ``sih`` and bias visualisation PNG ``sih_png``)."""

    scores: np.ndarray
    order: np.ndarray  # image indices, most likely conflicting first
    y: np.ndarray
    predictions: np.ndarray
    clusters: np.ndarray
    cluster_summary: list
    evaluation: dict | None
    seconds: dict
    colour: np.ndarray
    rankings: dict = field(default_factory=dict)
    primary: str = "gce"
    sih: dict | None = None
    sih_png: bytes | None = None

    @property
    def ranks(self) -> np.ndarray:
        """Each image's rank (0: most likely bias-conflicting)."""
        return _ranks(self.order)

    @property
    def errors(self) -> np.ndarray:
        """The error set: images the biased model misclassifies (bool per image)."""
        return self.predictions != self.y

    @property
    def biased_accuracy(self) -> float:
        return 100.0 * float((~self.errors).mean())


def rank(scores: np.ndarray) -> np.ndarray:
    """Image indices by descending score (ties: lower index first)."""
    return np.argsort(-scores, kind="stable")


def score_ranking(order: np.ndarray, errors: np.ndarray, data: BiasedDataset) -> dict | None:
    """How well a ranking and an error set find the truly bias-conflicting images, from
    the hidden bias labels (None without them).

    precision@k = |top k ∩ conflicting| / k; recall@k = |top k ∩ conflicting| /
    |conflicting|; R-precision (k = |conflicting|); average precision over the whole
    ranking (scikit-learn); the error set's (the biased model's misclassified images)
    precision and recall.
    """
    if not data.has_bias:
        return None
    from sklearn.metrics import average_precision_score

    conflicting = (~data.aligned).numpy()
    total = int(conflicting.sum())
    hits = np.cumsum(conflicting[order])
    out = {"conflicting": total, "images": len(order)}
    for k in PRECISION_AT:
        kk = min(k, len(order))
        out[f"precision_at_{k}"] = 100.0 * float(hits[kk - 1]) / kk
        out[f"recall_at_{k}"] = 100.0 * float(hits[kk - 1]) / total if total else None
    if total:
        out["r_precision"] = 100.0 * float(hits[total - 1]) / total  # at k = |conflicting|
        ranks = np.empty(len(order))
        ranks[order] = np.arange(len(order))
        out["average_precision"] = 100.0 * float(average_precision_score(conflicting, -ranks))
    else:
        out["r_precision"] = out["average_precision"] = None
    size = int(errors.sum())
    caught = int((errors & conflicting).sum())
    out["error_set"] = {"size": size,
                        "precision": 100.0 * caught / size if size else None,
                        "recall": 100.0 * caught / total if total else None}
    return out


def score_discovery(order: np.ndarray, errors: np.ndarray, clusters: np.ndarray,
                    data: BiasedDataset) -> dict | None:
    """:func:`score_ranking` of the primary ranking, plus the normalised mutual
    information between the cluster ids and the bias values, and between the cluster ids
    and the classes (None without bias labels)."""
    out = score_ranking(order, errors, data)
    if out is None:
        return None
    from sklearn.metrics import normalized_mutual_info_score

    out["cluster_nmi_bias"] = float(normalized_mutual_info_score(data.b.numpy(), clusters))
    out["cluster_nmi_class"] = float(normalized_mutual_info_score(data.y.numpy(), clusters))
    return out


def summarise_clusters(clusters: np.ndarray, k: int, y: np.ndarray, pred: np.ndarray,
                       order: np.ndarray, top: int, examples: int, seed: int,
                       colour: np.ndarray, class_names, bias: np.ndarray | None) -> list:
    """Per cluster: size, the biased model's accuracy (% of its images predicted as their
    class), dominant class and its share, how many of the ``top`` top-ranked images fall in
    it, mean foreground / background colour, seeded random example indices, and (hidden
    labels) its dominant bias value and share."""
    rng = np.random.default_rng(seed)
    in_top = np.zeros(len(y), dtype=bool)
    in_top[order[:top]] = True
    out = []
    for c in range(k):
        members = np.flatnonzero(clusters == c)
        if not len(members):
            continue
        classes = np.bincount(y[members], minlength=len(class_names))
        entry = {
            "cluster": c, "size": int(len(members)),
            "biased_accuracy": 100.0 * float((pred[members] == y[members]).mean()),
            "dominant_class": class_names[int(classes.argmax())],
            "dominant_class_share": 100.0 * float(classes.max() / len(members)),
            "top_ranked": int(in_top[members].sum()),
            "foreground_colour": [round(float(v), 4) for v in colour[members, :3].mean(0)],
            "background_colour": [round(float(v), 4) for v in colour[members, 3:].mean(0)],
            "examples": sorted(rng.choice(members, min(examples, len(members)),
                                          replace=False).tolist()),
        }
        if bias is not None:
            values = np.bincount(bias[members])
            entry["dominant_bias"] = int(values.argmax())
            entry["dominant_bias_share"] = 100.0 * float(values.max() / len(members))
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------
# SiH (--sih): a second label-free biased model, trained by the library's trainer


def check_sih_input(inp: DiscoveryInput, cfg: DiscoverConfig) -> None:
    """``--sih`` needs images SiH's MLP VAE is built for (28 x 28) and data the trainer
    can build again and report on (a built-in protocol, or a labels CSV with an
    evaluation split)."""
    h, w = inp.data.image_shape[1:]
    if (h, w) != SIH_IMAGE_SIZE:
        folder = inp.source.get("dataset") == "folder"
        raise ConfigError(
            f"--sih trains SiH's MLP VAE, which is built for MNIST-size "
            f"{SIH_IMAGE_SIZE[0]} x {SIH_IMAGE_SIZE[1]} images, and these are {h} x {w}; "
            + ("resize them with --image-size 28, or " if folder else "")
            + "leave --sih out (for larger colour images train SiH's ResNet-18 VAE with "
            "'debiaskit train --method sih --model resnet18', then 'debiaskit explain bias')")
    if not inp.eval_splits:
        raise ConfigError("--sih trains SiH with debiaskit's trainer, which needs an "
                          "evaluation split to report on, and these images have none; give "
                          "FOLDER --labels CSV with a split column putting some images in "
                          "split test")
    if inp.source.get("train_subset") and inp.source.get("seed") != cfg.seed:
        raise ConfigError(f"the training subset was drawn with seed {inp.source.get('seed')}"
                          f" and the discovery has seed {cfg.seed}; load the input with the "
                          "discovery's seed (SiH's run draws the same subset with it)")


def sih_run_config(inp: DiscoveryInput, cfg: DiscoverConfig, device="cpu"):
    """The :class:`~debiaskit.train.RunConfig` of the SiH run: method ``sih`` (its default
    hyper-parameters and the trainer's batch size), the ``mlp`` VAE, ``cfg.sih_epochs``
    epochs with selection "last" (evaluated after the last epoch only), seeded by
    ``cfg.seed``, on the same training images with their bias labels dropped."""
    from ..train import RunConfig

    src = inp.source
    return RunConfig(dataset=src["dataset"], data_params=dict(src.get("params") or {}),
                     method="sih", model="mlp", epochs=cfg.sih_epochs, selection="last",
                     eval_every=cfg.sih_epochs, seed=cfg.seed, drop_bias_labels=True,
                     train_subset=src.get("train_subset"), device=str(device),
                     progress=False, data_dir=inp.data_dir, download=inp.download)


@torch.no_grad()
def sih_biased_outputs(method, data: BiasedDataset, device="cpu", chunk: int = 2048):
    """Cross-entropy and prediction of SiH's biased classifier (``predict_biased``: the
    bias head on the bias encoder's latent mean) on every image of ``data``, in order."""
    ce, pred = [], []
    for lo in range(0, len(data), chunk):
        x = as_float_images(data.x[lo:lo + chunk], device)
        y = data.y[lo:lo + chunk].to(device)
        logits = method.predict_biased(x).float()
        ce.append(F.cross_entropy(logits, y, reduction="none").cpu())
        pred.append(logits.argmax(1).cpu())
    return torch.cat(ce), torch.cat(pred)


def sih_visualisation(vae, data: BiasedDataset, cfg: DiscoverConfig, device="cpu"):
    """SiH's bias visualisation (:func:`debiaskit.explain.bias.visualise_bias`) on a
    seeded random pool of :data:`SIH_POOL` training images: the PNG grid (bytes) and its
    scores (with foreground masks, the colour shift; always the shape IoU). When no pool
    image is classified correctly by both of SiH's classifiers (too short a training),
    there is nothing to visualise: the PNG is None and the scores say why."""
    from .bias import save_grid, visualise_bias

    gen = torch.Generator().manual_seed(cfg.seed)
    pool = torch.randperm(len(data), generator=gen)[:SIH_POOL].sort().values
    masks = None if data.mask is None else data.mask[pool].to(device)
    try:
        vis = visualise_bias(vae, as_float_images(data.x[pool], device),
                             data.y[pool].to(device), masks, n=SIH_VISUALISED, seed=cfg.seed)
    except DebiaskitError:
        return None, {"pool": len(pool), "split": "train", "error": (
            f"none of {len(pool)} training images is classified correctly by both of SiH's "
            f"classifiers after {cfg.sih_epochs} epochs, so there is no bias to show; give "
            "more --sih-epochs")}
    with tempfile.TemporaryDirectory(prefix="debiaskit-sih-") as tmp:
        png = save_grid(vis, Path(tmp) / SIH_PNG, columns=SIH_COLUMNS, title=(
            f"SiH ({cfg.sih_epochs} epochs): bias visualisation on training images "
            "(DeepFool on the bias latent vs DisEnt-style swap)")).read_bytes()
    scores = {"pool": len(pool), "split": "train", **vis.scores(SIH_IOU_THRESHOLD)}
    return png, scores


def train_sih(inp: DiscoveryInput, cfg: DiscoverConfig, run_dir, device="cpu"):
    """Train SiH label-free into the run folder ``run_dir`` with :func:`debiaskit.train.train`
    (an unfinished run of the same settings there is resumed, a finished one reused), then
    rank every training image by its biased classifier's cross-entropy and render its bias
    visualisation. Returns the :class:`Ranking`, the run's record for discovery.json and the
    visualisation's PNG bytes."""
    from ..train import check_config as check_run_config
    from ..train import load_trained, same_run, train

    data, run_dir = inp.data, Path(run_dir)
    run_cfg = check_run_config(sih_run_config(inp, cfg, device))
    seconds = {}
    t0 = time.perf_counter()
    reused = runs.is_finished(run_dir)
    if reused:
        if not same_run(run_cfg, runs.read_json(run_dir / runs.CONFIG)):
            raise ConfigError(f"{run_dir} holds a finished SiH run of other settings; choose "
                              "a new --out folder")
        summary = runs.read_json(run_dir / runs.SUMMARY)
    else:
        summary = train(run_cfg, run_dir)
    seconds["train"] = time.perf_counter() - t0
    stored = runs.read_json(run_dir / runs.CONFIG)
    if stored.get("data", {}).get("train_checksum") != training_checksum(data):
        raise DebiaskitError(f"{run_dir}: SiH trained on other images than the discovery's "
                             "(the data or its options changed); choose a new --out folder")
    t1 = time.perf_counter()
    prep = load_trained(run_dir, inp.data_dir)
    ce, pred = sih_biased_outputs(prep.method, data, device)
    ranking = Ranking("sih", ce.double().numpy(), pred.numpy(), data.y.numpy())
    seconds["score"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    png, vis_scores = sih_visualisation(prep.method.vae, data, cfg, device)
    seconds["visualise"] = time.perf_counter() - t2
    seconds["run_train_seconds"] = summary["train_seconds"]  # every epoch, resumed or not
    record = {
        "run": SIH_DIR, "method": "sih", "model": "mlp",
        "settings": {"epochs": run_cfg.epochs, "selection": run_cfg.selection,
                     "batch_size": run_cfg.batch_size, "seed": run_cfg.seed,
                     "hparams": dict(prep.method.hp), "bias_labels": "dropped"},
        "protocol": summary["protocol"], "reused_finished_run": reused,
        "biased_classifier": {"train_accuracy": ranking.accuracy,
                              "error_set_size": int(ranking.errors.sum())},
        "visualisation": ({"png": SIH_PNG, "caption": SIH_CAPTION, **vis_scores}
                          if png is not None else vis_scores),
        "seconds": seconds,
    }
    return ranking, record, png


def discover(inp: DiscoveryInput, cfg: DiscoverConfig, device="cpu",
             sih_dir=None) -> Discovery:
    """Train the biased model, score, rank and cluster ``inp.data`` (see the module
    docstring); with ``cfg.sih`` also train SiH into the run folder ``sih_dir`` for a
    second ranking. Bias labels, if any, are read only to score the result."""
    check_config(cfg)
    data = inp.data
    k = cfg.clusters or data.num_classes
    if k > len(data):
        raise ConfigError(f"--clusters {k} exceeds the {len(data)} images; give fewer clusters")
    if cfg.sih:
        check_sih_input(inp, cfg)
        if sih_dir is None:
            raise ConfigError("--sih trains SiH into a run folder; give sih_dir "
                              "(run_discovery uses OUT/sih)")
    seconds = {}
    t0 = time.perf_counter()
    net, ema = train_biased_model(data, cfg, device)
    seconds["train"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    ce, pred, feats = biased_outputs(net, data, cfg.cluster_on == "features", device)
    gce_score = "ema" if cfg.score == "ema" else "ce"
    y = data.y.numpy()
    rankings = {"gce": Ranking(gce_score, (ce if gce_score == "ce" else ema).double().numpy(),
                               pred.numpy(), y)}
    seconds["score"] = time.perf_counter() - t1
    sih = sih_png = None
    if cfg.sih:
        t = time.perf_counter()
        rankings["sih"], sih, sih_png = train_sih(inp, cfg, sih_dir, device)
        seconds["sih"] = time.perf_counter() - t
    primary = "sih" if cfg.score == "sih" else "gce"
    main = rankings[primary]
    order = main.order
    t2 = time.perf_counter()
    colour = colour_statistics(data.x, cfg.threshold)
    points = colour if cfg.cluster_on == "colour" else feats.numpy()
    clusters, _ = kmeans(points, k, cfg.seed)
    summary = summarise_clusters(clusters, k, y, main.predictions, order,
                                 min(cfg.top, len(data)), cfg.examples, cfg.seed, colour,
                                 inp.class_names, data.b.numpy() if data.has_bias else None)
    seconds["cluster"] = time.perf_counter() - t2
    evaluation = score_discovery(order, main.errors, clusters, data)
    for r in rankings.values():
        r.evaluation = score_ranking(r.order, r.errors, data)
    return Discovery(scores=main.scores, order=order, y=y, predictions=main.predictions,
                     clusters=clusters, cluster_summary=summary, evaluation=evaluation,
                     seconds=seconds, colour=colour, rankings=rankings, primary=primary,
                     sih=sih, sih_png=sih_png)


# ---------------------------------------------------------------------------------------
# Writing: discovery.json, ranking.csv, discover.html


def result_json(inp: DiscoveryInput, cfg: DiscoverConfig, res: Discovery) -> dict:
    """The content of ``discovery.json``: indices are positions in the training set.
    ``biased_model`` is always the GCE model; the per-image fields (``scores``, ``order``,
    ``predictions``, ``error_set`` ...) are the primary ranking's (``ranking``). With SiH,
    ``rankings`` holds both rankings (per-image scores and predictions, accuracy, error
    set size, evaluation) and ``sih`` what was trained (settings, run folder, seconds,
    visualisation scores)."""
    data = inp.data
    top = min(cfg.top, len(data))
    gce = res.rankings.get("gce")
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
        "biased_model": {"train_accuracy": gce.accuracy if gce else res.biased_accuracy,
                         "error_set_size": int((gce.errors if gce else res.errors).sum())},
        "ranking": res.primary,
        "top": res.order[:top].tolist(),
        "order": res.order.tolist(),
        "scores": [round(float(s), 6) for s in res.scores],
        "ranks": res.ranks.tolist(),
        "predictions": res.predictions.tolist(),
        "error_set": np.flatnonzero(res.errors).tolist(),
        "clusters": res.clusters.tolist(),
        "cluster_summary": res.cluster_summary,
        "evaluation": res.evaluation,
        "seconds": res.seconds,
    }
    if res.sih is not None:
        record["sih"] = res.sih
        record["rankings"] = {name: {
            "score": r.score, "description": SCORES[r.score], "primary": name == res.primary,
            "train_accuracy": r.accuracy, "error_set_size": int(r.errors.sum()),
            "evaluation": r.evaluation, "scores": [round(float(v), 6) for v in r.scores],
            "predictions": r.predictions.tolist()} for name, r in res.rankings.items()}
    return record


def ranking_csv(inp: DiscoveryInput, res: Discovery) -> str:
    """``ranking.csv``: one row per image, by the primary rank: index, score, rank, class,
    the biased model's prediction, cluster, with SiH the other ranking's score and rank
    (``sih_score,sih_rank`` or ``gce_score,gce_rank``), and the file path for folders."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    others = [(name, r.scores, _ranks(r.order)) for name, r in res.rankings.items()
              if name != res.primary and res.sih is not None]
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


def _ranks(order: np.ndarray) -> np.ndarray:
    """Each image's position in ``order`` (0: first)."""
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    return ranks


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


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
    gce = res.rankings.get("gce") or Ranking(cfg.score, res.scores, res.predictions, y)

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
        seconds={k: f"{v:.1f}" for k, v in res.seconds.items()})


def write_discovery(out, files: dict[str, bytes], keep: tuple[str, ...] = ()) -> Path:
    """Write ``files`` (name -> bytes) into the new or empty folder ``out`` through a
    temporary sibling folder renamed into place: ``out`` is whole or absent. ``keep``
    names folders already in ``out`` (the SiH run) that are moved into the temporary
    folder just before the rename (and moved back if anything fails)."""
    out = check_out_dir(out, sih=bool(keep))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o777 & ~runs._UMASK)  # (mkdtemp makes it private)
    moved = []
    try:
        for name, content in files.items():
            runs.atomic_write(tmp / name, lambda f, c=content: f.write(c))
        for name in keep:
            if (out / name).exists():
                os.replace(out / name, tmp / name)
                moved.append(name)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        if moved:
            out.mkdir(exist_ok=True)
            for name in moved:
                os.replace(tmp / name, out / name)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def run_discovery(inp: DiscoveryInput, cfg: DiscoverConfig, out, device="cpu",
                  started: float | None = None) -> dict:
    """Discover on ``inp`` and write the result into ``out``; returns discovery.json's
    content. ``started`` (a ``time.perf_counter`` value) counts loading the data into the
    total seconds. With ``cfg.sih`` the SiH run trains in ``out/sih`` first (``out`` may
    already hold only that folder, from an interrupted discovery: it is resumed)."""
    import json

    out = check_out_dir(out, sih=cfg.sih)
    started = time.perf_counter() if started is None else started
    res = discover(inp, cfg, device, sih_dir=out / SIH_DIR if cfg.sih else None)
    res.seconds["total"] = time.perf_counter() - started  # data, training, scores, clusters
    page = render_page(inp, cfg, res)
    record = result_json(inp, cfg, res)
    files = {DISCOVERY: json.dumps(runs.json_safe(record), sort_keys=True).encode(),
             RANKING: ranking_csv(inp, res).encode(), PAGE: page.encode()}
    if inp.labels_csv is not None:
        files[LABELS] = inp.labels_csv.encode()
    if res.sih_png is not None:
        files[SIH_PNG] = res.sih_png
    write_discovery(out, files, keep=(SIH_DIR,) if cfg.sih else ())
    return record
