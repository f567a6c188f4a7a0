"""Derived datasets (corrupted, recoloured, resized) generated once and cached on disk.

An entry is keyed by the sha256 of a canonical JSON of ``(kind, parameters, source
checksum, generator version)``: the same protocol parameters on the same source give the
same entry, and a second build is a load. Each entry is two files in
``<cache dir>/<kind>/``: ``<key>.npz`` (uncompressed arrays) and ``<key>.json`` (the key's
fields, the arrays' shapes and the sha256 of the ``.npz``). Both are written to a
temporary name and renamed into place (:func:`debiaskit.runs.atomic_write`), the JSON
last, so an interrupted generation (a killed process, a full disk: a one-line error)
leaves no entry; a load verifies the ``.npz`` against the JSON's checksum and rebuilds an
entry that does not match. A lock file serialises concurrent builds of one entry: a
second process waits for the first and then loads its entry.

The cache directory is ``DEBIASKIT_CACHE`` when set, else ``derived/`` inside the data
directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import warnings
from typing import Callable

import numpy as np

from .. import runs
from ..errors import DataError
from .sources import resolve_data_dir, sha256_file
from .sources.files import one_line

ENV_VAR = "DEBIASKIT_CACHE"


def cache_dir(data_dir=None) -> pathlib.Path:
    """``DEBIASKIT_CACHE`` if set, else ``<data dir>/derived`` (not created here)."""
    if os.environ.get(ENV_VAR):
        return pathlib.Path(os.environ[ENV_VAR]).expanduser().resolve()
    return resolve_data_dir(data_dir) / "derived"


def entry_key(kind: str, params: dict) -> str:
    """The sha256 of ``kind`` and ``params`` as canonical JSON (sorted keys)."""
    text = json.dumps({"kind": kind, **params}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class DerivedCache:
    """Generate-once storage of derived arrays (see the module docstring)."""

    def __init__(self, root=None, data_dir=None) -> None:
        self.root = pathlib.Path(root) if root is not None else cache_dir(data_dir)

    def paths(self, kind: str, params: dict) -> tuple[pathlib.Path, pathlib.Path]:
        key = entry_key(kind, params)[:32]
        folder = self.root / kind
        return folder / f"{key}.npz", folder / f"{key}.json"

    def load(self, kind: str, params: dict) -> dict | None:
        """The cached arrays of (kind, params), or None when there is no valid entry."""
        data, meta = self.paths(kind, params)
        if not (data.is_file() and meta.is_file()):
            return None
        try:
            record = json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
        if record.get("params") != json.loads(json.dumps(params, default=str)):
            return None  # a key collision on the prefix: treat as absent
        if sha256_file(data) != record.get("sha256"):
            warnings.warn(f"cache entry {data} does not match its checksum; rebuilding it")
            return None
        with np.load(data, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}

    def get(self, kind: str, params: dict, build: Callable[[], dict]) -> dict:
        """The arrays of (kind, params): loaded when cached, else built by ``build()`` and
        stored. ``build`` returns {name: ndarray}."""
        found = self.load(kind, params)
        if found is not None:
            return found
        data, meta = self.paths(kind, params)
        try:
            data.parent.mkdir(parents=True, exist_ok=True)
            lock = open(data.parent / f".{data.stem}.lock", "w")
        except OSError as exc:
            raise DataError(f"cannot write the dataset cache in {data.parent} ({one_line(exc)}); "
                            f"set {ENV_VAR} to a writable folder") from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = self.load(kind, params)  # another process may have built it meanwhile
            if found is not None:
                return found
            arrays = build()
            runs.atomic_write(data, lambda f: np.savez(f, **arrays))
            try:
                record = {"kind": kind, "params": json.loads(json.dumps(params, default=str)),
                          "sha256": sha256_file(data),
                          "arrays": {k: [str(v.dtype), list(v.shape)] for k, v in arrays.items()}}
                text = json.dumps(record, indent=1, sort_keys=True).encode()
                runs.atomic_write(meta, lambda f: f.write(text))
            except BaseException:  # no record, no entry: do not leave the archive behind
                with contextlib.suppress(FileNotFoundError):
                    data.unlink()
                raise
        return arrays
