"""Mutation testing of the metrics, the losses, the bias assignment and the method cores.

mutmut (configured in pyproject.toml, ``[tool.mutmut]``) copies ``src/`` to ``mutants/``,
writes every small change it knows (an operator, a constant, an argument dropped, a string
altered) into the functions below, and runs the fast test tier (``-m "not slow"``; the
structure test, which measures the source files, left out) against each one, only the
tests that reach the function. A mutant the tests notice is killed; one they do not
notice survived. A survivor is either a gap in the tests or *equivalent*: a change that
cannot alter what the function computes for any input it accepts (listed, with the
reason, in ``benchmarks/mutation_equivalent.json``).

    python benchmarks/mutation.py --out benchmarks/results/mutation.json

runs mutmut over :data:`CORES` (``--no-run`` only reads the results of an earlier run),
then writes, per module, killed / total, the equivalent mutants, the survivors no reason
covers, and the score killed / (total - equivalent). A timeout counts as killed (the tests
noticed: the mutant hangs). ``--markdown FILE`` also writes the table as Markdown.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from debiaskit import runs
from debiaskit.train.record import machine

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = ROOT / "benchmarks" / "mutation_equivalent.json"

#: module -> the functions mutated (mutmut's names: ``x_func`` for a function,
#: ``xǁClassǁmethod`` for a method). Metrics, losses and the assignment whole; of each
#: method, what computes its loss, weights, mask or walk (not its declarations, statistics
#: or plumbing).
CORES = {
    "debiaskit.metrics": ["*"],
    "debiaskit.losses": ["*"],
    "debiaskit.data.protocols.assignment": ["*"],
    "debiaskit.methods.lff": ["xǁLfFǁsample_weights", "xǁLfFǁupdate", "xǁLfFǁobjective_from_logits", "xǁLfFǁbiased_loss"],
    "debiaskit.methods.sih": ["x_gaussian_kl", "x_focal_weight", "xǁSiHǁ_latent",
                              "xǁSiHǁweights", "xǁSiHǁbias_loss", "xǁSiHǁloss",
                              "xǁSiHRDSǁweights", "xǁSiHRDSǁsample_weights"],
    "debiaskit.methods.gba": ["xǁGradientReversalǁforward", "xǁGradientReversalǁbackward",
                              "x_reverse_gradient", "x_gba_mask", "xǁGBAǁlambda_now",
                              "xǁGBAǁdisc_gradient", "xǁGBAǁmask", "xǁGBAǁloss",
                              "xǁGBAǁpredict", "xǁDomainIndependentǁdomain_logits",
                              "xǁDomainIndependentǁloss", "xǁDomainIndependentǁpredict"],
    "debiaskit.methods.cff": ["x_fgsm_background", "x_gradmask", "x_gradmask_of",
                              "x_code_logp_loss", "xǁCounterfactualFactualǁaugment",
                              "xǁCounterfactualFactualǁloss", "xǁMixupǁloss",
                              "xǁLabelSmoothingǁloss"],
    "debiaskit.methods.groupdro": ["x_group_dro_step"],
    "debiaskit.methods.jtt": ["xǁJTTǁ_find_errors", "xǁJTTǁcopies", "xǁJTTǁbegin_epoch",
                              "xǁJTTǁloss"],
    "debiaskit.methods.disent": ["xǁDisEntǁ_classify", "xǁDisEntǁsample_weights",
                                 "xǁDisEntǁloss", "xǁDisEntǁupdate"],
    "debiaskit.methods.lad.walk": ["*"],
}

#: mutmut's exit codes (mutmut.stats): 1 and 3 killed, 0 survived, timeouts as listed;
#: anything else is reported as it is.
KILLED, SURVIVED, TIMEOUT = {1, 3}, {0}, {24, -24, 36, 152, 255}


def patterns(cores: dict = CORES) -> list[str]:
    """mutmut name globs of every core function's mutants."""
    return [f"{module}.{fn}__mutmut_*" for module, fns in cores.items() for fn in fns]


def module_of(name: str) -> str:
    return next(m for m in sorted(CORES, key=len, reverse=True) if name.startswith(m + "."))


def exit_codes(mutants: Path) -> dict[str, int | None]:
    """Every mutant's recorded exit code, from mutmut's ``*.meta`` files."""
    out = {}
    for meta in mutants.rglob("*.py.meta"):
        out.update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def table(codes: dict, equivalent: dict) -> dict:
    """Per module: counts by outcome, the equivalent survivors, the unexplained ones, and
    the score killed / (total - equivalent)."""
    globs = patterns()
    rows = {m: {"total": 0, "killed": 0, "timeout": 0, "survived": 0, "not_checked": 0,
                "other": 0, "equivalent": [], "unexplained": []} for m in CORES}
    for name, code in sorted(codes.items()):
        if not any(fnmatch.fnmatchcase(name, g) for g in globs):
            continue
        row = rows[module_of(name)]
        row["total"] += 1
        if code is None:
            row["not_checked"] += 1
        elif code in KILLED:
            row["killed"] += 1
        elif code in TIMEOUT:
            row["timeout"] += 1
        elif code in SURVIVED:
            row["survived"] += 1
            row["equivalent" if name in equivalent else "unexplained"].append(name)
        else:
            row["other"] += 1
            row["unexplained"].append(f"{name} (exit {code})")
    for row in rows.values():
        caught = row["killed"] + row["timeout"]
        judged = row["total"] - len(row["equivalent"]) - row["not_checked"]
        row["score"] = round(100.0 * caught / judged, 1) if judged else None
    return rows


def markdown(result: dict) -> str:
    lines = ["| module | mutants | killed (+ timeout) | equivalent | unexplained survivors | "
             "score |", "|---|---|---|---|---|---|"]
    for module, r in result["modules"].items():
        lines.append(f"| `{module}` | {r['total']} | {r['killed']} (+ {r['timeout']}) | "
                     f"{len(r['equivalent'])} | {len(r['unexplained'])} | {r['score']} % |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--no-run", action="store_true", help="only read an earlier run")
    ap.add_argument("--max-children", type=int, default=2)
    args = ap.parse_args()
    equivalent = json.loads(EQUIVALENT.read_text())
    seconds = None
    if not args.no_run:
        t0 = time.perf_counter()
        # one OpenMP thread: a forked worker of a multi-threaded torch can hang on a lock,
        # which mutmut would record as a timeout (counted as killed) instead of a verdict
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children",
                        str(args.max_children), *patterns()], cwd=ROOT, check=False,
                       stdout=subprocess.DEVNULL, env=env)
        seconds = round(time.perf_counter() - t0, 1)
    codes = exit_codes(ROOT / "mutants")
    modules = table(codes, equivalent)
    stale = sorted(n for n in equivalent if codes.get(n) != 0)
    import mutmut
    result = {"machine": machine(), "mutmut": mutmut.__version__, "seconds": seconds,
              "tests": "fast tier: pytest tests/ -m 'not slow' "
                       "--ignore=tests/test_architecture.py",
              "modules": modules, "stale_equivalent_entries": stale}
    runs.write_json(args.out, result)
    if args.markdown:
        args.markdown.write_text(markdown(result))
    print(markdown(result))
    if stale:
        print("equivalent entries that no longer survive (renumbered or killed):", stale)


if __name__ == "__main__":
    main()
