"""Issue 35, point 2: naming the shortcut. ``debiaskit discover`` (default settings, one
thread) on data whose shortcut is known, then what its page names, and a screenshot of it.

    python benchmarks/naming_shortcut.py
    python benchmarks/naming_shortcut.py --dataset shortcut_mnist --data kind=mark
    python benchmarks/naming_shortcut.py --dataset colored_mnist --conflict-ratio 0.01 --train-subset 20000

Without ``--dataset`` the data is a stand-in for a local-mark shortcut built here: a seeded
choice of ``--size`` MNIST training digits, each with a white 3 x 3 square at the place of
its bias value (:data:`MARKS`), the digit's own class for all but ``--conflict-ratio`` of
them (default 2 %), whose bias value is another class drawn uniformly.

Writes ``benchmarks/results/naming_<tag>.json``: the command, the discovery's settings and
evaluation (hidden bias labels), the ``naming`` section of discovery.json (per class and per
cluster: regions, shares, the lines) and, scored with the hidden bias labels only, the
planted mark of each class (the pixels white in at least 90 % of its aligned images and
in at most 10 % of the other classes' aligned images, when there are such pixels) and
whether the region the class's line names holds it. ``naming_<tag>.png`` is a screenshot
of the page's top, the class maps included, by headless Chromium (``chromium``,
``chromium-browser`` or ``google-chrome``); without one, the class maps the page embeds
are saved as ``naming_<tag>-class-<c>.png`` instead (the JSON says which).
"""

from __future__ import annotations

import argparse
import base64
import platform
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from debiaskit import runs
from debiaskit.cli.options import pairs
from debiaskit.data.dataset import BiasedDataset
from debiaskit.data.sources import load_source
from debiaskit.discover import DiscoverConfig, DiscoveryInput, load_protocol_input, run_discovery
from debiaskit.train import versions

#: Top-left corner (row, column) of the stand-in's 3 x 3 mark per bias value.
MARKS = [(1, 1), (1, 12), (1, 24), (12, 24), (24, 24), (24, 12), (24, 1), (12, 1), (1, 6),
         (24, 18)]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def stand_in_digits(mnist, size: int, ratio: float, seed: int):
    """The stand-in's digits before their marks: a seeded choice of ``size`` MNIST
    training digits (N x 1 x 28 x 28, dataset order), their classes and bias values (the
    class, except a ``ratio`` share given another class drawn uniformly)."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(mnist.y_train), size, replace=False))
    x = np.ascontiguousarray(mnist.x_train[pick][:, None])
    y = mnist.y_train[pick].astype(np.int64)
    b = y.copy()
    swap = rng.random(size) < ratio
    b[swap] = (y[swap] + rng.integers(1, 10, int(swap.sum()))) % 10
    return x, y, b


def draw_marks(x: np.ndarray, b: np.ndarray, marks=MARKS) -> np.ndarray:
    """A copy of N x C x H x W images with a white 3 x 3 square at the corner ``marks[v]``
    of each image's bias value ``v``."""
    x = x.copy()
    for value, (top, left) in enumerate(marks):
        x[b == value, :, top:top + 3, left:left + 3] = 255
    return x


def mark_stand_in(data_dir, size: int, ratio: float, seed: int) -> DiscoveryInput:
    """The local-mark stand-in (module docstring)."""
    x, y, b = stand_in_digits(load_source("mnist", data_dir), size, ratio, seed)
    data = BiasedDataset("mark_stand_in/train", torch.from_numpy(draw_marks(x, b)),
                         torch.from_numpy(y), 10, b=torch.from_numpy(b), num_bias=10)
    return DiscoveryInput(data, [str(c) for c in range(10)], {
        "dataset": "mark stand-in (benchmarks/naming_shortcut.py)",
        "params": {"size": size, "conflict_ratio": ratio, "seed": seed}})


def planted_marks(data: BiasedDataset) -> dict:
    """Per class, the bounding box of its planted mark found with the hidden bias labels
    (module docstring), or None."""
    bright = data.x.float().mean(1) >= 0.9 * 255  # N x H x W
    aligned = data.aligned
    out = {}
    for c in range(data.num_classes):
        own = bright[aligned & (data.y == c)].float().mean(0)
        others = bright[aligned & (data.y != c)].float().mean(0)
        rows, cols = np.nonzero(((own >= 0.9) & (others <= 0.1)).numpy())
        out[c] = None if not len(rows) else {"rows": [int(rows.min()), int(rows.max())],
                                             "cols": [int(cols.min()), int(cols.max())]}
    return out


def holds(region: dict | None, box: dict | None) -> bool | None:
    """Whether ``region`` contains ``box`` (None when either is missing)."""
    if region is None or box is None:
        return None
    return (region["rows"][0] <= box["rows"][0] and box["rows"][1] <= region["rows"][1]
            and region["cols"][0] <= box["cols"][0] and box["cols"][1] <= region["cols"][1])


def conflicting_clusters(inp: DiscoveryInput, record: dict) -> dict | None:
    """Scored with the hidden bias labels: of the bias-conflicting images, the share whose
    cluster's dominant class is the class their bias value is aligned with, and the share
    whose cluster's dominant class is their own class (None without bias labels)."""
    data = inp.data
    if not data.has_bias:
        return None
    names = record["train"]["classes"]
    dominant = {s["cluster"]: names.index(s["dominant_class"]) for s in record["cluster_summary"]}
    clusters = np.array(record["clusters"])
    conflicting = np.flatnonzero(~data.aligned.numpy())
    shown = np.array([dominant[c] for c in clusters[conflicting]])
    bias = data.b.numpy()[conflicting]
    if data.aligned_bias is not None:  # class whose aligned bias value each image has
        aligned_class = {int(v): c for c, v in enumerate(data.aligned_bias.tolist())}
        bias = np.array([aligned_class.get(int(v), -1) for v in bias])
    return {"conflicting": int(len(conflicting)),
            "in_a_cluster_of_their_bias_value": 100.0 * float((shown == bias).mean()),
            "in_a_cluster_of_their_class": 100.0 * float(
                (shown == data.y.numpy()[conflicting]).mean())}


def screenshot(page: Path, png: Path, height: int) -> str | None:
    """A headless browser's screenshot of the page's top (1280 x ``height``), or None."""
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        return None
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--window-size=1280,{height}",
                    f"--screenshot={png.resolve()}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=300)
    return Path(browser).name


def class_pngs(page: Path, stem: Path) -> list[str]:
    """The class maps the page embeds, saved as PNG files (without a browser)."""
    html = page.read_text()
    out = []
    for uri, name in re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="class '
                                r'([^:"]+): mean attribution"', html):
        path = stem.with_name(f"{stem.name}-class-{name}.png")
        path.write_bytes(base64.b64decode(uri))
        out.append(path.name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", help="a built-in protocol (default: the mark stand-in)")
    ap.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                    help="protocol parameters, e.g. kind=mark")
    ap.add_argument("--conflict-ratio", type=float)
    ap.add_argument("--train-subset", type=int)
    ap.add_argument("--size", type=int, default=10_000, help="stand-in: MNIST digits")
    ap.add_argument("--data-dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", help="result name (default: mark_stand_in or DATASET_KIND)")
    ap.add_argument("--cluster-on", default=DiscoverConfig.cluster_on,
                    help="what the clusters are computed on (discover's --cluster-on)")
    ap.add_argument("--height", type=int, default=2300, help="screenshot height (pixels)")
    ap.add_argument("--no-screenshot", action="store_true", help="write the JSON only")
    ap.add_argument("--work", help="folder for the discovery (default: temporary)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    params = pairs(args.data, "--data")
    if args.conflict_ratio is not None:
        params["conflict_ratio"] = args.conflict_ratio
    t0 = time.perf_counter()
    if args.dataset is None:
        ratio = args.conflict_ratio if args.conflict_ratio is not None else 0.02
        inp = mark_stand_in(args.data_dir, args.size, ratio, args.seed)
        tag = args.tag or "mark_stand_in"
        command = (f"python benchmarks/naming_shortcut.py --size {args.size} "
                   f"--conflict-ratio {ratio} --seed {args.seed}")
    else:
        inp = load_protocol_input(args.dataset, args.data_dir, params=params,
                                  train_subset=args.train_subset, seed=args.seed)
        tag = args.tag or "_".join([args.dataset] + [str(v) for k, v in params.items()
                                                     if k == "kind"])
        command = ("python benchmarks/naming_shortcut.py --dataset " + args.dataset
                   + "".join(f" --data {k}={v}" for k, v in params.items()
                             if k != "conflict_ratio")
                   + (f" --conflict-ratio {args.conflict_ratio}"
                      if args.conflict_ratio is not None else "")
                   + (f" --train-subset {args.train_subset}" if args.train_subset else "")
                   + f" --seed {args.seed}")
    if args.cluster_on != DiscoverConfig.cluster_on:
        tag += f"_{args.cluster_on}"
        command += f" --cluster-on {args.cluster_on}"
    work = Path(args.work or tempfile.mkdtemp(prefix="naming-"))
    out = work / f"discovery-{tag}"
    record = run_discovery(inp, DiscoverConfig(seed=args.seed, cluster_on=args.cluster_on), out,
                           started=t0)
    results = Path("benchmarks/results")
    png = results / f"naming_{tag}.png"
    browser = saved = None
    if not args.no_screenshot:
        browser = screenshot(out / "discover.html", png, args.height)
        saved = ([png.name] if browser
                 else class_pngs(out / "discover.html", results / f"naming_{tag}"))
    marks = planted_marks(inp.data) if inp.data.has_bias else {}
    naming = record["naming"]
    scored = [{"class": c["class"], "planted_mark": marks.get(i), "region": c["region"],
               "region_holds_mark": holds(c["region"], marks.get(i))}
              for i, c in enumerate(naming["classes"])]
    result = {"issue": "35 point 2", "command": command,
              "machine": {"python": platform.python_version(),
                          "processor": platform.processor(), "torch_threads": 1},
              "versions": versions(), "input": record["input"], "train": {
                  k: record["train"][k] for k in ("size", "image_shape", "classes")},
              "settings": {k: record["settings"][k] for k in
                           ("epochs", "model", "q", "score", "cluster_on", "clusters", "seed")},
              "biased_model": record["biased_model"], "evaluation": record["evaluation"],
              "naming": naming, "marks_scored_with_hidden_labels": scored,
              "conflicting_images_clustered": conflicting_clusters(inp, record),
              "screenshot": None if args.no_screenshot else {
                  "browser": browser, "files": saved,
                  "what": "the page's top, 1280 px wide" if browser else
                  "no headless browser: the class maps the page embeds"},
              "seconds": record["seconds"]}
    runs.write_json(results / f"naming_{tag}.json", result)
    for c in naming["classes"]:
        print(c["line"])
    for c in naming["clusters"]:
        print(c["line"])
    hits = [s["region_holds_mark"] for s in scored if s["region_holds_mark"] is not None]
    if hits:
        print(f"the named region holds the planted mark in {sum(hits)} of {len(hits)} classes")
    clustered = result["conflicting_images_clustered"]
    if clustered:
        print(f"of {clustered['conflicting']} conflicting images, "
              f"{clustered['in_a_cluster_of_their_bias_value']:.1f} % are in a cluster of their "
              f"bias value, {clustered['in_a_cluster_of_their_class']:.1f} % of their class; "
              f"cluster NMI with the bias {record['evaluation']['cluster_nmi_bias']:.3f}")
    print(f"wrote {results}/naming_{tag}.json" + (f" and {', '.join(saved)}" if saved else "")
          + " "
          f"({time.perf_counter() - t0:.0f} s; discovery folder {out})")


if __name__ == "__main__":
    main()
