"""Step parity with a reference implementation: fixtures, parameter sketches, comparisons.

A parity fixture records what a reference training code (a method's authors' code)
computed, step by step, from inputs that debiaskit can replay: initial weights, the batch
indices and every random draw inside a step. It is two files side by side:

- ``NAME.npz``: the arrays (initial weights, indices, per-step quantities);
- ``NAME.json``: the manifest: the reference repository and commit, how the record was
  made, the data and its checksum, the debiaskit options that reproduce the reference
  (``options``) and a known-wrong variant that must fail the comparison
  (``negative_control``), the tolerances and the differences measured when the fixture
  was made.

Parameters are compared through a :class:`Sketch`: a fixed random projection
``P @ theta`` of all parameters of a network (``rows`` Gaussian rows with variance 1/n,
drawn from ``numpy.random.default_rng(seed)``), so a fixture stores a few numbers per step
instead of every weight. The relative error ``|P a - P b| / |P b|`` of two parameter
vectors estimates ``|a - b| / |b|``.

This module needs only numpy and torch, so a recorder running in a reference code's own
environment can import it with ``src`` on its path, without installing debiaskit.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

#: Default tolerances: absolute on per-sample quantities, relative on parameter sketches.
TOLERANCES = {"abs": 1e-5, "rel": 1e-4}

#: Fields every manifest has.
MANIFEST_FIELDS = ("method", "reference", "record", "data", "network", "steps", "replay",
                   "options", "negative_control", "compared", "tolerances", "measured")


class Sketch:
    """The random projection ``P @ theta`` of a network's parameters (see module doc).

    ``P`` has ``rows`` rows and one column per parameter value, in the order of the
    tensors given (keep the state-dict order of the reference's network). Drawn once, as
    float32, in chunks of columns so large networks never hold a float64 copy.
    """

    CHUNK = 1 << 20

    def __init__(self, n: int, rows: int = 16, seed: int = 0) -> None:
        self.n, self.rows, self.seed = int(n), int(rows), int(seed)
        rng = np.random.default_rng(seed)
        scale = np.float32(1.0 / np.sqrt(n))
        self.chunks = [torch.from_numpy(rng.standard_normal((rows, min(self.CHUNK, n - lo)),
                                                            dtype=np.float32) * scale)
                       for lo in range(0, n, self.CHUNK)]

    @classmethod
    def of(cls, tensors, rows: int = 16, seed: int = 0) -> "Sketch":
        return cls(sum(t.numel() for t in tensors), rows, seed)

    def __call__(self, tensors) -> np.ndarray:
        """``P @ theta`` in float64 for the tensors (a state dict's values, in order)."""
        flat = torch.cat([t.detach().reshape(-1).to("cpu", torch.float64) for t in tensors])
        if flat.numel() != self.n:
            raise ValueError(f"sketch drawn for {self.n} parameters, got {flat.numel()}")
        out = torch.zeros(self.rows, dtype=torch.float64)
        lo = 0
        for chunk in self.chunks:
            out += chunk.double() @ flat[lo:lo + chunk.shape[1]]
            lo += chunk.shape[1]
        return out.numpy()


def relative_error(mine: np.ndarray, theirs: np.ndarray) -> float:
    """``|mine - theirs| / |theirs|`` (Euclidean norms)."""
    mine, theirs = np.asarray(mine, np.float64), np.asarray(theirs, np.float64)
    return float(np.linalg.norm(mine - theirs) / max(np.linalg.norm(theirs), 1e-300))


def absolute_error(mine, theirs) -> float:
    """Largest absolute difference of two arrays of the same shape."""
    mine, theirs = np.asarray(mine, np.float64), np.asarray(theirs, np.float64)
    if mine.shape != theirs.shape:
        raise ValueError(f"shapes differ: {mine.shape} vs {theirs.shape}")
    return float(np.abs(mine - theirs).max()) if mine.size else 0.0


@dataclass
class Comparison:
    """Step-by-step comparison against a fixture: the worst difference per quantity and
    the first step where one exceeded its tolerance."""

    tolerances: dict = field(default_factory=lambda: dict(TOLERANCES))
    worst: dict = field(default_factory=dict)
    first_failure: tuple | None = None   # (step, quantity, difference, tolerance)
    steps: int = 0
    # the largest difference in units of its tolerance, over every quantity and step
    worst_ratio: float = 0.0

    def _note(self, step: int, name: str, diff: float, tol: float) -> None:
        if not np.isfinite(diff):
            diff = float("inf")
        self.worst[name] = max(self.worst.get(name, 0.0), diff)
        ratio = diff / tol if tol > 0 else (float("inf") if diff > 0 else 0.0)
        self.worst_ratio = max(self.worst_ratio, ratio)
        self.steps = max(self.steps, step + 1)
        if diff > tol and self.first_failure is None:
            self.first_failure = (step, name, diff, tol)

    def absolute(self, step: int, name: str, mine, theirs) -> None:
        """Per-sample (or per-group) quantity: largest absolute difference."""
        self._note(step, name, absolute_error(mine, theirs), self.tolerances["abs"])

    def relative(self, step: int, name: str, mine, theirs) -> None:
        """Parameter sketch: relative Euclidean difference."""
        self._note(step, name, relative_error(mine, theirs), self.tolerances["rel"])

    @property
    def passed(self) -> bool:
        return self.first_failure is None and self.steps > 0

    def summary(self) -> str:
        worst = ", ".join(f"{k} {v:.2e}" for k, v in sorted(self.worst.items()))
        if self.first_failure is None:
            return f"{self.steps} steps within tolerance (worst: {worst})"
        step, name, diff, tol = self.first_failure
        return (f"first failure at step {step}: {name} differs by {diff:.2e} "
                f"(tolerance {tol:.0e}); worst: {worst}")

    def as_record(self) -> dict:
        """What a manifest's ``measured`` keeps of a comparison."""
        return {"steps": self.steps, "worst": {k: float(f"{v:.3g}") for k, v in self.worst.items()},
                "first_failure": None if self.first_failure is None else
                {"step": self.first_failure[0], "quantity": self.first_failure[1],
                 "difference": float(f"{self.first_failure[2]:.3g}")}}


@dataclass
class Fixture:
    """A parity fixture as loaded: its manifest and its arrays."""

    path: Path
    manifest: dict
    arrays: dict

    @property
    def name(self) -> str:
        return self.path.stem

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def prefixed(self, prefix: str) -> dict:
        """The arrays whose key starts with ``prefix`` (e.g. ``"init_b/"``), prefix removed,
        as tensors, in stored order."""
        return {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in self.arrays.items()
                if k.startswith(prefix)}

    def per_step(self, key: str, sizes_key: str = "batch_sizes") -> list[np.ndarray]:
        """A per-sample array stored as the concatenation over steps, cut back into steps."""
        sizes = self.arrays[sizes_key]
        return np.split(self.arrays[key], np.cumsum(sizes)[:-1])


def load_fixture(manifest_path: str | os.PathLike) -> Fixture:
    """Load ``NAME.json`` and ``NAME.npz`` beside it."""
    path = Path(manifest_path)
    manifest = json.loads(path.read_text())
    missing = [k for k in MANIFEST_FIELDS if k not in manifest]
    if missing:
        raise ValueError(f"{path}: manifest lacks {', '.join(missing)}")
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return Fixture(path, manifest, arrays)


def write_fixture(path: str | os.PathLike, arrays: dict, manifest: dict) -> Path:
    """Write ``NAME.npz`` (compressed) and ``NAME.json`` atomically: a reader sees both
    whole or the previous version."""
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix, write in ((".npz", lambda f: np.savez_compressed(f, **arrays)),
                          (".json", lambda f: f.write(json.dumps(manifest, indent=1).encode() + b"\n"))):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=suffix + ".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path.with_suffix(suffix))
    return path.with_suffix(".json")


#: Image fingerprints (:func:`fingerprint`): weights in 1 .. 2^16 drawn from this seed,
#: sums taken modulo this prime.
FINGERPRINT_SEED, FINGERPRINT_PRIME = 20261207, 2_147_483_647


def fingerprint(images: np.ndarray) -> np.ndarray:
    """One uint32 per uint8 image of ``images`` (N, ...): ``sum(pixel * W) mod P`` with
    weights ``W`` of one image's shape drawn from ``default_rng(FINGERPRINT_SEED)`` in
    1 .. 2^16 and ``P`` prime, so any change of one pixel changes the fingerprint (data
    fixtures compare every image this way instead of storing it)."""
    images = np.asarray(images)
    w = np.random.default_rng(FINGERPRINT_SEED).integers(
        1, 2 ** 16, size=images.shape[1:], dtype=np.int64).ravel()
    flat = images.reshape(len(images), -1)
    out = np.empty(len(images), dtype=np.int64)
    for lo in range(0, len(images), 4096):
        out[lo:lo + 4096] = (flat[lo:lo + 4096].astype(np.int64) @ w) % FINGERPRINT_PRIME
    return out.astype(np.uint32)


def state_arrays(prefix: str, state: dict) -> dict:
    """A state dict as fixture arrays named ``prefix + key``, each in its own dtype
    (buffers such as BatchNorm's running statistics and counters included): copies, so
    later training steps do not change them."""
    return {f"{prefix}{k}": v.detach().cpu().numpy().copy() for k, v in state.items()}
