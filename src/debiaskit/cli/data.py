"""``debiaskit data info``: counts per (class, bias) and checksums of a dataset."""

from __future__ import annotations

from .options import Parser, add_data_options, data_params

NAME = "data"


def add_parser(sub) -> None:
    from ..data.protocols import PROTOCOLS

    d = sub.add_parser(NAME, help="inspect datasets")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    info = dsub.add_parser("info", help="counts per (class, bias) and checksums of a dataset")
    info.add_argument("dataset", help="dataset protocol: " + ", ".join(PROTOCOLS))
    add_data_options(info)


def run(args) -> None:
    from ..data.protocols import build_data

    bundle = build_data(args.dataset, args.data_dir, args.download, **data_params(args))
    print(f"protocol {bundle.protocol} {bundle.params}")
    for ds in (bundle.train, *bundle.evals.values()):
        print()
        print(ds.summary())
        print(f"checksum {ds.checksum()}")
