"""``debiaskit sweep``: a hyper-parameter search of one method, trials chosen by a declared
label-free rule (:mod:`debiaskit.bench.sweep`)."""

from __future__ import annotations

from ..errors import ConfigError
from .options import add_run_options, parse_value, run_config

NAME = "sweep"


def add_parser(sub) -> None:
    w = sub.add_parser(NAME, help="random hyper-parameter search of one method, run by the "
                       "bench runner, trials chosen by a declared rule")
    w.add_argument("method", help="method to tune (see 'debiaskit methods')")
    add_run_options(w)
    w.add_argument("--trials", type=int, default=8, help="trials (trial 0: the defaults)")
    w.add_argument("--seeds", type=int, default=2, help="training seeds per trial")
    w.add_argument("--search", help="comma-separated hyper-parameters to search (default: "
                   "every one with a search distribution; see 'debiaskit methods')")
    w.add_argument("--grid", metavar="NAME=V1,V2,...", help="instead of a random search, "
                   "one trial per listed value of one hyper-parameter")
    w.add_argument("--rule", default="heldout", help="label-free trial selection: heldout "
                   "(held-out plain accuracy), heldout_mixed (held-out accuracy with "
                   "backgrounds from other classes' images; needs masks) or objective (the "
                   "method's own objective, with early stopping); worst-group accuracy is "
                   "always reported beside it, labelled")
    w.add_argument("--workers", type=int, help="parallel runs (default: number of cores)")
    w.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster (or 'local')")
    w.add_argument("--out", required=True, help="sweep folder (a rerun resumes it)")


def run(args) -> None:
    from ..bench.runner import default_workers
    from ..bench.sweep import run_sweep

    base = run_config(args, threads=1)
    names = [n.strip() for n in args.search.split(",")] if args.search else None
    grid = None
    if args.grid:
        if args.search:
            raise ConfigError("give --grid or --search, not both")
        name, sep, values = args.grid.partition("=")
        if not sep or not name or not values:
            raise ConfigError(f"--grid {args.grid!r} must look like NAME=V1,V2,...")
        grid = {name.replace("-", "_"): [parse_value(v) for v in values.split(",")]}
    text, _ = run_sweep(base, args.out, args.trials, args.seeds, names, args.rule,
                        args.workers or default_workers(), args.ray, grid=grid)
    print(text)
