"""What the biased model may rely on: k-means over the biased model's own features (unit
length) or over per-image colour statistics, and a summary per cluster (the colour
statistics are reported either way)."""

from __future__ import annotations

import numpy as np
import torch


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


def feature_points(features: np.ndarray) -> np.ndarray:
    """The biased model's penultimate features as k-means points: each image's feature
    vector scaled to unit length (an all-zero vector stays zero), so that images group by
    the direction of their features, which decides the prediction, rather than by their
    length, which grows with the model's confidence."""
    features = np.asarray(features, dtype=np.float32)
    norm = np.linalg.norm(features, axis=1, keepdims=True)
    return np.divide(features, norm, out=np.zeros_like(features), where=norm > 0)


def kmeans(points: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's k-means (k-means++ initialisation, best of 10 starts): labels and
    centres."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(points)
    return km.labels_.astype(np.int64), km.cluster_centers_


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
