"""Replays of parity fixtures: one module ``replay_<name>.py`` per reference code.

Each module has ``replay(fixture, options) -> debiaskit.parity.Comparison``: it builds
debiaskit's own method from ``options`` (the manifest's ``options`` or its
``negative_control`` options), loads the fixture's initial weights, feeds the recorded
batches and random draws through the method's ``update`` on one thread, and compares
every recorded quantity step by step.

This package also holds the whole test suite's rule for the real data
(:data:`DATA_DIR`, :func:`require_data`): tests/conftest.py and the test modules import
it from here.
"""

import functools
import os
import re
import zipfile
from pathlib import Path

import pytest

from debiaskit.data.sources.files import one_line, read_sha256sums, sha256_file
from debiaskit.errors import DataError

#: The real data directory: DEBIASKIT_DATA, else the sibling ../shared/data (the whole
#: test suite reads it from here, tests/conftest.py too).
DATA_DIR = Path(os.environ.get("DEBIASKIT_DATA") or
                Path(__file__).resolve().parents[3] / "shared" / "data").resolve()

#: The arrays each real archive holds (the data directory's README.md).
REAL_ARCHIVES = {
    "mnist.npz": ("x_train", "y_train", "x_test", "y_test"),
    "cifar10.npz": ("x_train", "y_train", "x_test", "y_test", "test_lossless"),
    "bar_64.npz": ("x_train", "y_train", "x_test", "y_test", "classes", "names_train",
                   "names_test"),
}


def in_ci() -> bool:
    """Whether the tests run in CI (the environment variable ``CI`` is ``true``)."""
    return os.environ.get("CI") == "true"


def data_unavailable(reason: str):
    """End the calling test because real data it needs is missing or unreadable: under
    ``CI=true`` a failure (CI must run on the real data, never skip it silently), elsewhere
    a skip; ``reason`` (squashed to one line) is the message either way. Reports (-rs)
    name the calling test's line, not this helper's."""
    __tracebackhide__ = True
    reason = re.sub(r"\s+", " ", str(reason)).strip()
    if in_ci():
        pytest.fail(f"CI=true needs the real data: {reason}", pytrace=False)
    pytest.skip(reason)


def require_data(name: str, directory=None) -> Path:
    """``directory / name`` (``directory`` defaults to :data:`DATA_DIR`) when that file is
    there and sound; else :func:`data_unavailable` (fail under ``CI=true``, skip elsewhere)
    with a one-line reason. Sound means: its sha256 matches ``SHA256SUMS`` next to it when
    that lists it; an ``.npz`` loads as an npz archive without pickles, and a known archive
    (:data:`REAL_ARCHIVES`) holds all of its arrays. Checked once per file version."""
    __tracebackhide__ = True
    directory = Path(DATA_DIR if directory is None else directory)
    path = directory / name
    try:
        stat = path.stat()
    except OSError:
        stat = None
    if stat is None or not path.is_file():
        data_unavailable(f"real {name} not found in {directory}; set DEBIASKIT_DATA")
    problem = _problem(str(path), stat.st_size, stat.st_mtime_ns)
    if problem:
        data_unavailable(f"real {name} in {directory} {problem}; re-copy it or set "
                         f"DEBIASKIT_DATA")
    return path


@functools.lru_cache(maxsize=None)
def _problem(path: str, size: int, mtime_ns: int) -> str | None:
    """What is wrong with the file at ``path`` (None: nothing); ``size`` and ``mtime_ns``
    only key the cache. An ``.npz`` is read as numpy writes it (a zip of ``.npy`` members):
    every member's header is read, not its data, which the sha256 (when listed) covers."""
    import numpy as np

    path = Path(path)
    try:
        listed = read_sha256sums(path.parent).get(path.name)
        if listed is not None:
            actual = sha256_file(path)
            if actual != listed:
                return (f"is corrupt or altered (sha256 {actual[:12]}... is not "
                        f"{listed[:12]}... from SHA256SUMS)")
        if path.suffix != ".npz":
            return None
        with open(path, "rb") as fh:
            if fh.read(6) == b"\x93NUMPY":
                return "is not an npz archive (it is a single .npy array)"
        if not zipfile.is_zipfile(path):
            return "is not an npz archive (not a whole zip file: truncated or another format)"
        arrays = []
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                try:
                    with archive.open(member) as fh:
                        major, _ = np.lib.format.read_magic(fh)
                        read = (np.lib.format.read_array_header_1_0 if major == 1 else
                                np.lib.format.read_array_header_2_0)
                        _, _, dtype = read(fh)
                    if dtype.hasobject:
                        raise ValueError("it holds Python objects (pickles)")
                except Exception as exc:  # zip, zlib and numpy format errors alike
                    return f"cannot be read as an npz archive ({member}: {one_line(exc)})"
                arrays.append(member.removesuffix(".npy"))
        missing = [k for k in REAL_ARCHIVES.get(path.name, ()) if k not in arrays]
        if missing:
            return (f"lacks the array(s) {', '.join(missing)} (it holds "
                    f"{', '.join(arrays) or 'nothing'})")
    except (OSError, DataError) as exc:
        return f"cannot be read ({one_line(exc)})"
    return None
