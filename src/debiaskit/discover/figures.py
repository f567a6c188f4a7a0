"""The naming's pictures on ``discover.html``: mean images, attribution maps laid over
them, difference maps, each with its measured regions boxed, as PNG data URIs; and what
the page's template receives of the naming (:func:`naming_section`)."""

from __future__ import annotations

import io

import numpy as np

from ..explain.images import data_uri
from .facts import PEAK_FRACTION
from .naming import (ATTRIBUTION, BAND_POINTS, BAND_RATIO, COLOUR_DISTANCE,
                     CONCENTRATED_AREA, CONCENTRATED_ENRICHMENT, CONFIDENT, POSITION_DISTANCE,
                     Naming)

#: Side (pixels) to which a map is upscaled on the page, at least (nearest neighbour,
#: by a whole factor, so every image pixel stays a square block).
TILE = 112
#: Box colours: the peak region of an attribution map, the region where a cluster's mean
#: image differs most, where the top-ranked images draw more and less attribution.
PEAK_BOX, POSITION_BOX, MORE_BOX, LESS_BOX = (0, 255, 255), (255, 0, 255), (0, 0, 0), (0, 150, 0)


def _rgb(image: np.ndarray) -> np.ndarray:
    """C x H x W in [0, 1] -> H x W x 3 (grey repeated)."""
    img = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0).transpose(1, 2, 0)
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]


def _png(rgb: np.ndarray, boxes=()) -> str:
    """H x W x 3 in [0, 1], upscaled to at least :data:`TILE` pixels, with ``boxes``
    ``(box, colour)`` outlined, as a PNG data URI."""
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    f = max(1, -(-TILE // max(h, w)))
    pic = Image.fromarray(np.round(255 * np.clip(rgb, 0, 1)).astype(np.uint8))
    pic = pic.resize((w * f, h * f), Image.NEAREST)
    draw = ImageDraw.Draw(pic)
    for box, colour in boxes:
        if box is None:
            continue
        (r0, r1), (c0, c1) = box["rows"], box["cols"]
        draw.rectangle([c0 * f, r0 * f, (c1 + 1) * f - 1, (r1 + 1) * f - 1], outline=colour,
                       width=max(1, f // 3))
    buf = io.BytesIO()
    pic.save(buf, format="PNG", optimize=True)
    return data_uri(buf.getvalue())


def image_tile(image: np.ndarray, boxes=()) -> str:
    """A mean image (C x H x W in [0, 1])."""
    return _png(_rgb(image), boxes)


def heat_tile(image: np.ndarray, m: np.ndarray, boxes=()) -> str:
    """An attribution map over its dimmed mean image: colour map ``inferno`` from 0 to the
    map's largest value, opaque in proportion to the value."""
    import matplotlib

    peak = float(m.max())
    v = np.clip(m / peak, 0, 1) if peak > 0 else np.zeros_like(m)
    heat = matplotlib.colormaps["inferno"](v)[..., :3]
    base = 0.5 * _rgb(image)
    a = v[..., None]
    return _png(base * (1 - a) + heat * a, boxes)


def difference_tile(d: np.ndarray, boxes=()) -> str:
    """A difference map on the colour map ``RdBu_r``: white at 0, red for more and blue
    for less attribution, both ends at the largest absolute difference."""
    import matplotlib

    peak = float(np.abs(d).max())
    v = 0.5 + 0.5 * (d / peak if peak > 0 else np.zeros_like(d))
    return _png(matplotlib.colormaps["RdBu_r"](v)[..., :3], boxes)


def _per_px(m: np.ndarray) -> str:
    return f"{100 * float(np.abs(m).max()):.2f} %"


def naming_section(naming: Naming | None) -> dict | None:
    """What the page shows of the naming: per class its mean image, mean map and
    difference map with their boxes and line; per cluster (by id) its mean image, mean map
    and line; the method and thresholds in words."""
    if naming is None:
        return None
    classes = []
    for c in naming.classes:
        tr = c["top_ranked"]
        classes.append({
            "name": c["class"], "line": c["line"], "images": c["images"],
            "image": image_tile(c["mean_image"]),
            "heat": heat_tile(c["mean_image"], c["map"], [(c["region"], PEAK_BOX)]),
            "peak": _per_px(c["map"]),
            "difference": None if c["difference"] is None else difference_tile(
                c["difference"], [(c["region"], PEAK_BOX), (tr["increase"], MORE_BOX),
                                  (tr["decrease"], LESS_BOX)]),
            "difference_peak": None if c["difference"] is None else _per_px(c["difference"]),
            "top_images": None if tr is None else tr["images"]})
    clusters = {c["cluster"]: {
        "line": c["line"], "images": c["images"],
        "image": image_tile(c["mean_image"], [(c["position"], POSITION_BOX)]),
        "heat": heat_tile(c["mean_image"], c["map"], [(c["region"], PEAK_BOX)]),
        "peak": _per_px(c["map"])} for c in naming.clusters}
    return {"attribution": ATTRIBUTION, "confident": f"{CONFIDENT:.2f}",
            "images": naming.record["images"], "top": naming.record["top"],
            "peak_fraction": f"{PEAK_FRACTION:.0%}",
            "concentrated": f"at most {CONCENTRATED_AREA:.0%} of the image holding at least "
                            f"{CONCENTRATED_ENRICHMENT:g} times its area share",
            "position": f"{POSITION_DISTANCE:.2f}", "colour": f"{COLOUR_DISTANCE:.2f}",
            "band": f"{100 * BAND_POINTS:.0f} points and a factor of {BAND_RATIO:g}",
            "classes": classes, "clusters": clusters}
