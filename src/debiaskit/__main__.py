"""``python -m debiaskit``: the command line (:mod:`debiaskit.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
