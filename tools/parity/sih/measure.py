"""Fill a SiH fixture's ``measured`` field: replay it with its options and its negative
control (tests/parity/replay_sih.py) and rewrite the manifest.

    OMP_NUM_THREADS=1 python tools/parity/sih/measure.py tests/parity/fixtures/NAME.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests"))

from debiaskit.parity import load_fixture, write_fixture  # noqa: E402
from parity.replay_sih import replay  # noqa: E402


def main(path: str) -> None:
    torch.set_num_threads(1)
    fixture = load_fixture(path)
    manifest = dict(fixture.manifest)
    faithful = replay(fixture, manifest["options"])
    negative = replay(fixture, manifest["negative_control"]["options"])
    print("options:", faithful.summary())
    print("negative control:", negative.summary())
    if not faithful.passed or negative.first_failure is None:
        raise SystemExit("the fixture does not separate its options from the negative control")
    manifest["measured"] = {"options": faithful.as_record(),
                            "negative_control": negative.as_record()}
    write_fixture(Path(path).with_suffix(""), fixture.arrays, manifest)


if __name__ == "__main__":
    main(sys.argv[1])
