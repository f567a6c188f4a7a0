"""``debiaskit bench``: a paper's table next to its published numbers."""

from __future__ import annotations

from .options import (DATA_DIR, add_device_option, add_pack_options, add_precision_options,
                      compile_mode, pack_mode, pairs)

NAME = "bench"


def add_parser(sub) -> None:
    b = sub.add_parser(NAME, help="reproduce a paper table next to its published numbers")
    b.add_argument("preset", nargs="?", help="table preset (omit to list them)")
    b.add_argument("--seeds", type=int, help="train seeds 0 to N-1 of every method and row "
                   "(default: the preset's)")
    b.add_argument("--workers", type=int, help="parallel runs (default: number of cores)")
    b.add_argument("--methods", help="comma-separated subset of the preset's methods")
    b.add_argument("--rows", help="comma-separated subset of the preset's rows, e.g. 1,0.5")
    b.add_argument("--epochs", type=int, help="override the preset's epochs (stated in report)")
    add_precision_options(b, more="; stated in the report, and auto is chosen once for all "
                          "runs that start")
    add_pack_options(b, more="stated in the report")
    add_device_option(b)
    b.add_argument("--pack-seeds", choices=("auto", "on", "off"), default="auto",
                   help="train the seeds of one cell in one process as stacked networks "
                        "(ERM and LfF on the MLP; others run seed by seed): on, off, or auto "
                        "(the default: on where the runs' device is a GPU, off on a CPU, "
                        "where it does not pay); results equal separate runs' up to float "
                        "rounding, and summary.json's seed_pack records the decision")
    b.add_argument("--hp", action="append", metavar="KEY=VALUE",
                   help="method hyper-parameter over the preset's, for every chosen method "
                        "(stated in report; give a new --out)")
    b.add_argument("--out", default="bench-out", help="output folder: OUT/PRESET holds the "
                   "runs, report.md, results.json and curves.png (a rerun skips finished runs)")
    b.add_argument("--report-only", action="store_true", help="train nothing: write the "
                   "report of the runs already finished (each cell states its seeds)")
    b.add_argument("--data-dir", help=DATA_DIR)
    b.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster (ray.init address, "
                   "or 'local'); --out and --data-dir must be shared by all nodes")


def outputs(args) -> list:
    """The folders to check: ``OUT`` and what the bench writes in it, ``OUT/PRESET`` (none
    when it only lists the presets)."""
    return [(args.out, None), (f"{args.out}/{args.preset}", None)] if args.preset else []


def run(args) -> None:
    from ..bench import PRESETS, run_bench

    if not args.preset:
        for p in PRESETS.values():
            print(f"{p.name:20s} {p.title}")
        return
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    rows = [r.strip() for r in args.rows.split(",")] if args.rows else None
    print(run_bench(args.preset, args.out, args.seeds, args.workers, methods, args.epochs,
                    args.data_dir, ray_address=args.ray, rows=rows, precision=args.precision,
                    hparams=pairs(args.hp, "--hp"), force_precision=args.force_precision,
                    pack=pack_mode(args), compile=compile_mode(args),
                    report_only=args.report_only, device=args.device,
                    pack_seeds=args.pack_seeds))
