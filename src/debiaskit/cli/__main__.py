"""``python -m debiaskit.cli``: the command line, as ``python -m debiaskit``."""

import sys

from . import main

sys.exit(main())
