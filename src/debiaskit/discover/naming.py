"""Naming the shortcut: where the biased model looks, per class and per cluster, and a
plain-language line built only from the measured numbers the page also shows.

Attribution maps: captum's integrated gradients of one logit with respect to the input
image, from a black image (all zeros) in :data:`IG_STEPS` steps; per image the absolute
values summed over the channels, scaled to sum 1 (so every image counts alike and a
region's share of a mean map is the mean share of the images' attribution it holds). A
black baseline gives no attribution to black pixels: the maps show the evidence present
in the image, not where the model would react to a change.

Per class c: the mean map of the biased model (target: the logit of c) over up to
:data:`NAMING_IMAGES` of its confidently classified training images (predicted c with
``p_c >= CONFIDENT``; a seeded choice; when there is none, its most confident images), the
class's *aligned-looking* images; and the mean map over its images among the primary
ranking's top (its *top-ranked*, likely conflicting images, in rank order, up to
:data:`NAMING_IMAGES`), whose difference from the first is the *difference map*.

Per cluster: the mean image of all its images, the mean map over a seeded choice of up to
:data:`NAMING_IMAGES` of them (target: the biased model's prediction on each image), and
what separates it from the other training images (:mod:`.facts`): the peak region of the
colour distance between the two mean images, the distance between their mean foreground
and background colours, and the frequency band whose share of the spectral energy differs
most.

A line states a fact only when it passes its threshold below; all numbers it quotes are
in the ``naming`` section of discovery.json and on the page.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..data.loader import as_float_images
from .facts import (PEAK_FRACTION, band_energies, band_names, box_size, colour_distance,
                    mean_images, peak_region, region_share)

#: The biased model's probability of the class at or above which an image counts as
#: confidently classified (aligned-looking).
CONFIDENT = 0.9
#: The most images whose attribution maps are averaged per class, per top-ranked set of a
#: class and per cluster.
NAMING_IMAGES = 64
#: Steps of the integrated gradients (captum's Gauss-Legendre rule).
IG_STEPS = 16
#: A peak region is called *concentrated* when it covers at most this share of the image
#: and holds at least :data:`CONCENTRATED_ENRICHMENT` times its area share of the map.
CONCENTRATED_AREA = 0.05
CONCENTRATED_ENRICHMENT = 10.0
#: A cluster's position fact: the mean colour distance (0-1) between its mean image and
#: the other images' over the peak region of that distance, at least this.
POSITION_DISTANCE = 0.25
#: A cluster's colour fact: the colour distance (0-1) between its mean foreground (or
#: background) colour and the other images', at least this.
COLOUR_DISTANCE = 0.1
#: A cluster's frequency fact: the band's share of the spectral energy differs from the
#: other images' by at least this many (fraction) points and by a factor of this ratio.
BAND_POINTS, BAND_RATIO = 0.05, 1.5

#: What the maps are, for discovery.json and the page.
ATTRIBUTION = (f"integrated gradients (captum) from a black image in {IG_STEPS} steps; per "
               "image the absolute values summed over the channels and scaled to sum 1; "
               "averaged over the images")


@dataclass
class Naming:
    """The naming's result: ``record`` is discovery.json's ``naming`` section; ``classes``
    and ``clusters`` hold, per entry, what the page draws (``mean_image`` C x H x W in
    [0, 1], ``map`` H x W, ``difference`` H x W or None, and the regions boxed on them)."""

    record: dict
    classes: list
    clusters: list


def attribution_maps(net, x: torch.Tensor, target: torch.Tensor, device="cpu",
                     chunk: int = 64) -> np.ndarray:
    """Integrated-gradient maps (N x H x W, each summing to 1, or all 0) of ``net``'s
    ``target`` logits for the uint8 images ``x`` (see the module docstring)."""
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(net)
    out = []
    was = net.training
    net.train(False)
    try:
        for lo in range(0, len(x), chunk):
            xb = as_float_images(x[lo:lo + chunk], device)
            with torch.enable_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*required_grads has been set")
                attr = ig.attribute(xb, baselines=torch.zeros_like(xb),
                                    target=target[lo:lo + chunk].to(device), n_steps=IG_STEPS,
                                    internal_batch_size=4 * chunk)
            m = attr.detach().abs().sum(1).double().cpu()
            total = m.flatten(1).sum(1)[:, None, None]
            out.append(torch.where(total > 0, m / total.clamp_min(1e-300), 0.0).numpy())
    finally:
        net.train(was)
    h, w = x.shape[2:]
    return np.concatenate(out) if out else np.zeros((0, h, w))


def _choose(rng: np.random.Generator, index: np.ndarray, n: int) -> np.ndarray:
    """A seeded choice of up to ``n`` of ``index``, sorted."""
    if len(index) <= n:
        return np.sort(index)
    return np.sort(rng.choice(index, n, replace=False))


def _rounded(d: dict | None) -> dict | None:
    return None if d is None else {k: (round(v, 4) if isinstance(v, float) else v)
                                   for k, v in d.items()}


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %" if v < 0.1 else f"{100 * v:.0f} %"


def where(box: dict) -> str:
    """``a 3 x 3 px region at rows 1-3, cols 24-26`` (``row 5`` for a single row) for a box."""
    h, w = box_size(box)
    (r0, r1), (c0, c1) = box["rows"], box["cols"]
    rows = f"row {r0}" if r0 == r1 else f"rows {r0}-{r1}"
    cols = f"col {c0}" if c0 == c1 else f"cols {c0}-{c1}"
    return f"a {h} x {w} px region at {rows}, {cols}"


def concentrated(region: dict | None) -> bool:
    """The concentration rule (:data:`CONCENTRATED_AREA`, :data:`CONCENTRATED_ENRICHMENT`)."""
    return (region is not None and region["area"] <= CONCENTRATED_AREA
            and region["enrichment"] >= CONCENTRATED_ENRICHMENT)


def attribution_clause(region: dict | None) -> str:
    """Where the attribution of a mean map concentrates, in words."""
    if region is None:
        return "the biased model gives these images no attribution"
    said = (f"{_pct(region['share'])} of the attribution falls in {where(region)} "
            f"({_pct(region['area'])} of the image, {region['enrichment']:.1f} times its area "
            "share)")
    return said + (": concentrated" if concentrated(region) else ": not concentrated")


def class_line(entry: dict, top: int) -> str:
    """The plain-language line of one class (from :func:`name_shortcut`'s entry)."""
    seen = (f"in its {entry['images']} confidently classified images (p >= {CONFIDENT:.2f})"
            if entry["confident"] else
            f"in its {entry['images']} most confident images (none at p >= {CONFIDENT:.2f}; "
            f"lowest p {entry['min_probability']:.2f})")
    line = f"Class {entry['class']}: {seen}, {attribution_clause(entry['region'])}"
    tr = entry["top_ranked"]
    if tr is None:
        return line + f". None of its images is among the top {top}."
    line += (f". In its {tr['images']} top-ranked image"
             + ("s" if tr["images"] != 1 else ""))
    if entry["region"] is not None:
        line += f" that region holds {_pct(tr['region_share'])}"
    if tr["increase"] is not None:
        line += (f"{',' if entry['region'] is not None else ''} and the attribution grows "
                 f"most in {where(tr['increase'])}")
    return line + "."


def cluster_line(entry: dict, summary: dict, top: int) -> str:
    """The plain-language line of one cluster (from :func:`name_shortcut`'s entry and the
    cluster's summary)."""
    line = (f"Cluster {entry['cluster']} ({summary['size']} images, "
            f"{summary['dominant_class_share']:.0f} % class {summary['dominant_class']}, "
            f"biased accuracy {summary['biased_accuracy']:.1f} %, {summary['top_ranked']} of "
            f"the top {top}): {attribution_clause(entry['region'])}.")
    facts = []
    pos = entry["position"]
    if pos is not None and pos["stands_out"]:
        change = "brighter" if pos["brightness"] > 0 else "darker"
        facts.append(f"its mean image differs most from the other images' in {where(pos)} "
                     f"(colour distance {pos['distance']:.2f}; {change} by "
                     f"{abs(pos['brightness']):.2f})")
    col = entry["colour"]
    for side in ("foreground", "background"):
        if col is not None and col[side]["stands_out"]:
            facts.append(f"its mean {side} colour {_rgb(col[side]['cluster'])} is "
                         f"{col[side]['distance']:.2f} from the nearest other cluster's "
                         f"({_rgb(col[side]['nearest_colour'])}, cluster "
                         f"{col[side]['nearest']})")
    band = entry["band"]
    if band is not None and band["stands_out"]:
        times = "" if band["ratio"] is None else f"{band['ratio']:.1f} times "
        facts.append(f"its images have {times}the other images' share of spectral energy "
                     f"at {band['band']} ({_pct(band['cluster'])} vs {_pct(band['rest'])})")
    if entry["position"] is None:
        return line + " It holds every image, so nothing separates it from others."
    if not facts:
        return line + (" No position, colour or frequency band separates it from the other "
                       "images by the thresholds.")
    said = "; ".join(facts)
    return f"{line} {said[0].upper()}{said[1:]}."


def _rgb(c) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in c) + ")"


def name_classes(net, data, ce, pred, order, top, class_names, rng, device) -> list:
    """Per class: the aligned-looking and top-ranked mean maps, their regions and line."""
    x, y = data.x, data.y.numpy()
    p = np.exp(-np.asarray(ce, dtype=np.float64))
    in_top = np.asarray(order[:top])
    out = []
    for c in range(data.num_classes):
        members = np.flatnonzero(y == c)
        if not len(members):
            continue
        sure = members[(p[members] >= CONFIDENT) & (pred[members] == c)]
        chosen = (_choose(rng, sure, NAMING_IMAGES) if len(sure)
                  else members[np.argsort(-p[members], kind="stable")[:NAMING_IMAGES]])
        maps = attribution_maps(net, x[chosen], torch.full((len(chosen),), c), device)
        mean_map = maps.mean(0)
        region = peak_region(mean_map)
        tops = in_top[y[in_top] == c][:NAMING_IMAGES]
        difference = top_ranked = None
        if len(tops):
            top_map = attribution_maps(net, x[tops], torch.full((len(tops),), c),
                                       device).mean(0)
            difference = top_map - mean_map
            top_ranked = {
                "images": int(len(tops)),
                "region_share": (region_share(top_map, region)["share"]
                                 if region is not None else None),
                "increase": _rounded(peak_region(np.clip(difference, 0, None))),
                "decrease": _rounded(peak_region(np.clip(-difference, 0, None)))}
        entry = {"class": class_names[c], "images": int(len(chosen)),
                 "confident": bool(len(sure)),
                 "min_probability": round(float(p[chosen].min()), 4),
                 "region": _rounded(region), "concentrated": concentrated(region),
                 "top_ranked": _rounded(top_ranked) if top_ranked else None}
        entry["line"] = class_line(entry, top)
        out.append((entry, {"mean_image": x[chosen].double().mean(0).numpy() / 255.0,
                            "map": mean_map, "difference": difference}))
    return out


def separation(members: np.ndarray, rest: np.ndarray, mean_c, mean_rest, bands) -> tuple:
    """What separates ``members`` from ``rest`` (both non-empty) in their mean images
    (``mean_c``, ``mean_rest``) and spectral bands (:func:`.facts.band_energies` per
    image): the position and frequency-band facts of the module docstring, each with
    ``stands_out``."""
    dist = colour_distance(mean_c, mean_rest)
    box = peak_region(dist)
    position = None
    if box is not None:
        (r0, r1), (c0, c1) = box["rows"], box["cols"]
        d = float(dist[r0:r1 + 1, c0:c1 + 1].mean())
        bright = float(mean_c[:, r0:r1 + 1, c0:c1 + 1].mean()
                       - mean_rest[:, r0:r1 + 1, c0:c1 + 1].mean())
        position = {"rows": box["rows"], "cols": box["cols"], "distance": d,
                    "brightness": bright, "stands_out": d >= POSITION_DISTANCE}
    a, b = bands[members].mean(0), bands[rest].mean(0)
    i = int(np.argmax(np.abs(a - b)))
    ratio = float(a[i] / b[i]) if b[i] > 0 else None  # (None: the others have none)
    band = {"band": band_names()[i], "cluster": float(a[i]), "rest": float(b[i]),
            "ratio": ratio, "stands_out": bool(abs(a[i] - b[i]) >= BAND_POINTS and (
                ratio is None or ratio >= BAND_RATIO or ratio <= 1 / BAND_RATIO))}
    return _rounded(position), _rounded(band)


def colour_facts(colour: np.ndarray, clusters: np.ndarray, present: list) -> dict:
    """Per cluster of ``present``: its mean foreground and background colour
    (:func:`.clusters.colour_statistics`) and the nearest other cluster's (by colour
    distance), with ``stands_out`` when even the nearest is :data:`COLOUR_DISTANCE` away.
    (The nearest cluster, not the mean of all others: the mean of many colours is a grey
    that a grey-ish cluster cannot be told from.)"""
    out = {c: {} for c in present}
    for side, cols in (("foreground", slice(0, 3)), ("background", slice(3, 6))):
        means = {c: colour[clusters == c, cols].mean(0) for c in present}
        for c in present:
            others = [(float(colour_distance(means[c], means[o])), o) for o in present if o != c]
            if not others:
                out[c] = None
                continue
            d, o = min(others)
            out[c][side] = {"cluster": [round(float(v), 4) for v in means[c]],
                            "nearest": o, "nearest_colour": [round(float(v), 4)
                                                             for v in means[o]],
                            "distance": round(d, 4), "stands_out": d >= COLOUR_DISTANCE}
    return out


def name_clusters(net, data, pred, clusters, k, colour, summary, top, rng, device) -> list:
    """Per cluster of ``summary``: mean image, mean map, separation facts and line."""
    x = data.x
    means = mean_images(x, clusters, k)
    counts = np.bincount(clusters, minlength=k)
    total = (means * counts[:, None, None, None]).sum(0)
    bands = band_energies(x)
    colours = colour_facts(colour, clusters, [s["cluster"] for s in summary])
    out = []
    for s in summary:
        c = s["cluster"]
        members = np.flatnonzero(clusters == c)
        rest = np.flatnonzero(clusters != c)
        chosen = _choose(rng, members, NAMING_IMAGES)
        mean_map = attribution_maps(net, x[chosen], torch.from_numpy(pred[chosen]),
                                    device).mean(0)
        region = peak_region(mean_map)
        position = band = None
        if len(rest):
            mean_rest = (total - means[c] * counts[c]) / len(rest)
            position, band = separation(members, rest, means[c], mean_rest, bands)
        entry = {"cluster": c, "images": int(len(chosen)), "region": _rounded(region),
                 "concentrated": concentrated(region), "position": position,
                 "colour": colours[c], "band": band}
        entry["line"] = cluster_line(entry, s, top)
        out.append((entry, {"mean_image": means[c], "map": mean_map}))
    return out


def name_shortcut(net, data, ce, pred, order, top: int, clusters: np.ndarray, k: int,
                  colour: np.ndarray, summary: list, class_names, seed: int,
                  device="cpu", model: str = "the GCE biased model") -> Naming:
    """The naming of a discovery (module docstring): ``net`` is the biased model (named
    ``model`` in the record), ``ce`` and ``pred`` its cross-entropy and prediction per
    training image, ``order`` the primary ranking and ``top`` how many of it count as
    top-ranked; ``clusters``, ``colour`` (:func:`.clusters.colour_statistics`) and
    ``summary`` (:func:`.clusters.summarise_clusters`) the clustering. Choices are seeded
    by ``seed``."""
    pred = np.asarray(pred)
    rng = np.random.default_rng([seed, 35])
    classes = name_classes(net, data, ce, pred, order, top, class_names, rng, device)
    groups = name_clusters(net, data, pred, clusters, k, colour, summary, top, rng, device)
    record = {
        "attribution": ATTRIBUTION, "model": model,
        "class_target": "the class's logit", "cluster_target": "the biased model's "
        "prediction on each image", "confident": CONFIDENT, "images": NAMING_IMAGES,
        "top": top,
        "thresholds": {"peak_fraction": PEAK_FRACTION, "concentrated_area": CONCENTRATED_AREA,
                       "concentrated_enrichment": CONCENTRATED_ENRICHMENT,
                       "position_distance": POSITION_DISTANCE,
                       "colour_distance": COLOUR_DISTANCE, "band_points": BAND_POINTS,
                       "band_ratio": BAND_RATIO},
        "classes": [e for e, _ in classes], "clusters": [e for e, _ in groups]}
    return Naming(record=record,
                  classes=[{**e, **m} for e, m in classes],
                  clusters=[{**e, **m} for e, m in groups])
