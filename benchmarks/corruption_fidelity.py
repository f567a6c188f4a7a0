"""Fidelity of ``debiaskit.data.corruptions`` against the original CIFAR-10-C code.

The original is ``ImageNet-C/create_c/make_cifar_c.py`` of hendrycks/robustness. This
script contains none of its code: at run time it takes the file (and the frost textures
next to it) out of a git directory you give it, into a temporary folder, applies the
fixes that let it run with today's libraries as plain text substitutions (``FIXES``
below), and runs, with a Python of your choice that has the
original's dependencies (numpy, scipy, scikit-image, opencv, Pillow, Wand + ImageMagick),
a small driver that loads only the function definitions (the text up to the module's
``# /////////////// End Distortions`` marker; its torch / torchvision imports are served by
empty stand-in modules, since no function uses them) and applies each corruption image by
image exactly as the original's loop does: PIL RGB image in, ``np.uint8(result)`` out,
with ``np.random.seed(seed)`` called once before each (corruption, severity) run.

The same images then go through ``corrupt(images, name, severity,
np.random.RandomState(seed))`` in this interpreter, and each (corruption, severity) is
compared: mean / max absolute difference per value (grey levels), fraction of identical
values, and the mean intensity of clean, original and ours (so that agreement in
distribution can be judged where the draws cannot match).

    python benchmarks/corruption_fidelity.py \\
        --reference-git-dir /work/.mirror/hendrycks+robustness/repo \\
        --reference-python /work/fidelity/env/bin/python \\
        --images 200 --out benchmarks/results/corruption_fidelity.json

Images: the first ``--images`` training images of ``--data`` (``x_train[:N]``), or a
seeded random subset with ``--subset-seed``. Exits 2 with a one-line message when the
reference git directory or Python is missing.

``--extra-reference LABEL:PYTHON[:SKIP_FIXES]`` (repeatable) runs the original once more
on another library stack and adds a table per stack; ``SKIP_FIXES`` names ``FIXES`` ids
not to apply there (all four for a stack on which the original runs unchanged).

Reference environments used for ``results/corruption_fidelity.*`` (outside the repo)::

    apt-get install -y libmagickwand-6.q16-6        # ImageMagick 6.9.11 Q16 for Wand
    python3.11 -m venv env && env/bin/pip install --only-binary=:all: numpy==1.26.4 \
        scipy==1.11.4 scikit-image==0.20.0 opencv-python-headless==4.8.1.78 \
        Pillow==9.5.0 Wand==0.6.13                 # main reference
    python3.11 -m venv envnew && envnew/bin/pip install --only-binary=:all: numpy==2.4.6 \
        scipy==1.17.1 scikit-image==0.26.0 opencv-python-headless==5.0.0.93 \
        Pillow==13.0.0 Wand==0.7.2                 # ours' library stack
    python3.7 -m venv env37 && env37/bin/pip install --only-binary=:all: numpy==1.18.2 \
        scipy==1.3.0 scikit-image==0.15.0 opencv-python-headless==4.2.0.34 \
        Pillow==7.1.1 Wand==0.5.8                  # LfF's pins (opencv headless build)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ORIGINAL_PATH = "ImageNet-C/create_c/make_cifar_c.py"
FROST_FILES = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg",
               "frost6.jpg"]
END_MARKER = "# /////////////// End Distortions ///////////////"

#: Hendrycks' generation order (the order of make_cifar_c.py's loop).
ALL_CORRUPTIONS = [
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression", "speckle_noise", "gaussian_blur",
    "spatter", "saturate"]

#: Corruptions that draw no random numbers at all (notes section 4, "others").
NO_DRAWS = {"defocus_blur", "zoom_blur", "brightness", "contrast", "saturate",
            "jpeg_compression", "pixelate", "gaussian_blur"}

#: The documented compatibility fixes (notes section 7), as (id, pattern, replacement,
#: where documented). Each is a plain regular-expression text substitution on the
#: original's source; none changes what the code computes. ``--skip-fixes`` leaves some
#: out, for an old stack that lacks the replacement (``channel_axis`` needs skimage >= 0.19).
FIXES = [
    ("float_", r"\bnp\.float_\b", "np.float64",
     "notes §7: np.float_ was removed in NumPy 2.0 (plasma_fractal / fog)"),
    ("fromstring", r"\bnp\.fromstring\(", "np.frombuffer(",
     "notes §7: np.fromstring(bytes, np.uint8) raises in NumPy 2.4 (motion_blur, snow)"),
    ("multichannel", r"\bmultichannel=True\b", "channel_axis=-1",
     "notes §7: gaussian(..., multichannel=True) raises in scikit-image 0.26 "
     "(gaussian_blur, glass_blur)"),
    ("interpolation", r"from scipy\.ndimage\.interpolation import map_coordinates",
     "from scipy.ndimage import map_coordinates",
     "notes §7: scipy.ndimage.interpolation is a deprecated namespace (elastic_transform)"),
]

#: Why a corruption can differ from the original even when implemented faithfully; shown
#: in the Markdown table for corruptions whose outputs are not identical.
CAUSES = {
    "impulse_noise": "the reference scikit-image ({skimage}) draws s&p from its own "
                     "np.random.default_rng(None), seeded from OS entropy, so np.random.seed "
                     "does not control it: only the distribution can match (scikit-image "
                     "0.15.0 and 0.17.2 still draw it from the global np.random)",
    "motion_blur": "the original blurs with ImageMagick's MagickMotionBlurImage ({magick}) "
                   "through Wand and a PNG round trip; ours is a numpy re-implementation. On "
                   "ImageMagick 6.9.11-60 Q16 a probe found the PNG value to be "
                   "floor(round(257 s) / 257) of the exact weighted sum s",
    "snow": "cv2.cvtColor(RGB2GRAY) on float32: ours computes (0.299 R + 0.587 G) + 0.114 B "
            "in float32, as OpenCV 4.2.0 does; OpenCV 4.8.1 and 5.0.0 differ from that in "
            "the last bit (a probe on 20 images: 18.6 % of values, by 1.2e-7), which moves "
            "a few values across an integer before the truncating uint8 cast (here OpenCV "
            "{cv2}). Checked: with ours' formula substituted for cvtColor in the original run "
            "on OpenCV 4.8.1, severity 5 on these 200 images becomes identical (45 -> 0 "
            "differing values)",
    "jpeg_compression": "JPEG codec: the original ran with Pillow {pil} built with {jpeg_ref}, "
                        "ours with {codec_ours}; a probe (quality 80, 20 "
                        "images) found IJG libjpeg 9.0 and libjpeg-turbo 3.2.0 to differ in "
                        "both the encoded bytes and the decoding of the same bytes",
    "elastic_transform": "ours reproduces OpenCV 4.x warpAffine and SciPy < 1.6 "
                         "map_coordinates(mode='reflect') (see its docstring); here the "
                         "original ran with OpenCV {cv2} and SciPy {scipy}. SciPy 1.6 changed "
                         "'reflect' for samples that fall outside the image (a probe with "
                         "±3 px displacements: SciPy 1.5.4 vs 1.17.1 differ only within 3 px "
                         "of the border, by up to 97 levels); OpenCV 4.8.1 and 5.0.0 "
                         "warpAffine differ by up to 2.5 levels in 99 % of values",
}


def die(msg: str) -> None:
    print(f"corruption_fidelity: {msg}", file=sys.stderr)
    sys.exit(2)


# --------------------------------------------------------------------------- reference

DRIVER = r'''
"""Driver run by the reference Python: load the original's function definitions and
apply each corruption per image as make_cifar_c.py's loop does."""
import json, sys, time, types, warnings
from pathlib import Path

work = Path(sys.argv[1])
spec = json.loads((work / "jobs.json").read_text())

import numpy as np
from PIL import Image
import scipy.ndimage, skimage, skimage.filters, skimage.util, skimage.color, cv2  # noqa
import wand.image, wand.api  # noqa

# torch / torchvision are imported at the top of the module but used only by its data
# loading code, which is not executed: empty stand-ins satisfy the imports while the
# module is loaded, and are removed afterwards (libraries such as array-api-compat look
# for a "torch" in sys.modules at call time).
STUBS = ["torch", "torch.utils", "torch.utils.data", "torchvision",
         "torchvision.datasets", "torchvision.transforms"]
assert not any(name in sys.modules for name in STUBS)
for name in STUBS:
    sys.modules[name] = types.ModuleType(name)
source = (work / "make_cifar_c_functions.py").read_text()
module = types.ModuleType("make_cifar_c_functions")
module.__file__ = str(work / "make_cifar_c_functions.py")
try:
    exec(compile(source, module.__file__, "exec"), module.__dict__)
finally:
    for name in STUBS:
        del sys.modules[name]

images = np.load(work / "images.npy")
versions = {"python": sys.version.split()[0], "numpy": np.__version__}
import scipy, skimage, cv2, PIL, wand.version
from PIL import features


def jpeg_library():
    """The JPEG library Pillow was built with (features.version needs Pillow >= 8)."""
    turbo = features.check_feature("libjpeg_turbo")
    try:
        version = features.version("libjpeg_turbo" if turbo else "jpg")
    except AttributeError:
        version = getattr(Image.core, "libjpeg_turbo_version" if turbo else "jpeglib_version",
                          "?")
    return ("libjpeg-turbo " if turbo else "libjpeg ") + str(version)


import inspect, skimage.util
versions.update(scipy=scipy.__version__, skimage=skimage.__version__, cv2=cv2.__version__,
                pillow=PIL.__version__, jpeg=jpeg_library(),
                wand=wand.version.VERSION, magick=wand.version.MAGICK_VERSION)
versions["skimage_sp_own_rng"] = "default_rng" in inspect.getsource(skimage.util.random_noise)
results = {"versions": versions, "jobs": []}
for name, severity in spec["jobs"]:
    fn = getattr(module, name)
    np.random.seed(spec["seed"])
    out = np.empty_like(images)
    nonfinite = 0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, img in enumerate(images):
            # == Compose([ToTensor(), ToPILImage()])(img): a lossless uint8 HWC -> PIL RGB
            # conversion (notes section 1).
            result = fn(Image.fromarray(img, mode="RGB"), severity)
            values = np.asarray(result, dtype=float)  # PIL results (jpeg, pixelate) too
            nonfinite += int(values.size - np.isfinite(values).sum())
            out[i] = np.uint8(result)
    seconds = time.perf_counter() - t0
    np.save(work / f"ref_{name}_{severity}.npy", out)
    results["jobs"].append({"name": name, "severity": severity, "seconds": seconds,
                            "nonfinite": nonfinite})
(work / "ref_results.json").write_text(json.dumps(results))
'''


def git(git_dir: str, *args: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True,
                          capture_output=True).stdout


def prepare_reference(git_dir: str, work: Path, skip: tuple = ()) -> dict:
    """Extract the original and its frost textures into ``work``, apply ``FIXES`` and keep
    only the function definitions. Returns what was done, for the record."""
    commit = git(git_dir, "rev-parse", "HEAD").decode().strip()
    source = git(git_dir, "show", f"HEAD:{ORIGINAL_PATH}").decode()
    folder = ORIGINAL_PATH.rsplit("/", 1)[0]
    for frost in FROST_FILES:  # the original opens './frostN.*' relative to its cwd
        (work / frost).write_bytes(git(git_dir, "show", f"HEAD:{folder}/{frost}"))
    applied = []
    for fix_id, pattern, replacement, why in FIXES:
        if fix_id in skip:
            continue
        source, count = re.subn(pattern, replacement, source)
        applied.append({"id": fix_id, "pattern": pattern, "replacement": replacement,
                        "count": count, "documented": why})
    cut = source.find(END_MARKER)
    if cut < 0:
        die(f"{ORIGINAL_PATH} at {commit[:7]} has no '{END_MARKER}' line")
    (work / "make_cifar_c_functions.py").write_text(source[:cut])
    return {"commit": commit, "file": ORIGINAL_PATH, "fixes": applied,
            "kept": f"module text before '{END_MARKER}' (imports, helpers, the 19 "
                    "functions); its CIFAR loading / saving loop is not run",
            "stubbed_imports": ["torch", "torch.utils.data", "torchvision.datasets",
                                "torchvision.transforms"]}


def run_reference(python: str, work: Path, jobs: list, seed: int) -> dict:
    (work / "jobs.json").write_text(json.dumps({"jobs": jobs, "seed": seed}))
    (work / "driver.py").write_text(DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([python, str(work / "driver.py"), str(work)], cwd=work, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        die(f"the reference driver failed: {tail[0]}")
    return json.loads((work / "ref_results.json").read_text())


# --------------------------------------------------------------------------- ours

def our_versions() -> dict:
    import cv2
    import PIL
    import scipy
    import skimage
    from PIL import features
    try:
        from debiaskit.data.corruptions.digital import jpeg_backend
        codec = jpeg_backend()
    except Exception as err:  # older or unfinished module
        codec = f"unknown ({type(err).__name__})"
    return {"python": sys.version.split()[0], "numpy": np.__version__, "jpeg_codec": codec,
            "scipy": scipy.__version__, "skimage": skimage.__version__,
            "cv2": cv2.__version__, "pillow": PIL.__version__,
            "jpeg": ("libjpeg-turbo " + str(features.version("libjpeg_turbo"))
                     if features.check_feature("libjpeg_turbo")
                     else "libjpeg " + str(features.version("jpg")))}


def repo_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--",
                                "src/debiaskit/data/corruptions"],
                               cwd=Path(__file__).parent.parent, capture_output=True,
                               text=True).stdout.strip()
        return out + (" + uncommitted changes in src/debiaskit/data/corruptions" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


# --------------------------------------------------------------------------- compare

def compare(clean: np.ndarray, ref: np.ndarray, ours: np.ndarray) -> dict:
    c, r, o = (a.astype(np.int16) for a in (clean, ref, ours))
    d = np.abs(o - r)
    per_image = d.reshape(len(d), -1).max(axis=1)
    differing = np.flatnonzero(per_image > 0)
    return {
        "identical_images": float((per_image == 0).mean()),
        "first_differing_image": int(differing[0]) if len(differing) else None,
        "mad": float(d.mean()), "max_abs": int(d.max()),
        "identical": float((d == 0).mean()), "within_1": float((d <= 1).mean()),
        "differing": int((d > 0).sum()),
        "mean_clean": float(c.mean()), "mean_original": float(r.mean()),
        "mean_ours": float(o.mean()),
        "change_original": float(r.mean() - c.mean()), "change_ours": float(o.mean() - c.mean()),
        "abs_change_original": float(np.abs(r - c).mean()),
        "abs_change_ours": float(np.abs(o - c).mean()),
        "std_original": float(r.std()), "std_ours": float(o.std()),
    }


def kind_of(name: str, ref_versions: dict) -> str:
    if name in NO_DRAWS:
        return "deterministic"
    if name == "impulse_noise" and ref_versions.get("skimage_sp_own_rng"):
        return "distribution only"
    return "seeded"


def fmt(x, digits=2):
    return "—" if x is None else f"{x:.{digits}f}"


def substitutions(rv: dict, ov: dict) -> dict:
    """Library versions of a reference (rv) and of ours (ov), for the CAUSES texts."""
    return dict(skimage=rv.get("skimage"), magick=rv.get("magick", "").split(" http")[0],
                pil=rv.get("pillow"), jpeg_ref=rv.get("jpeg"), pil_ours=ov.get("pillow"),
                jpeg_ours=ov.get("jpeg"), cv2=rv.get("cv2"), cv2_ours=ov.get("cv2"),
                scipy=rv.get("scipy"), scipy_ours=ov.get("scipy"),
                codec_ours=ov.get("jpeg_codec", f"Pillow {ov.get('pillow')}"))


def why_cell(name: str, metrics: list, subs: dict) -> str:
    if all(x["identical"] == 1.0 for x in metrics):
        return "identical"
    if name in CAUSES:
        return CAUSES[name].format(**subs)
    count = sum(x["differing"] for x in metrics)
    return f"not explained ({count} values differ, by at most " \
           f"{max(x['max_abs'] for x in metrics)})"


def table(rows: dict, sev: list, subs: dict, with_means: bool) -> list:
    head = (f"| corruption | kind | MAD s{sev[0]} | MAD s{sev[-1]} | max s{sev[0]} / s{sev[-1]} "
            f"| identical s{sev[0]} / s{sev[-1]} ")
    if with_means:
        head += (f"| mean change orig / ours s{sev[0]} "
                 f"| mean change orig / ours s{sev[-1]} ")
    head += "| MAD <= 1 | where and why the rest differ |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name in ALL_CORRUPTIONS:
        got = [rows.get((name, s)) for s in sev]
        if not any(got):
            continue
        kind = next(g["kind"] for g in got if g)
        if not all(g and "metrics" in g for g in got):
            err = next((g["error"] for g in got if g and "error" in g), "missing")
            blanks = "— | " * (6 if with_means else 4)
            lines.append(f"| {name} | {kind} | {blanks}no | ours raised: {err} |")
            continue
        m = [g["metrics"] for g in got]
        ok = all(x["mad"] <= 1.0 for x in m)
        mark = ("yes" if ok else "**no**") if kind != "distribution only" else (
            "n/a" + (" (yes)" if ok else ""))
        cells = [name, kind, f"{m[0]['mad']:.3f}", f"{m[-1]['mad']:.3f}",
                 f"{m[0]['max_abs']} / {m[-1]['max_abs']}",
                 f"{m[0]['identical']:.3f} / {m[-1]['identical']:.3f}"]
        if with_means:
            cells += [f"{m[0]['change_original']:.2f} / {m[0]['change_ours']:.2f}",
                      f"{m[-1]['change_original']:.2f} / {m[-1]['change_ours']:.2f}"]
        cells += [mark, why_cell(name, m, subs)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict) -> str:
    rv, ov = report["reference"]["versions"], report["ours"]["versions"]
    sev = report["severities"]
    subs = substitutions(rv, ov)
    lines = [
        "# CIFAR-10-C corruptions: debiaskit vs the original make_cifar_c.py",
        "",
        f"Original: hendrycks/robustness@{report['reference']['commit'][:7]} "
        f"`{ORIGINAL_PATH}`, run with Python {rv['python']}, numpy {rv['numpy']}, scipy "
        f"{rv['scipy']}, scikit-image {rv['skimage']}, opencv {rv['cv2']}, Pillow "
        f"{rv['pillow']} (jpeg {rv['jpeg']}), Wand {rv['wand']} on {subs['magick']}. "
        f"Ours: debiaskit {report['ours']['commit'] or '?'} with numpy {ov['numpy']}, "
        f"scipy {ov['scipy']}, scikit-image {ov['skimage']}, opencv {ov['cv2']}, "
        f"Pillow {ov['pillow']} (jpeg {ov['jpeg']}); ours' jpeg_compression codec: "
        f"{ov.get('jpeg_codec', 'unknown')}.",
        "",
        f"Measured {report['measured_at']}. "
        f"Images: {report['images']['description']}. Seed {report['seed']}: "
        "`np.random.seed(seed)` before each (corruption, severity) in the original, "
        "`np.random.RandomState(seed)` for ours. Differences are in grey levels (0..255) "
        "over all values (N x 32 x 32 x 3); *mean change* = mean output minus mean clean "
        "image.",
        "",
        "Kinds: *deterministic* = no random draws; *seeded* = draws from the legacy global "
        "generator, which ours replays, so identical output is possible; *distribution only* "
        "= the reference's draws are not controlled by the seed. Acceptance: deterministic "
        "corruptions within 1 grey level on average (MAD <= 1).",
        "",
    ]
    rows = {(r["name"], r["severity"]): r for r in report["results"]}
    lines += table(rows, sev, subs, with_means=True)
    missing = report["missing"]
    if report["ours"]["import_error"]:
        lines += ["", f"`debiaskit.data.corruptions` did not import: "
                      f"{report['ours']['import_error']}"]
    if missing:
        lines += ["", f"Not in `debiaskit.data.corruptions` yet: {', '.join(missing)}."]
    for extra in report.get("extra_references", []):
        ev = extra["versions"]
        skipped = [f[0] for f in FIXES if f[0] not in {x["id"] for x in extra["fixes"]}]
        lines += [
            "", f"## The same comparison, original run on another stack: {extra['label']}",
            "",
            f"Python {ev['python']}, numpy {ev['numpy']}, scipy {ev['scipy']}, scikit-image "
            f"{ev['skimage']}, opencv {ev['cv2']}, Pillow {ev['pillow']} (jpeg {ev['jpeg']}), "
            f"Wand {ev['wand']} on {ev['magick'].split(' http')[0]}"
            + (f"; fixes not applied: {', '.join(skipped)}" if skipped else "") + ".", ""]
        erows = {(r["name"], r["severity"]): r for r in extra["results"]}
        lines += table(erows, sev, substitutions(ev, ov), with_means=False)
    lines += [
        "", "## Detail (main reference)", "",
        "Mean abs change = mean absolute difference from the clean image; std = standard "
        "deviation of all output values. Seconds: the whole run of N images.", "",
        "| corruption | sev | MAD | max | identical | within 1 | identical images "
        "(first differing) | mean clean | mean orig | mean ours | mean abs change orig / "
        "ours | std orig / ours | non-finite in orig | s orig / ours |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if "metrics" not in r:
            continue
        x = r["metrics"]
        first = "—" if x["first_differing_image"] is None else x["first_differing_image"]
        lines.append(
            f"| {r['name']} | {r['severity']} | {x['mad']:.3f} | {x['max_abs']} "
            f"| {x['identical']:.4f} | {x['within_1']:.4f} | {x['identical_images']:.3f} "
            f"({first}) | {x['mean_clean']:.2f} | {x['mean_original']:.2f} "
            f"| {x['mean_ours']:.2f} "
            f"| {x['abs_change_original']:.2f} / {x['abs_change_ours']:.2f} "
            f"| {x['std_original']:.2f} / {x['std_ours']:.2f} | {r['nonfinite_original']} "
            f"| {r['seconds_original']:.2f} / {r['seconds_ours']:.2f} |")
    lines += ["", "Compatibility fixes applied to a temporary copy of the original for the "
              "main reference (plain text substitutions):", ""]
    for f in report["reference"]["fixes"]:
        lines.append(f"- `{f['pattern']}` -> `{f['replacement']}` ({f['count']}x); "
                     f"{f['documented']}")
    lines.append("")
    return "\n".join(lines)


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference-git-dir", required=True,
                    help="git directory of hendrycks/robustness (e.g. from a fetched snapshot)")
    ap.add_argument("--reference-python", required=True,
                    help="Python with numpy, scipy, scikit-image, opencv, Pillow and Wand")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--subset-seed", type=int, default=None,
                    help="take a seeded random subset of x_train instead of the first N")
    ap.add_argument("--data", default="/work/shared/data/cifar10.npz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--severities", default="1,5")
    ap.add_argument("--corruptions", default=",".join(ALL_CORRUPTIONS))
    ap.add_argument("--skip-fixes", default="",
                    help="comma-separated ids of FIXES not to apply (e.g. multichannel for "
                         "scikit-image < 0.19)")
    ap.add_argument("--extra-reference", action="append", default=[],
                    metavar="LABEL:PYTHON[:SKIP_FIXES]",
                    help="also compare against the original run with another Python (another "
                         "library stack); reported in a second table. Repeatable")
    ap.add_argument("--out", required=True, help="JSON results; the Markdown goes next to it")
    ap.add_argument("--md", default=None, help="Markdown path (default: --out with .md)")
    args = ap.parse_args(argv)

    git_dir = Path(args.reference_git_dir)
    if not git_dir.is_dir() or subprocess.run(
            ["git", f"--git-dir={git_dir}", "cat-file", "-e", f"HEAD:{ORIGINAL_PATH}"],
            capture_output=True).returncode != 0:
        die(f"reference git dir {git_dir} is missing or has no {ORIGINAL_PATH}")
    if not (Path(args.reference_python).is_file()
            and os.access(args.reference_python, os.X_OK)):
        die(f"reference python {args.reference_python} is missing or not executable")

    extra_refs = []
    for spec in args.extra_reference:
        label, _, rest = spec.partition(":")
        python, _, extra_skip = rest.partition(":")
        if not (label and Path(python).is_file() and os.access(python, os.X_OK)):
            die(f"extra reference {spec!r}: python {python or '?'} is missing or not executable")
        extra_refs.append((label, python, tuple(x for x in extra_skip.split(",") if x)))

    severities = [int(s) for s in args.severities.split(",")]
    wanted = [c for c in args.corruptions.split(",") if c]
    try:
        from debiaskit.data.corruptions import CORRUPTIONS, corrupt
        from debiaskit.train.record import machine
        available = [c for c in wanted if c in CORRUPTIONS]
        import_error = None
    except Exception as err:  # the module may not exist yet
        CORRUPTIONS, corrupt, available = (), None, []
        machine = dict
        import_error = f"{type(err).__name__}: {err}"
    if not available:
        print(f"corruption_fidelity: nothing to compare "
              f"({import_error or 'no requested corruption in CORRUPTIONS'})", file=sys.stderr)

    with np.load(args.data) as d:
        x_train = d["x_train"]
        if args.subset_seed is None:
            idx = np.arange(args.images)
            desc = f"the first {args.images} CIFAR-10 training images (`x_train[:{args.images}]` " \
                   f"of `{Path(args.data).name}`)"
        else:
            idx = np.sort(np.random.RandomState(args.subset_seed).choice(
                len(x_train), args.images, replace=False))
            desc = f"{args.images} CIFAR-10 training images, indices " \
                   f"`sort(RandomState({args.subset_seed}).choice(50000, {args.images}, " \
                   f"replace=False))` of `{Path(args.data).name}`"
        images = np.ascontiguousarray(x_train[idx])

    jobs = [[c, s] for c in available for s in severities]
    ours_out, ours_info = {}, {}
    for name, severity in jobs:
        t1 = time.perf_counter()
        try:
            out = np.asarray(corrupt(images, name, severity, np.random.RandomState(args.seed)))
            if out.shape != images.shape or out.dtype != np.uint8:
                raise TypeError(f"returned {out.dtype} {out.shape}, "
                                f"expected uint8 {images.shape}")
            ours_out[name, severity] = out
            ours_info[name, severity] = {"seconds_ours": time.perf_counter() - t1}
        except Exception as err:
            ours_info[name, severity] = {"error": f"{type(err).__name__}: {err}"}
            print(f"{name} s{severity}: ours raised {ours_info[name, severity]['error']}",
                  flush=True)

    def measure(python: str, skip: tuple, label: str):
        with tempfile.TemporaryDirectory(prefix="corruption_fidelity.") as tmp:
            work = Path(tmp)
            np.save(work / "images.npy", images)
            info = prepare_reference(str(git_dir), work, skip)
            t0 = time.perf_counter()
            ref = run_reference(python, work, jobs, args.seed)
            print(f"{label}: {len(jobs)} runs in {time.perf_counter() - t0:.1f} s", flush=True)
            ref_jobs = {(j["name"], j["severity"]): j for j in ref["jobs"]}
            results = []
            for name, severity in jobs:
                entry = {"name": name, "severity": severity,
                         "kind": kind_of(name, ref["versions"]), **ours_info[name, severity]}
                if (name, severity) in ours_out:
                    original = np.load(work / f"ref_{name}_{severity}.npy")
                    entry.update(seconds_original=ref_jobs[name, severity]["seconds"],
                                 nonfinite_original=ref_jobs[name, severity]["nonfinite"],
                                 metrics=compare(images, original, ours_out[name, severity]))
                    m = entry["metrics"]
                    print(f"  {label} {name} s{severity}: MAD {m['mad']:.3f} max {m['max_abs']} "
                          f"identical {m['identical']:.4f}", flush=True)
                results.append(entry)
        return {**info, "versions": ref["versions"], "python": python}, results

    skip = tuple(x for x in args.skip_fixes.split(",") if x)
    ref_info, results = measure(args.reference_python, skip, "reference")
    extras = []
    for label, python, extra_skip in extra_refs:
        info, extra_results = measure(python, extra_skip, label)
        extras.append({"label": label, **info, "results": extra_results})

    report = {
        "reference": ref_info,
        "extra_references": extras,
        "ours": {"versions": our_versions(), "commit": repo_commit(),
                 "available": list(CORRUPTIONS), "import_error": import_error},
        "images": {"count": args.images, "source": args.data, "split": "x_train",
                   "subset_seed": args.subset_seed, "description": desc,
                   **({"indices": idx.tolist()} if args.subset_seed is not None else {})},
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": machine(),
        "seed": args.seed, "severities": severities, "results": results,
        "missing": [c for c in wanted if c not in available],
        "acceptance": "deterministic corruptions (no random draws) within 1 grey level on "
                      "average (MAD <= 1)",
    }

    def failing_of(rows):
        return sorted({r["name"] for r in rows if r["kind"] == "deterministic"
                       and ("error" in r or r["metrics"]["mad"] > 1.0)})

    failing = failing_of(results)
    report["deterministic_failing"] = failing
    for extra in extras:
        extra["deterministic_failing"] = failing_of(extra["results"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        from debiaskit.runs import write_json
        write_json(out, report)
    except ImportError:
        write_text_atomic(out, json.dumps(report, indent=2, sort_keys=True))
    md = Path(args.md) if args.md else out.with_suffix(".md")
    write_text_atomic(md, markdown(report))
    print(f"wrote {out} and {md}; deterministic corruptions over MAD 1: "
          f"{', '.join(failing) or 'none'}"
          + "".join(f"; on {e['label']}: {', '.join(e['deterministic_failing']) or 'none'}"
                    for e in extras))
    return 0


if __name__ == "__main__":
    sys.exit(main())
