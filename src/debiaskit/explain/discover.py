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
   the clusters and the true bias values (and, for contrast, the classes).

Everything is computed before anything is written; the output folder (new or empty) is
then written whole through a temporary folder renamed into place: ``discovery.json``,
``ranking.csv`` and ``discover.html`` (a self-contained page: images as base64 PNG data
URIs, no scripts, no external resources), plus ``labels.csv`` when the classes came from
sub-folders (so that ``debiaskit train --dataset folder`` can read the same images).
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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import runs
from ..data.dataset import BiasedDataset
from ..data.loader import InMemoryLoader
from ..data.protocols import build_data
from ..errors import ConfigError, DataError, unknown_name
from ..losses import PerSampleEMA, generalized_cross_entropy
from ..methods.base import adam
from ..methods.discovered import DISCOVERY, FORMAT, training_checksum
from ..models import MODELS, build_model

RANKING, PAGE, LABELS = "ranking.csv", "discover.html", "labels.csv"

#: How an image's bias-conflicting likelihood is scored (``--score``).
SCORES = {
    "ce": "cross-entropy -log p_y of the trained biased model on each training image",
    "ema": "LfF's per-sample moving average (decay --ema) of the biased model's "
           "cross-entropy during training",
}

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
    network, the batches, k-means and the example choice.
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


def check_config(cfg: DiscoverConfig) -> None:
    """Range checks that need no data."""
    if cfg.score not in SCORES:
        raise unknown_name("score", cfg.score, SCORES)
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


def check_out_dir(out) -> Path:
    """``out`` must be new or an empty folder (a discovery never overwrites)."""
    out = Path(out)
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
    ``labels_csv`` is the CSV text to write beside the result (class sub-folders)."""

    data: BiasedDataset
    class_names: list[str]
    source: dict
    paths: list[str] | None = None
    labels_csv: str | None = None


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
                              paths=[r["path"].strip() for r in rows])
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
    return DiscoveryInput(data, classes, source)


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
class Discovery:
    """A discovery's result before it is written: per-image arrays (indexed by position
    in the training set) and the summaries."""

    scores: np.ndarray
    order: np.ndarray  # image indices, most likely conflicting first
    y: np.ndarray
    predictions: np.ndarray
    clusters: np.ndarray
    cluster_summary: list
    evaluation: dict | None
    seconds: dict
    colour: np.ndarray

    @property
    def ranks(self) -> np.ndarray:
        """Each image's rank (0: most likely bias-conflicting)."""
        ranks = np.empty(len(self.order), dtype=np.int64)
        ranks[self.order] = np.arange(len(self.order))
        return ranks

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


def score_discovery(order: np.ndarray, errors: np.ndarray, clusters: np.ndarray,
                    data: BiasedDataset) -> dict | None:
    """How well the ranking finds the truly bias-conflicting images and the clusters the
    true bias values, from the hidden bias labels (None without them).

    precision@k = |top k ∩ conflicting| / k; recall@k = |top k ∩ conflicting| /
    |conflicting|; average precision over the whole ranking (scikit-learn); the error
    set's (the biased model's misclassified images) precision and recall; NMI between the
    cluster ids and the bias values, and between the cluster ids and the classes.
    """
    if not data.has_bias:
        return None
    from sklearn.metrics import average_precision_score, normalized_mutual_info_score

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


def discover(inp: DiscoveryInput, cfg: DiscoverConfig, device="cpu") -> Discovery:
    """Train the biased model, score, rank and cluster ``inp.data`` (see the module
    docstring); bias labels, if any, are read only to score the result."""
    check_config(cfg)
    data = inp.data
    k = cfg.clusters or data.num_classes
    if k > len(data):
        raise ConfigError(f"--clusters {k} exceeds the {len(data)} images; give fewer clusters")
    seconds = {}
    t0 = time.perf_counter()
    net, ema = train_biased_model(data, cfg, device)
    seconds["train"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    ce, pred, feats = biased_outputs(net, data, cfg.cluster_on == "features", device)
    scores = (ce if cfg.score == "ce" else ema).double().numpy()
    order = rank(scores)
    seconds["score"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    colour = colour_statistics(data.x, cfg.threshold)
    points = colour if cfg.cluster_on == "colour" else feats.numpy()
    clusters, _ = kmeans(points, k, cfg.seed)
    y, pred = data.y.numpy(), pred.numpy()
    summary = summarise_clusters(clusters, k, y, pred, order, min(cfg.top, len(data)),
                                 cfg.examples, cfg.seed, colour, inp.class_names,
                                 data.b.numpy() if data.has_bias else None)
    seconds["cluster"] = time.perf_counter() - t2
    evaluation = score_discovery(order, pred != y, clusters, data)
    return Discovery(scores=scores, order=order, y=y, predictions=pred, clusters=clusters,
                     cluster_summary=summary, evaluation=evaluation, seconds=seconds,
                     colour=colour)


# ---------------------------------------------------------------------------------------
# Writing: discovery.json, ranking.csv, discover.html


def result_json(inp: DiscoveryInput, cfg: DiscoverConfig, res: Discovery) -> dict:
    """The content of ``discovery.json``: indices are positions in the training set."""
    data = inp.data
    top = min(cfg.top, len(data))
    return {
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
        "biased_model": {"train_accuracy": res.biased_accuracy,
                         "error_set_size": int(res.errors.sum())},
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


def ranking_csv(inp: DiscoveryInput, res: Discovery) -> str:
    """``ranking.csv``: one row per image, by rank: index, score, rank, class, the biased
    model's prediction, cluster (and the file path for folders)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["index", "score", "rank", "y", "predicted", "cluster"]
                    + (["path"] if inp.paths else []))
    names, y = inp.class_names, inp.data.y.numpy()
    for r, i in enumerate(res.order):
        row = [int(i), f"{res.scores[i]:.6g}", r, names[y[i]], names[res.predictions[i]],
               int(res.clusters[i])]
        writer.writerow(row + ([inp.paths[i]] if inp.paths else []))
    return buf.getvalue()


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


def render_page(inp: DiscoveryInput, cfg: DiscoverConfig, res: Discovery) -> str:
    """``discover.html`` from the Jinja2 template ``templates/discover.html.j2``."""
    import jinja2

    data, names, y = inp.data, inp.class_names, res.y
    conflicting = (~data.aligned).numpy() if data.has_bias else None

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
        k=len(res.cluster_summary), biased_accuracy=f"{res.biased_accuracy:.1f}",
        error_set=int(res.errors.sum()),
        evaluation=res.evaluation, precision_at=PRECISION_AT,
        histogram=data_uri(histogram_png(res.scores, conflicting, SCORES[cfg.score])),
        top=[tile(i) for i in res.order[:top]], clusters=clusters,
        seconds={k: f"{v:.1f}" for k, v in res.seconds.items()})


def write_discovery(out, files: dict[str, bytes]) -> Path:
    """Write ``files`` (name -> bytes) into the new or empty folder ``out`` through a
    temporary sibling folder renamed into place: ``out`` is whole or absent."""
    out = check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o777 & ~runs._UMASK)  # (mkdtemp makes it private)
    try:
        for name, content in files.items():
            runs.atomic_write(tmp / name, lambda f, c=content: f.write(c))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def run_discovery(inp: DiscoveryInput, cfg: DiscoverConfig, out, device="cpu",
                  started: float | None = None) -> dict:
    """Discover on ``inp`` and write the result into ``out``; returns discovery.json's
    content. ``started`` (a ``time.perf_counter`` value) counts loading the data into the
    total seconds."""
    import json

    check_out_dir(out)
    started = time.perf_counter() if started is None else started
    res = discover(inp, cfg, device)
    res.seconds["total"] = time.perf_counter() - started  # data, training, scores, clusters
    page = render_page(inp, cfg, res)
    record = result_json(inp, cfg, res)
    files = {DISCOVERY: json.dumps(runs.json_safe(record), sort_keys=True).encode(),
             RANKING: ranking_csv(inp, res).encode(), PAGE: page.encode()}
    if inp.labels_csv is not None:
        files[LABELS] = inp.labels_csv.encode()
    write_discovery(out, files)
    return record
