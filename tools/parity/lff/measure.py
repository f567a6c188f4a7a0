"""Fill the ``measured`` field of an LfF fixture's manifest by replaying it through
debiaskit (tests/parity/replay_lff.py), with its options and its negative control, each
to the last step. Also refreshes the manifest's descriptive fields from manifests.py.

usage (debiaskit's environment): OMP_NUM_THREADS=1 python tools/parity/lff/measure.py
       lff-cmnist-mlp-30steps [--fixtures DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2].parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from manifests import MANIFESTS  # noqa: E402
from parity.replay_lff import replay  # noqa: E402

from debiaskit.parity import load_fixture  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--fixtures", default=str(REPO / "tests" / "parity" / "fixtures"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    path = Path(args.fixtures) / f"{args.name}.json"
    fixture = load_fixture(path)
    which = "cmnist" if args.name.startswith("lff-cmnist") else "cc10"
    manifest = fixture.manifest
    static = MANIFESTS[which]
    manifest["data"] = {**static["data"], "sha256": manifest["data"]["sha256"],
                        **{k: v for k, v in manifest["data"].items()
                           if k not in static["data"] and k != "sha256"}}
    for key in ("options", "negative_control", "compared", "tolerances", "divergences",
                "deviations", "notes"):
        manifest[key] = static[key]
    fixture.manifest = manifest
    measured = {}
    for which_options, options in (("options", manifest["options"]),
                                   ("negative_control", manifest["negative_control"]["options"])):
        result = replay(fixture, options, full=True)
        print(f"{which_options}: {result.summary()}")
        measured[which_options] = result.as_record()
    manifest["measured"] = measured
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    print("updated", path)


if __name__ == "__main__":
    main()
