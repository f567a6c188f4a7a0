"""Cached, resumable pipeline stages (LAD: VQ-VAE -> bias classifier -> latent walk).

A method whose training data is itself the product of earlier training (LAD decodes walked
latents of a VQ-VAE) runs each step as a *stage*: ``StageStore.run(name, key, compute)``
returns the stage's artefact (a dict of tensors and numbers), computing it only when no
artefact with the same key exists. The key is everything the result depends on: the
stage's settings and the checksums of its inputs (the training data, earlier stages'
artefacts). Artefacts are written atomically next to a JSON record of their key, content
checksum and statistics, so a run interrupted in stage 3 restarts at stage 3, and a run
with different settings never reuses a stale artefact. A loaded artefact is checked against
its recorded checksum: a damaged one of this run is computed again.

``reuse_from`` points at another run's stage folder: a stage missing here whose key matches
an artefact there is copied in instead of computed (``debiaskit train --reuse-stages``), so
a user can try another final classifier on the same walked images without retraining the
VQ-VAE. The key decides, as for the run's own artefacts: a stage whose settings differ is
computed afresh.

A record written before a setting existed lacks that field in its key; ``defaults`` (the
settings' default values) fill such gaps before the keys are compared, as run configs
written before a field existed resume with its default. So a library update that adds an
option does not recompute cached stages, unless the option is set to something else.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from . import runs
from .errors import DebiaskitError


def content_checksum(artefact: dict) -> str:
    """sha256 over the artefact's tensors (bytes, dtype, shape) and plain values, by key."""
    h = hashlib.sha256()
    for key in sorted(artefact):
        value = artefact[key]
        h.update(key.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values()):
            h.update(content_checksum(value).encode())
        else:
            h.update(json.dumps(runs.json_safe(value), sort_keys=True).encode())
    return h.hexdigest()


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(runs.json_safe(key), sort_keys=True).encode()).hexdigest()


class StageStore:
    """Stage artefacts of one run under ``root`` (``RUN_DIR/stages``)."""

    def __init__(self, root, reuse_from=None) -> None:
        self.root = Path(root)
        self.reuse_from = None if reuse_from is None else Path(reuse_from)
        self.records: dict[str, dict] = {}

    def _cached(self, root: Path, name: str, key: dict,
                defaults: dict) -> tuple[dict, dict] | None:
        """``(artefact, record)`` of stage ``name`` under ``root`` if its key matches
        ``key`` (fields the record lacks taken from ``defaults``)."""
        path, meta_path = root / f"{name}.pt", root / f"{name}.json"
        if not (path.exists() and meta_path.exists()):
            return None
        meta = runs.read_json(meta_path)
        if key_digest(runs.with_defaults(meta.get("key", {}), key, defaults)) != key_digest(key):
            return None
        try:
            artefact = runs.load_torch(path)
        except DebiaskitError:
            artefact = None
        if artefact is None or content_checksum(artefact) != meta.get("checksum"):
            if root == self.root:  # this run's own cache: computed again
                warnings.warn(f"{path} is unreadable or does not match its recorded checksum; "
                              "computing the stage again")
                return None
            raise DebiaskitError(f"{path} does not match its recorded checksum (corrupt or "
                                 "edited); drop --reuse-stages or re-run that stage")
        return artefact, meta

    def run(self, name: str, key: dict, compute: Callable[[], tuple[dict, dict]],
            defaults: dict | None = None) -> dict:
        """The artefact of stage ``name`` for ``key``: loaded if cached, else computed.

        ``compute()`` returns ``(artefact, stats)``; ``stats`` (numbers, plus the compute
        time as ``seconds``) are recorded in
        ``RUN_DIR/stages/NAME.json`` and in :attr:`records` (the run summary shows them).
        The artefact's content checksum is in the record as ``checksum``; pass it in the
        key of any stage that consumes the artefact. ``defaults`` are the default values
        of the settings in ``key``, for records written before a setting existed.
        """
        digest = key_digest(key)
        defaults = defaults or {}
        path, meta_path = self.root / f"{name}.pt", self.root / f"{name}.json"
        cached = self._cached(self.root, name, key, defaults)
        if cached is not None:
            self.records[name] = cached[1]
            return cached[0]
        reused = (None if self.reuse_from is None
                  else self._cached(self.reuse_from, name, key, defaults))
        if reused is not None:
            artefact, meta = reused
            meta = {**meta, "key": key, "key_digest": digest,
                    "reused_from": str(self.reuse_from)}
        else:
            started = time.perf_counter()
            artefact, stats = compute()
            seconds = time.perf_counter() - started
            meta = {"stage": name, "key": key, "key_digest": digest,
                    "checksum": content_checksum(artefact),
                    "stats": {**stats, "seconds": seconds}}
        self.root.mkdir(parents=True, exist_ok=True)
        runs.save_torch(path, artefact)
        runs.write_json(meta_path, meta)  # written last: marks the artefact complete
        self.records[name] = meta
        return artefact

    def checksum(self, name: str) -> str:
        """Content checksum of stage ``name``'s artefact (after :meth:`run`)."""
        return self.records[name]["checksum"]
