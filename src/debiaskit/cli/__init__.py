"""Command line: ``debiaskit train | data info | data write-folder | bench | explain KIND |
discover | report | methods | sweep | export``, one module per command (``add_parser(sub)``
and ``run(args)``; ``outputs(args)`` when its ``--out`` is not a plain folder).

Every user error is one line on stderr and exit status 2 (see :mod:`debiaskit.errors`);
every ``--out`` is checked before a command starts (:func:`check_out_option`); a closed
stdout pipe (``| head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import DebiaskitError
from . import bench, data, discover, explain, export, methods, report, sweep, train
from .options import Parser

#: The commands, in the order ``debiaskit --help`` lists them.
COMMANDS = {m.NAME: m for m in (train, data, bench, explain, discover, methods, sweep,
                                export, report)}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="debiaskit", description="Train classifiers that do not take the "
                    "shortcut, and benchmark debiasing methods.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return parser


def outputs(args) -> list:
    """``(path, example)`` for each output the command writes: ``example`` is a file name
    when the path names a file, None when it names a folder."""
    command = COMMANDS[args.command]
    if hasattr(command, "outputs"):
        return command.outputs(args)
    out = getattr(args, "out", None)
    return [] if out is None else [(out, None)]


def check_out_option(args) -> None:
    """One check of every command's --out before the command runs: a file where a folder
    is wanted (or the reverse), a path below a file, or a place where nothing can be
    created is a one-line error, and nothing is written (:func:`debiaskit.runs.check_out`)."""
    from .. import runs

    for path, example in outputs(args):
        runs.check_out(path, folder=example is None, example=example or "")


def main(argv=None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:
        # the reader of stdout has gone (`debiaskit data info ... | head -1`): stop without
        # a traceback; stdout now points at devnull, so that Python's own flush at exit
        # does not fail on the closed pipe again (exit status 1, as Python's docs do)
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout replaced by an object without a descriptor
            pass
        return 1


def _run(argv) -> int:
    args = build_parser().parse_args(argv)
    code = 0
    try:
        check_out_option(args)
        COMMANDS[args.command].run(args)
    except DebiaskitError as err:
        print(f"debiaskit: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("debiaskit: interrupted; run the same command again to resume", file=sys.stderr)
        code = 130
    sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
    return code
