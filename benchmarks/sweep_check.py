"""Sweep acceptance check: the same sweep on the local worker pool and on a local Ray
cluster gives identical per-trial numbers, and a sweep killed midway and started again
runs only its unfinished runs and ends with the same numbers.

Runs ``debiaskit sweep lff`` (``--search lr,q``, Colored MNIST at 1 % conflicting) three
times into OUT/{pool,ray,killed}: on the pool, on Ray (``--ray local``), and on the pool
again, killed (SIGTERM to the whole process group) once ``--kill-after`` runs have
finished, then restarted. Prints the per-trial numbers, whether they are identical, the
restart's "N of M runs already finished" line, and the wall times; writes OUT/check.json.

    python benchmarks/sweep_check.py OUT [--trials 8] [--seeds 2] [--epochs 2]
                                         [--workers 2] [--kill-after 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from debiaskit.train.record import machine


def sweep_args(args, out: Path) -> list[str]:
    return [sys.executable, "-m", "debiaskit", "sweep", "lff", "--conflict-ratio", "0.01",
            "--trials", str(args.trials), "--seeds", str(args.seeds), "--search", "lr,q",
            "--epochs", str(args.epochs), "--out", str(out)]


def finished(out: Path) -> int:
    return len(list(out.glob("trial*/seed*/summary.json")))


def trials(out: Path) -> dict:
    data = json.loads((out / "sweep.json").read_text())["trials"]
    return {k: {key: v.get(key) for key in ("hparams", "heldout", "worst_group",
                                             "test_unbiased")} for k, v in data.items()}


def run(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--kill-after", type=int, default=5)
    args = ap.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        ap.error(f"{args.out} is not empty; give a new folder")
    res = {"settings": vars(args) | {"out": str(args.out)}, "machine": machine()}
    pool, ray, killed = (args.out / k for k in ("pool", "ray", "killed"))
    res["pool_seconds"], _ = run(sweep_args(args, pool) + ["--workers", str(args.workers)])
    res["ray_seconds"], _ = run(sweep_args(args, ray) + ["--ray", "local"])
    proc = subprocess.Popen(sweep_args(args, killed) + ["--workers", str(args.workers)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while finished(killed) < args.kill_after and proc.poll() is None:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait()
    res["finished_when_killed"] = finished(killed)
    res["restart_seconds"], out = run(sweep_args(args, killed) + ["--workers",
                                                                  str(args.workers)])
    res["restart_log"] = next(line for line in out.splitlines() if "already finished" in line)
    numbers = {k: trials(p) for k, p in (("pool", pool), ("ray", ray), ("killed", killed))}
    res["ray_equals_pool"] = numbers["ray"] == numbers["pool"]
    res["killed_and_restarted_equals_pool"] = numbers["killed"] == numbers["pool"]
    res["trials"] = numbers["pool"]
    for name, t in numbers["pool"].items():
        print(f"{name}: {t['hparams']} heldout {t['heldout']} worst_group {t['worst_group']} "
              f"test unbiased {t['test_unbiased']}")
    print(f"pool {res['pool_seconds']:.0f} s, ray {res['ray_seconds']:.0f} s; ray == pool: "
          f"{res['ray_equals_pool']}; killed after {res['finished_when_killed']} finished "
          f"runs, restart: {res['restart_log']!r} ({res['restart_seconds']:.0f} s); "
          f"restarted == pool: {res['killed_and_restarted_equals_pool']}")
    (args.out / "check.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
