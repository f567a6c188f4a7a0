"""``debiaskit report``: one self-contained HTML page of run directories and bench folders."""

from __future__ import annotations

NAME = "report"
#: The example file name of --out (its default, and in its error messages).
OUT_FILE = "report.html"


def add_parser(sub) -> None:
    r = sub.add_parser(NAME, help="one self-contained HTML page (no server, no network) "
                       "of run directories and bench folders: tables vs the published "
                       "numbers, curves, sample weights, explain images")
    r.add_argument("paths", nargs="+", metavar="PATH", help="run directory, bench folder, or "
                   "a folder to search for both")
    r.add_argument("--out", default=OUT_FILE, help="HTML file to write (replaced if it "
                   "exists)")
    r.add_argument("--max-runs", type=int, default=12, help="run folders shown per bench or "
                   "searched folder (the rest are counted)")


def outputs(args) -> list:
    """--out names a file."""
    return [(args.out, OUT_FILE)]


def run(args) -> None:
    from ..htmlreport import write_report

    print(f"wrote {write_report(args.paths, args.out, args.max_runs)}")
