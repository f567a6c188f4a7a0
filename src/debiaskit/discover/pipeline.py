"""A discovery from input to folder: train, score, rank and cluster (:func:`discover`),
then write every file at once through a temporary folder renamed into place
(:func:`run_discovery`)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from .. import locks, runs
from ..device import resolve_device
from ..errors import ConfigError
from ..methods.discovered import DISCOVERY
from .biased import biased_outputs
from .clusters import colour_statistics, feature_points, kmeans, summarise_clusters
from .config import (LABELS, PAGE, RANKING, SIH_DIR, SIH_PNG, DiscoverConfig, check_config,
                     check_out_dir)
from .inputs import DiscoveryInput
from .naming import name_shortcut
from .output import ranking_csv, result_json
from .page import MODEL_NAMES, render_page
from .ranking import Discovery, score_discovery, score_ranking
from .sih import check_sih_input
from .variants import compute_rankings, select_primary


def discover(inp: DiscoveryInput, cfg: DiscoverConfig, device="auto",
             sih_dir=None) -> Discovery:
    """Train the biased models, rank ``inp.data`` by each (:mod:`.variants`), choose the
    primary ranking (:mod:`.selection`), cluster and score (see the module docstring) on
    ``device`` (:func:`debiaskit.device.resolve_device`); with ``cfg.sih`` also train SiH
    into the run folder ``sih_dir`` for its ranking. Bias labels, if any, are read only to
    score the result. Each ranking's network stays reachable as ``rankings[name].net``
    (:attr:`Discovery.networks`, :attr:`Discovery.network` for the primary one)."""
    check_config(cfg)
    device = resolve_device(device)
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
    rankings, sih, sih_png = compute_rankings(inp, cfg, device, sih_dir, seconds)
    t = time.perf_counter()
    selection = select_primary(rankings, cfg)
    primary = selection["chosen"]
    main = rankings[primary]
    ce, pred, feats = biased_outputs(main.net, data, cfg.cluster_on == "features", device)
    seconds["select"] = time.perf_counter() - t
    y = data.y.numpy()
    order = main.order
    t2 = time.perf_counter()
    colour = colour_statistics(data.x, cfg.threshold)
    points = colour if cfg.cluster_on == "colour" else feature_points(feats.numpy())
    clusters, _ = kmeans(points, k, cfg.seed)
    summary = summarise_clusters(clusters, k, y, main.predictions, order,
                                 min(cfg.top, len(data)), cfg.examples, cfg.seed, colour,
                                 inp.class_names, data.b.numpy() if data.has_bias else None)
    seconds["cluster"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    naming = name_shortcut(main.net, data, ce.numpy(), pred.numpy(), order,
                           min(cfg.top, len(data)), clusters, k, colour, summary,
                           inp.class_names, cfg.seed, device,
                           f"the {MODEL_NAMES[main.model]} biased model")
    seconds["naming"] = time.perf_counter() - t3
    evaluation = score_discovery(order, main.errors, clusters, data, main.scores)
    for r in rankings.values():
        r.evaluation = score_ranking(r.order, r.errors, data, r.scores)
    return Discovery(rankings=rankings, primary=primary, clusters=clusters,
                     cluster_summary=summary, evaluation=evaluation, seconds=seconds,
                     colour=colour, sih=sih, sih_png=sih_png, selection=selection,
                     naming=naming)


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


def run_discovery(inp: DiscoveryInput, cfg: DiscoverConfig, out, device="auto",
                  started: float | None = None) -> dict:
    """Discover on ``inp`` and write the result into ``out``; returns discovery.json's
    content. ``started`` (a ``time.perf_counter`` value) counts loading the data into the
    total seconds. With ``cfg.sih`` the SiH run trains in ``out/sih`` first (``out`` may
    already hold only that folder, from an interrupted discovery: it is resumed). A lock
    beside ``out`` (:func:`debiaskit.locks.hold_beside`) keeps a second process from
    discovering into the same folder meanwhile: it refuses in one line."""
    check_out_dir(out, sih=cfg.sih)
    with locks.hold_beside(out, f"discovery folder {out}"):
        out = check_out_dir(out, sih=cfg.sih)  # (again: another process may have written it)
        return _discover_into(inp, cfg, out, device, started)


def _discover_into(inp: DiscoveryInput, cfg: DiscoverConfig, out: Path, device,
                   started: float | None) -> dict:
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
