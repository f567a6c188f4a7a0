"""Peak resident memory of one `debiaskit train` run, measured from outside.

    python benchmarks/peak_rss.py [--out FILE] -- TRAIN ARGS...
    e.g. python benchmarks/peak_rss.py --out benchmarks/results/cc10_lff_rss.json -- \
        --dataset corrupted_cifar10 --method lff --model resnet20 --epochs 1 --threads 2

The run goes to a fresh temporary directory (removed afterwards); the peak RSS is the
child's ``ru_maxrss`` (Linux: KiB). Dataset generation counts if the derived-dataset cache
is empty, so run once before to measure training alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out")
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    train_args = [a for a in args.train_args if a != "--"]
    work = tempfile.mkdtemp(prefix="dk-rss-")
    try:
        cmd = [sys.executable, "-m", "debiaskit", "train", *train_args, "--out",
               os.path.join(work, "run")]
        t0 = time.perf_counter()
        done = subprocess.run(cmd)
        seconds = time.perf_counter() - t0
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        summary_path = os.path.join(work, "run", "summary.json")
        summary = json.load(open(summary_path)) if os.path.exists(summary_path) else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from debiaskit.train.record import machine
    result = {"machine": machine(), "train_args": train_args, "exit_code": done.returncode,
              "peak_rss_mib": round(peak_kib / 1024, 1), "wall_seconds": round(seconds, 1),
              "summary": summary}
    print(json.dumps({k: v for k, v in result.items() if k != "summary"}, indent=1))
    if args.out:
        from debiaskit import runs
        runs.write_json(args.out, result)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
