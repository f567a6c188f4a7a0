"""The run directory: what a run writes, written so that nothing is lost or half-written.

Layout (docs/model-selection.md, "The run directory")::

    config.json      resolved configuration, seed, package versions, data checksums
    metrics.jsonl    one JSON line per evaluated epoch (training stats, every split)
    checkpoint.pt    latest training state (atomic, with its sha256), used to resume
    checkpoint.prev.pt  the state one epoch earlier: a resume falls back to it when
                     checkpoint.pt is damaged
    .lock            held by the process training the run (:mod:`debiaskit.locks`)
    summary.json     written last: the selected epoch and its metrics; marks "finished"
    model.pt         the selected networks' weights
    sample_weights.pt  the method's per-sample training weights after the last epoch, with
                     the samples' classes and aligned flags (methods that weight samples)
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import DebiaskitError

_UMASK = os.umask(0)
os.umask(_UMASK)

CONFIG, METRICS, CHECKPOINT, SUMMARY, MODEL = (
    "config.json", "metrics.jsonl", "checkpoint.pt", "summary.json", "model.pt")
#: The checkpoint before the latest (kept so that a damaged latest one can be replaced).
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
#: Errors that mean the disk (or the process's file-size limit, or a quota) has no room.
_NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
#: Per-sample training weights at the end of training (methods that weight samples).
WEIGHTS = "sample_weights.pt"
#: Folder of a run's cached pipeline stages (:class:`debiaskit.stages.StageStore`).
STAGES = "stages"


def _disk_error(path: Path, err: OSError) -> DebiaskitError:
    if err.errno in _NO_SPACE:
        return DebiaskitError(f"disk full while writing {path} ({err.strerror}); free some "
                              "space and run the same command again to resume")
    return DebiaskitError(f"cannot write {path}: {err.strerror}; check the output directory")


def check_out(path, folder: bool = True, option: str = "--out",
              example: str = "FILE") -> Path:
    """Refuse, before anything is computed or written, an output path that cannot be
    written: a folder output (``folder``; created with its parents) that is an existing
    file, or a file output that is an existing folder or whose folder does not exist; a
    path below a file; a place where nothing can be created (``/proc``, a read-only or
    unwritable folder: tried by creating and removing an empty temporary folder there).
    Each is a one-line :class:`DebiaskitError` naming ``option``; returns the path."""
    out = Path(path)  # (os.path's tests: False, not an exception, where a path is unreadable)
    if folder and os.path.lexists(out) and not os.path.isdir(out):
        raise DebiaskitError(f"{option} {out} is a file, not a folder; choose a new or "
                             "empty folder")
    if not folder and os.path.isdir(out):
        raise DebiaskitError(f"{option} {out} is a folder; give a file name such as "
                             f"{out / example}")
    # the nearest folder that exists: where the first new file or folder goes
    target = Path(os.path.abspath(out if folder else out.parent))
    base = target
    while not os.path.lexists(base) and base != base.parent:
        base = base.parent
    if not os.path.isdir(base):
        raise DebiaskitError(f"{option} {out} is below {base}, which is a file, not a folder; "
                             f"choose another {option}")
    if not folder and base != target:  # a file's folder is not created for it
        raise DebiaskitError(f"the folder of {option} {out} does not exist; create it or "
                             f"choose another {option}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".debiaskit-check-", dir=base))
    except OSError as err:
        raise DebiaskitError(f"cannot write {option} {out}: nothing can be created in {base} "
                             f"({err.strerror}); choose another {option}") from None
    return out


def remove_temporaries(folder: Path) -> list[str]:
    """Delete the temporary files that a process killed within :func:`atomic_write` left
    in ``folder`` (``.NAME.XXXX``, never renamed into place) and its ``stages`` folder;
    only for a folder whose lock this process holds. Returns their names."""
    gone = []
    for sub in (Path(folder), Path(folder) / STAGES):
        if not sub.is_dir():
            continue
        for path in sub.iterdir():
            if path.name.startswith(".") and path.name.count(".") >= 2 and path.is_file():
                path.unlink(missing_ok=True)
                gone.append(str(path.relative_to(folder)))
    return gone


def require_run_dir(run_dir) -> Path:
    """``run_dir`` as a Path; a one-line error when it does not exist or is not a folder
    (so that a mistyped name is not reported as a folder without a run)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is not a folder" if run_dir.exists() else "does not exist"
        raise DebiaskitError(f"{run_dir} {what}; give a debiaskit run directory (the --out "
                             "of 'debiaskit train')")
    return run_dir


def atomic_write(path: Path, write, previous: Path | None = None) -> None:
    """Write ``path`` through a temporary file in the same folder, then rename it over.

    ``write(file_object)`` fills the temporary file, which is flushed to the disk before
    the rename (and the folder after it). Readers see the old file or the new one, never a
    partial one; on failure the temporary file is removed and ``path`` is untouched (a
    full disk is a one-line error). With ``previous``, an existing ``path`` is first
    renamed to ``previous`` (so at every moment one of the two is whole).
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise _disk_error(path, err) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
        _sync_folder(path.parent)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise _disk_error(path, err) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename) to the disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def json_safe(obj):
    """JSON-safe copy: NaN/inf become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: Path, obj) -> None:
    data = json.dumps(json_safe(obj), indent=2, sort_keys=True).encode()
    atomic_write(path, lambda f: f.write(data))


def with_defaults(stored: dict, current: dict, defaults: dict) -> dict:
    """``stored`` settings with the fields of ``current`` it lacks taken from ``defaults``:
    a record (run config, stage key) written before a setting existed was made with the
    setting's default, so it still matches settings that leave it there."""
    return {**{k: defaults[k] for k in current if k in defaults and k not in stored}, **stored}


def write_folder(out: Path, fill) -> Path:
    """Create the folder ``out`` whole or not at all: ``fill(tmp)`` writes into a temporary
    sibling folder, which is then renamed to ``out`` (an existing empty ``out`` is
    replaced); on any failure the temporary folder is removed and ``out`` is untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # (mkdtemp makes it private)
    try:
        fill(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DebiaskitError(f"cannot read {path} ({err}); the run directory is damaged, "
                             "remove it and start the run again") from None


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()  # (serialised first: a failing write is then an OSError, not torch's)
    torch.save(obj, buf)
    return buf.getvalue()


def save_torch(path: Path, obj) -> None:
    data = _torch_bytes(obj)
    atomic_write(path, lambda f: f.write(data))


#: First line of a file written by :func:`save_verified`; the second is its sha256.
_VERIFIED = b"debiaskit verified torch file 1\n"


def save_verified(path: Path, obj, previous: Path | None = None) -> None:
    """Save ``obj`` (``torch.save``) atomically behind a two-line header holding the sha256
    of the rest, so that :func:`load_verified` detects any damage (a truncation, a changed
    byte, which ``torch.load`` alone may not notice). ``previous``: see :func:`atomic_write`."""
    data = _torch_bytes(obj)
    header = _VERIFIED + hashlib.sha256(data).hexdigest().encode() + b"\n"
    atomic_write(path, lambda f: (f.write(header), f.write(data)), previous)


class Damaged(DebiaskitError):
    """A verified file whose content does not match its checksum, or an unreadable one."""


def load_verified(path: Path, map_location="cpu"):
    """The object :func:`save_verified` wrote at ``path``, tensors on the CPU (or where
    ``map_location`` says: None keeps the devices they were saved from), after checking its
    sha256 (:class:`Damaged` if it does not match or the file is unreadable); a plain
    ``torch.save`` file (written before the header existed) loads unchecked."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise Damaged(f"cannot read {path} ({err.strerror})") from None
    if data.startswith(_VERIFIED):
        digest, _, payload = data[len(_VERIFIED):].partition(b"\n")
        if hashlib.sha256(payload).hexdigest().encode() != digest:
            raise Damaged(f"{path} does not match its checksum (truncated or changed)")
        data = payload
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    except Exception as err:
        raise Damaged(f"cannot read {path} ({type(err).__name__})") from None


def load_torch(path: Path):
    """The object saved at ``path`` with every tensor on the CPU, whatever device wrote it
    (a checkpoint written on a GPU loads on a machine without one). Callers copy the
    tensors into their device's modules (``load_state_dict``, an optimiser's
    ``load_state_dict``) or move them with ``.to(device)``; RNG states must stay on the
    CPU anyway. An unreadable file is a one-line DebiaskitError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file: say which and what to do
        raise DebiaskitError(f"cannot read {path} ({type(err).__name__}); remove the file to "
                             "restart the run from scratch") from None


def append_metrics(run_dir: Path, record: dict) -> None:
    """Append one epoch's record to metrics.jsonl as one line; a failed write (a full disk)
    is cut off again, so the file ends with whole lines. (A process killed within the
    write may leave a cut line: :func:`read_metrics` skips it and a resume rewrites the
    file without it.)"""
    line = (json.dumps(json_safe(record), sort_keys=True) + "\n").encode()
    path = Path(run_dir) / METRICS
    size = path.stat().st_size if path.exists() else 0
    try:
        with open(path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        try:
            os.truncate(path, size)
        except OSError:
            pass
        raise _disk_error(path, err) from None


def read_metrics(run_dir: Path, up_to_epoch: int | None = None) -> list[dict]:
    """The epoch records of a run (complete lines only: a line cut by a crash or a full
    disk is skipped; optionally up to an epoch)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if up_to_epoch is None or rec["epoch"] <= up_to_epoch:
            out.append(rec)
    return out


def rewrite_metrics(run_dir: Path, records: list[dict]) -> None:
    """Replace metrics.jsonl by ``records`` (used on resume to drop epochs past the checkpoint)."""
    data = "".join(json.dumps(json_safe(r), sort_keys=True) + "\n" for r in records).encode()
    atomic_write(Path(run_dir) / METRICS, lambda f: f.write(data))


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / SUMMARY).exists()
