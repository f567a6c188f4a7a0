"""``debiaskit report``: one self-contained HTML page of run directories and bench folders."""

from __future__ import annotations

NAME = "report"
#: --out names a file (an example name for its error messages).
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


def run(args) -> None:
    from ..htmlreport import write_report

    print(f"wrote {write_report(args.paths, args.out, args.max_runs)}")
