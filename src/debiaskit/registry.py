"""One registry style for every named thing a user chooses: methods, networks, image
sources and dataset protocols.

A :class:`Registry` maps names to entries of one kind. Entries are added once, by
``REGISTRY.register(name)`` as a decorator or ``REGISTRY.register(name, entry)`` as a call;
a second entry under one name is an error (a silent replacement would change what a name
means). ``REGISTRY.find(name)`` returns the entry or raises the one-line error that lists
the known names; reading it as a mapping (``name in R``, ``R[name]``, iteration in the
order of registration) works as for a dict.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from .errors import unknown_name


class Registry(Mapping):
    """Named entries of one ``kind`` (the word the unknown-name error uses)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict = {}

    def register(self, name: str, entry=None):
        """Add ``entry`` under ``name``; without ``entry``, a decorator that adds what it
        decorates (and returns it unchanged)."""
        if entry is None:
            return lambda decorated: self.register(name, decorated)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def find(self, name: str):
        """The entry of ``name``; a one-line ConfigError naming the known ones otherwise."""
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries)
        return self._entries[name]

    def __getitem__(self, name: str):
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
