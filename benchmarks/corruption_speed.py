"""Speed of the CIFAR-10-C corruptions (debiaskit.data.corruptions) on real CIFAR-10 images.

For every corruption, seconds per 1,000 images at Hendrycks severities 1 and 5 (best of
``--repeats`` runs on the first ``--images`` CIFAR-10 training images, after a warm-up
call), both wall-clock and process CPU time, with one thread (OpenMP/BLAS/OpenCV limited
to 1). With ``--lff`` it also times, in full, the two LfF Corrupted CIFAR-10 training
sets as the budget counts them: 50,000 training images, 5,000 per corruption of the Type0
list (resp. Type1 list) at Hendrycks severity 5, each corruption on its own 5,000 images.

    python benchmarks/corruption_speed.py [--data-dir DIR] [--images 1000] [--repeats 2]
                                          [--lff] [--out benchmarks/results/corruption_speed.json]

The machine is shared: the load average before and after is recorded; CPU time is the
figure least affected by other processes.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import PIL  # noqa: E402
import scipy  # noqa: E402
import skimage  # noqa: E402

from debiaskit import runs  # noqa: E402
from debiaskit.data.corruptions import CORRUPTIONS, corrupt  # noqa: E402
from debiaskit.data.corruptions.digital import jpeg_backend  # noqa: E402
from debiaskit.data.sources import load_source  # noqa: E402
from debiaskit.precision import cpu_name  # noqa: E402

LFF_TYPE0 = ("snow", "frost", "fog", "brightness", "contrast", "spatter", "elastic_transform",
             "jpeg_compression", "pixelate", "saturate")
LFF_TYPE1 = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur",
             "defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "original")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "corruption_speed.json"


def timed(images, name, severity, seed):
    wall, cpu = time.perf_counter(), time.process_time()
    corrupt(images, name, severity, seed)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--severities", default="1,5")
    ap.add_argument("--corruptions", default=",".join(CORRUPTIONS))
    ap.add_argument("--lff", action="store_true", help="also time the LfF Type0/Type1 sets")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    cv2.setNumThreads(1)
    src = load_source("cifar10", args.data_dir)
    x = np.ascontiguousarray(src.x_train[:args.images])
    n = len(x)
    severities = [int(s) for s in args.severities.split(",")]
    names = [s for s in args.corruptions.split(",") if s]
    res = {
        "what": "seconds per 1,000 CIFAR-10 training images (x_train[:N]), best of repeats, "
                "after a warm-up call; wall-clock and process CPU time",
        "cpu_model": cpu_name(), "cpu_count": os.cpu_count(), "threads": 1,
        "images": n, "repeats": args.repeats,
        "load_average_before": os.getloadavg(),
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__,
                     "scikit-image": skimage.__version__, "opencv": cv2.__version__,
                     "pillow": PIL.__version__, "python": platform.python_version()},
        "jpeg_backend": jpeg_backend(),
        "per_1000": {},
    }
    print(f"CPU {res['cpu_model']} ({res['cpu_count']} cores), 1 thread, {n} images, "
          f"load average {res['load_average_before'][0]:.2f}")
    print(f"{'corruption':18s} " + " ".join(f"{'sev ' + str(s) + ' wall/cpu':>17s}"
                                            for s in severities))
    for name in names:
        corrupt(x[:16], name, 5, 0)  # warm-up: imports, frost textures, caches
        row = {}
        for s in severities:
            best = min((timed(x, name, s, rep) for rep in range(args.repeats)),
                       key=lambda t: t[1])
            row[str(s)] = {"wall_seconds": best[0] * 1000 / n, "cpu_seconds": best[1] * 1000 / n}
        res["per_1000"][name] = row
        print(f"{name:18s} " + " ".join(
            f"{row[str(s)]['wall_seconds']:8.2f}/{row[str(s)]['cpu_seconds']:<8.2f}"
            for s in severities))
    if args.lff:
        res["lff"] = {}
        for label, group in (("type0", LFF_TYPE0), ("type1", LFF_TYPE1)):
            per, wall_total, cpu_total = {}, 0.0, 0.0
            for k, name in enumerate(group):
                part = np.ascontiguousarray(src.x_train[k * 5000:(k + 1) * 5000])
                wall, cpu = timed(part, name, 5, k)
                per[name] = {"wall_seconds": wall, "cpu_seconds": cpu, "images": len(part)}
                wall_total += wall
                cpu_total += cpu
            res["lff"][label] = {"images": 5000 * len(group), "severity": 5,
                                 "wall_seconds": wall_total, "cpu_seconds": cpu_total,
                                 "per_corruption": per}
            print(f"LfF {label}: {5000 * len(group)} images at Hendrycks severity 5 in "
                  f"{wall_total:.1f} s wall, {cpu_total:.1f} s CPU (1 thread)")
    res["load_average_after"] = os.getloadavg()
    print(f"load average after: {res['load_average_after'][0]:.2f}")
    if args.out:
        runs.write_json(Path(args.out), res)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
