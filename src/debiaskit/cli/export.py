"""``debiaskit export``: run directories to an experiment tracker."""

from __future__ import annotations

from ..errors import unknown_name

NAME = "export"


def add_parser(sub) -> None:
    from ..export import TRACKERS

    x = sub.add_parser(NAME, help="export run directories to an experiment tracker "
                       "(the run directory stays the source of truth)")
    x.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directories to export (each with config.json and metrics.jsonl)")
    x.add_argument("--to", default="tensorboard", help="; ".join(
        f"{k}: {v}" for k, v in TRACKERS.items()))
    x.add_argument("--out", required=True, help="new folder for the export (never overwritten)")


def run(args) -> None:
    from ..export import TRACKERS, export_tensorboard

    if args.to not in TRACKERS:
        raise unknown_name("tracker", args.to, TRACKERS)
    written = export_tensorboard(args.run_dirs, args.out)
    print(f"wrote {len(written)} TensorBoard log folder(s) into {args.out}; view them with "
          f"tensorboard --logdir {args.out}")
