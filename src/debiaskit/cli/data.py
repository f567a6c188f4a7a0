"""``debiaskit data info``: counts per (class, bias) and checksums of a dataset;
``debiaskit data write-folder``: a dataset as a folder of PNG images plus metadata.csv."""

from __future__ import annotations

from .options import Parser, add_data_options, data_params

NAME = "data"


def add_parser(sub) -> None:
    from ..data.protocols import PROTOCOLS

    d = sub.add_parser(NAME, help="inspect datasets, write them as image folders")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    info = dsub.add_parser("info", help="counts per (class, bias) and checksums of a dataset")
    info.add_argument("dataset", help="dataset protocol: " + ", ".join(PROTOCOLS))
    add_data_options(info)
    write = dsub.add_parser(
        "write-folder", help="a dataset as PNG images plus metadata.csv (path,y,split,bias), "
        "for 'debiaskit discover FOLDER --labels metadata.csv' or --dataset folder")
    write.add_argument("--dataset", required=True,
                       help="dataset protocol: " + ", ".join(PROTOCOLS))
    add_data_options(write)
    write.add_argument("--out", required=True, help="new or empty folder to write")
    write.add_argument("--train-subset", type=int, help="write a seeded random subset of N "
                       "training images (the ones 'debiaskit train --train-subset N' trains on)")
    write.add_argument("--eval-subset", type=int,
                       help="write seeded random subsets of N images of each evaluation split")
    write.add_argument("--seed", type=int, default=0, help="seed of the subsets (default 0)")


def run(args) -> None:
    if args.data_command == "write-folder":
        return write_folder(args)
    from ..data.protocols import build_data

    bundle = build_data(args.dataset, args.data_dir, args.download, **data_params(args))
    print(f"protocol {bundle.protocol} {bundle.params}")
    for ds in (bundle.train, *bundle.evals.values()):
        print()
        print(ds.summary())
        print(f"checksum {ds.checksum()}")


def write_folder(args) -> None:
    from ..data.folder_writer import CSV_NAME, check_empty_folder, write_image_folder
    from ..data.protocols import build_data
    from ..errors import ConfigError
    from ..train import random_subset

    check_empty_folder(args.out)
    for option, value in (("--train-subset", args.train_subset),
                          ("--eval-subset", args.eval_subset)):
        if value is not None and value < 1:
            raise ConfigError(f"{option} must be at least 1, got {value}")
    bundle = build_data(args.dataset, args.data_dir, args.download, **data_params(args))
    splits = {"train": random_subset(bundle.train, args.train_subset, args.seed)}
    for name, ds in bundle.evals.items():
        if name == "train":
            raise ConfigError(f"{args.dataset} has an evaluation split named train; it cannot "
                              "be told from the training split in one folder")
        splits[name] = random_subset(ds, args.eval_subset, args.seed)
    counts = write_image_folder(splits, args.out)
    print(f"protocol {bundle.protocol} {bundle.params}")
    print(f"wrote {sum(counts.values())} images ("
          + ", ".join(f"{k} {v}" for k, v in counts.items()) + f") and {CSV_NAME} to {args.out}"
          + ("; bias labels in its bias column" if splits["train"].has_bias else ""))
    print(f"discover: debiaskit discover {args.out} --labels {CSV_NAME} --out FOUND")
