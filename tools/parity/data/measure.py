"""Fill a data fixture's ``measured`` field by running its replay (debiaskit's venv)::

    DEBIASKIT_DATA=/work/shared/data OMP_NUM_THREADS=1 \
        python tools/parity/data/measure.py tests/parity/fixtures/data-cifar10s.json
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests"))

from debiaskit.parity import load_fixture  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    for path in sys.argv[1:]:
        fixture = load_fixture(path)
        module = importlib.import_module(f"parity.replay_{fixture.manifest['replay']}")
        measured = {}
        for which, options in (("options", fixture.manifest["options"]),
                               ("negative_control",
                                fixture.manifest["negative_control"]["options"])):
            result = module.replay(fixture, options)
            measured[which] = result.as_record()
            print(f"{fixture.name} {which}: {result.summary()}")
        manifest = dict(fixture.manifest, measured=measured)
        Path(path).write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
