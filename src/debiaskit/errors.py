"""The one exception type users see.

Every error that comes from bad input (unknown names, out-of-range values, missing or
corrupt data files, a method whose supervision the data lacks, an output directory that
holds a finished run, a full disk) is a :class:`DebiaskitError` whose message is one line
saying what is wrong and what to do. The CLI prints it and exits with status 2.
"""


class DebiaskitError(Exception):
    """A user-facing error: one line, says what to do."""


class DataError(DebiaskitError):
    """A data file is missing, corrupt, or in an unknown layout."""


class ConfigError(DebiaskitError):
    """A name or a value given by the user is unknown or out of range."""


def unknown_name(kind: str, name: str, known) -> ConfigError:
    """Build the standard error for an unknown registry name."""
    return ConfigError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(known))}")
