"""``debiaskit discover``: bias-conflicting images and the shortcut, without bias labels
(:mod:`debiaskit.discover`)."""

from __future__ import annotations

from ..errors import ConfigError
from .options import add_data_options, add_device_option, data_params

NAME = "discover"


def add_parser(sub) -> None:
    from ..discover import CLUSTER_FEATURES, RANKINGS, SCORES, DiscoverConfig

    dflt = DiscoverConfig()
    v = sub.add_parser(NAME, help="find bias-conflicting images and the shortcut "
                       "without bias labels (GCE biased model, ranking, clusters, HTML page)")
    v.add_argument("folder", nargs="?", metavar="FOLDER", help="folder of images: with "
                   "--labels CSV (columns path,y), else one sub-folder per class")
    v.add_argument("--labels", metavar="CSV", help="labels file of FOLDER's images (columns "
                   "path,y; paths relative to FOLDER; a bias column only scores the result)")
    v.add_argument("--image-size", type=int, help="resize FOLDER's images to N x N")
    v.add_argument("--dataset", help="a built-in protocol instead of FOLDER; its bias labels "
                   "are hidden and only score the discovery")
    add_data_options(v)
    v.add_argument("--train-subset", type=int, help="discover on a seeded random subset of N "
                   "training images (as 'train --train-subset N --seed S')")
    v.add_argument("--epochs", type=int, default=dflt.epochs,
                   help="epochs of the GCE biased model")
    v.add_argument("--model", default=dflt.model, help="network of the biased model")
    v.add_argument("--batch-size", type=int, default=dflt.batch_size,
                   help="minibatch size of the biased model")
    v.add_argument("--lr", type=float, default=dflt.lr, help="Adam learning rate")
    v.add_argument("--q", type=float, default=dflt.q, help="GCE exponent q (LfF Eq. 2)")
    v.add_argument("--score", default=dflt.score, help="ranking score: " + "; ".join(
        f"{k}: {d}" for k, d in SCORES.items()))
    v.add_argument("--ema", type=float, default=dflt.ema, help="decay of --score ema")
    v.add_argument("--rankings", metavar="NAMES", help="comma-separated rankings to compute "
                   "(default: all but knn and sih; sih needs --sih, which always adds it): "
                   + "; ".join(f"{k}: {d}" for k, d in RANKINGS.items()))
    v.add_argument("--ranking", default=dflt.ranking, metavar="NAME",
                   help="the primary ranking (what discovery.json's order and error set "
                   "hold, which --reweight-from reads): auto (default) chooses the one whose "
                   "per-image loss separates a high-loss minority best (Otsu's separability, "
                   "no bias label read), or one of " + ", ".join(RANKINGS))
    v.add_argument("--erm-epochs", type=int, default=dflt.erm_epochs, help="most epochs of "
                   "the ERM model behind the erm and jtt rankings (the epoch the rule "
                   "prefers is kept)")
    v.add_argument("--ensemble", type=int, default=dflt.ensemble, help="GCE models in "
                   "each stage of the amplified ranking (seeds --seed, --seed + 1, ...)")
    v.add_argument("--amplify-drop", type=float, default=dflt.amplify_drop,
                   help="share of each class the amplified ranking's first stage scores "
                   "highest and leaves out of its second stage, in (0, 0.5)")
    v.add_argument("--amplify-epochs", type=int, default=dflt.amplify_epochs,
                   help="epochs of the amplified ranking's second-stage GCE models")
    v.add_argument("--knn-k", type=int, default=dflt.knn_k, help="nearest neighbours of "
                   "the knn ranking")
    v.add_argument("--cluster-on", default=dflt.cluster_on, help="; ".join(
        f"{k}: {d}" for k, d in CLUSTER_FEATURES.items()))
    v.add_argument("--clusters", type=int, help="k of k-means (default: number of classes)")
    v.add_argument("--threshold", type=float, help="foreground brightness in [0, 1) for the "
                   "colour statistics (default: each image's midpoint)")
    v.add_argument("--top", type=int, default=dflt.top,
                   help="top-ranked images listed and shown")
    v.add_argument("--examples", type=int, default=dflt.examples,
                   help="example images per cluster")
    v.add_argument("--sih", action="store_true", help="also train SiH label-free into "
                   "OUT/sih (MLP VAE; 28 x 28 images only): a second ranking by its biased "
                   "classifier's cross-entropy (--score sih makes it the primary one) and "
                   "its bias visualisation on the page")
    v.add_argument("--sih-epochs", type=int, default=dflt.sih_epochs,
                   help="epochs of the SiH run (last epoch kept)")
    v.add_argument("--seed", type=int, default=dflt.seed, help="seed of the biased model's "
                   "training, the clustering and --train-subset")
    add_device_option(v)
    v.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    v.add_argument("--out", required=True, help="new or empty folder for discovery.json, "
                   "ranking.csv and discover.html")


def parse_rankings(text: str | None) -> tuple[str, ...] | None:
    """``--rankings a,b``: the names (checked by the discovery's config), or None."""
    if text is None:
        return None
    return tuple(part.strip() for part in text.split(",") if part.strip())


def run(args) -> None:
    import time
    from pathlib import Path

    import torch

    from ..device import resolve_device
    from ..discover import (DiscoverConfig, check_config, check_out_dir, load_folder_input,
                            load_protocol_input, run_discovery)

    started = time.perf_counter()
    if (args.folder is None) == (args.dataset is None):
        raise ConfigError("give either FOLDER (images) or --dataset NAME, not both or neither")
    if args.folder is not None and (args.conflict_ratio is not None or args.data
                                    or args.aligned_ratio is not None or args.train_subset):
        raise ConfigError("--conflict-ratio, --aligned-ratio, --data and --train-subset are "
                          "for --dataset; FOLDER discovers on all its images")
    if args.dataset is not None and (args.labels or args.image_size):
        raise ConfigError("--labels and --image-size are for FOLDER; --dataset takes data "
                          "options (--data KEY=VALUE)")
    cfg = DiscoverConfig(epochs=args.epochs, model=args.model, batch_size=args.batch_size,
                         lr=args.lr, q=args.q, score=args.score, ema=args.ema,
                         cluster_on=args.cluster_on, clusters=args.clusters,
                         threshold=args.threshold, top=args.top, examples=args.examples,
                         seed=args.seed, sih=args.sih, sih_epochs=args.sih_epochs,
                         rankings=parse_rankings(args.rankings), ranking=args.ranking,
                         erm_epochs=args.erm_epochs, ensemble=args.ensemble,
                         amplify_drop=args.amplify_drop, amplify_epochs=args.amplify_epochs,
                         knn_k=args.knn_k)
    check_config(cfg)
    device = resolve_device(args.device)  # a device that is not here: before anything
    check_out_dir(args.out, sih=cfg.sih)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.folder is not None:
        inp = load_folder_input(args.folder, args.labels, args.image_size)
    else:
        inp = load_protocol_input(args.dataset, args.data_dir, args.download,
                                  data_params(args), args.train_subset, args.seed)
    record = run_discovery(inp, cfg, args.out, device, started)
    train = record["train"]
    print(f"{train['size']} training images, {len(train['classes'])} classes")
    for name, r in record["rankings"].items():
        ev = r["evaluation"]
        print(f"ranking {name:<10} ({r['model']}" + (
            f", epoch {r['stopped_at']} of {r['epochs']}" if r.get("stopped_at") else "")
            + f"): rule {r['rule']['eta']:.3f}, training accuracy "
            f"{r['train_accuracy']:.1f} %, error set {r['error_set_size']}" + (
                "" if ev is None or ev["precision_at_k"] is None else
                f"; precision@K {ev['precision_at_k']:.1f} % (K = {ev['conflicting']}), "
                "AUROC " + ("n/a" if ev["auroc"] is None else f"{ev['auroc']:.4f}"))
            + ("  <- primary" if r["primary"] else ""))
    print(f"primary ranking: {record['ranking']} ({record['ranking_selection']['reason']})")
    for c in record["cluster_summary"]:
        print(f"cluster {c['cluster']:>2}: {c['size']:>6} images, biased accuracy "
              f"{c['biased_accuracy']:5.1f} %, dominant class {c['dominant_class']} "
              f"({c['dominant_class_share']:.0f} %), {c['top_ranked']} of the top {cfg.top}")
    ev = record["evaluation"]
    if ev is not None:
        print(f"scored with the hidden bias labels ({ev['conflicting']} conflicting): "
              + ", ".join(f"precision@{k} {ev[f'precision_at_{k}']:.1f} %"
                          for k in (100, 600)) + (
                  f", recall@600 {ev['recall_at_600']:.1f} %" if ev["recall_at_600"] is not None
                  else "") + f", cluster NMI with the bias {ev['cluster_nmi_bias']:.3f}")
    if cfg.sih:
        sih = record["sih"]
        print(f"SiH ({cfg.sih_epochs} epochs, run folder {args.out}/{sih['run']}, "
              f"{record['seconds']['sih']:.1f} s)")
    print(f"{record['seconds']['total']:.1f} s; wrote {args.out}/discover.html, "
          "discovery.json, ranking.csv" + (", sih/" if cfg.sih else "")
          + (", sih_bias.png" if cfg.sih and "png" in record["sih"]["visualisation"] else ""))
    if cfg.sih and "error" in record["sih"]["visualisation"]:
        print(f"no SiH bias visualisation: {record['sih']['visualisation']['error']}")
    src = record["input"]
    if src["dataset"] == "folder":
        params = {**src["params"]}
        if src.get("classes_from") == "sub-folders":
            params["csv"] = str((Path(args.out) / "labels.csv").resolve())
        data = " ".join(f"--data {k}={v}" for k, v in params.items() if v is not None
                        and k in ("path", "csv", "image_size"))
        print(f"train from it: debiaskit train --dataset folder {data} --reweight-from "
              f"{args.out}")

