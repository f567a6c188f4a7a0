"""``debiaskit methods``: every method with its needs, selection and hyper-parameters."""

from __future__ import annotations

NAME = "methods"


def add_parser(sub) -> None:
    sub.add_parser(NAME, help="list methods and their hyper-parameters")


def run(_args) -> None:
    from ..methods import METHODS
    from ..methods.hparams import search_of

    for name, cls in sorted(METHODS.items()):
        needs = ", ".join(sorted(cls.requires)) or "nothing beyond targets"
        print(f"{name}  (needs: {needs}; model selection: {cls.default_selection})")
        for key, hp in cls.declared_hparams.items():
            search = search_of(key, hp)
            print(f"    {key} = {hp.default!r}: {hp.doc}"
                  + (" [only to match the authors' code: docs/parity.md]"
                     if hp.authors_code else "")
                  + (f" [sweep: {search.describe()}]" if search else ""))
