"""Corrupted CIFAR-10 generation cost: the full training set of one protocol generated into
an empty cache, then loaded from it; writes a JSON with both times and the CPU.

    python benchmarks/cc10_generation.py [--type type0] [--conflict-ratio 0.01]
        [--threads N] [--out benchmarks/results/cc10_generation.json]

Run it from the repository with DEBIASKIT_DATA pointing at the data directory. The cache
goes to a fresh temporary folder (DEBIASKIT_CACHE), removed afterwards. Per-corruption
costs are in benchmarks/corruption_speed.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--type", default="type0", choices=("type0", "type1"))
    parser.add_argument("--conflict-ratio", type=float, default=0.01)
    parser.add_argument("--severity", type=int, default=4, help="LfF severity (4 = Hendrycks 5)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch / OpenCV threads (default: library defaults)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    cache = tempfile.mkdtemp(prefix="dk-cc10-cache-")
    os.environ["DEBIASKIT_CACHE"] = cache
    try:
        import numpy as np  # noqa: F401  (imported before timing)
        import torch
        from debiaskit import runs
        from debiaskit.data.protocols import build_data
        from debiaskit.data.sources import load_source
        from debiaskit.precision import cpu_name

        if args.threads:
            torch.set_num_threads(args.threads)
            import cv2
            cv2.setNumThreads(args.threads)
        load_source("cifar10")  # reading the archive is not generation
        params = {"conflict_ratio": args.conflict_ratio, "type": args.type,
                  "severity": args.severity}
        t0 = time.perf_counter()
        first = build_data("corrupted_cifar10", **params)
        generate = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = build_data("corrupted_cifar10", **params)
        reload = time.perf_counter() - t0
        same = (first.train.checksum() == second.train.checksum()
                and first.evals["test"].checksum() == second.evals["test"].checksum())
        result = {
            "protocol": "corrupted_cifar10", "params": params,
            "train_images": len(first.train), "test_images": len(first.evals["test"]),
            "generate_seconds_train_and_test": round(generate, 2),
            "reload_seconds_train_and_test": round(reload, 2),
            "reload_identical": bool(same),
            "train_checksum": first.train.checksum(),
            "cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
        }
        for k, v in result.items():
            print(f"{k}: {v}")
        if args.out:
            runs.write_json(args.out, result)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
