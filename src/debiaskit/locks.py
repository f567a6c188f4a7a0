"""Locks that keep two processes from writing one place: a run directory, a discovery
folder, a cache entry.

A lock is an exclusive ``flock`` on a lock file: ``FOLDER/.lock`` for a run directory
(:func:`hold`), ``PARENT/.NAME.lock`` beside a folder that must appear whole or not at all
(:func:`hold_beside`). The kernel drops the lock when its process ends, however it ends
(SIGKILL, a crash, a lost node's process), so a lock left by a killed process is free to
the next one: it is taken over by acquiring it, with no stale-lock timeout to guess. The
holder writes its process id, host and start time into the file, so a refusal can say
who holds the place, and a taker-over can say whose lock it took over (a holder that ends
normally removes the file).

On a shared filesystem the lock is only as good as the filesystem's ``flock``: local
filesystems and NFSv4 (where Linux maps ``flock`` to byte-range locks that the server
keeps) serialise processes on every node; NFSv3 without a lock daemon does not.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from .errors import DebiaskitError

#: The lock file inside a run directory (bench and sweep entries are run directories).
LOCK = ".lock"


class Busy(DebiaskitError):
    """The place is held by another live process."""


def _holder(path: Path) -> dict:
    """What the lock file says about its holder ({} if empty or unreadable)."""
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"process {holder['pid']} on {holder.get('host', '?')} (since {since})"


class Lock:
    """A held lock on ``path``; :meth:`release` gives it up. ``previous`` is the record of
    a holder that ended without releasing (killed), whose lock this one took over; None
    when the lock was free."""

    def __init__(self, path: Path, fd: int, previous: dict | None) -> None:
        self.path, self._fd, self.previous = path, fd, previous

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up (idempotent), deleting the lock file first: while still holding
        it, so a process that opened the file meanwhile finds it gone once it gets the lock
        (:func:`acquire` checks) and opens a new one."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # the lock itself goes with the descriptor
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(path, what: str, wait: bool = False) -> Lock:
    """Lock the file ``path`` (created if missing; its folder must exist). Held by a live
    process: :class:`Busy` naming ``what`` and the holder, or with ``wait`` block until it
    is free. A lock file whose holder ended without releasing is taken over."""
    path = Path(path)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise DebiaskitError(f"cannot lock {what} ({err.strerror}: {path}); check that "
                                 "the folder is writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DebiaskitError(f"cannot lock {what} ({err.strerror}: {path}); the "
                                     "filesystem may not support locks") from None
            raise Busy(f"{what} is in use by {_describe(_holder(path))}; wait for it to "
                       "finish (or stop it), then run the same command again") from None
        try:  # the file we locked may have been removed by a releasing holder meanwhile
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        previous = _holder(path) or None
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.time()}).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
        except OSError:
            pass  # (a full disk: the lock holds without its description)
        return Lock(path, fd, previous)


def hold(folder, what: str | None = None, wait: bool = False) -> Lock:
    """Lock the folder ``folder`` (which must exist) through ``folder/.lock``."""
    folder = Path(folder)
    return acquire(folder / LOCK, what or str(folder), wait)


def hold_beside(folder, what: str | None = None, wait: bool = False) -> Lock:
    """Lock the place of ``folder`` (which may not exist yet) through a lock file beside
    it, ``PARENT/.NAME.lock`` (the parent is created): for outputs renamed into place
    whole, which must not hold a lock file of their own."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return acquire(folder.parent / f".{folder.name}.lock", what or str(folder), wait)


def wait_free(folder) -> None:
    """Block until no process holds ``folder``'s lock (returns at once if it has none)."""
    path = Path(folder) / LOCK
    if path.exists():
        acquire(path, str(folder), wait=True).release()
