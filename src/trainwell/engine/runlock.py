"""One writer per run directory: ``<run>/trainwell.lock``, held by rank 0 for the life of the run.

The lock is an ``fcntl.flock`` on that file. The kernel drops it when its process ends in any way — a normal
exit, an exception, SIGKILL, a crash — so a lock left by a dead process is never mistaken for a live one: the
file may still be there, but nobody holds it, and the next run takes it. The file's content (host, PID, start
time) only serves the message of a run that is refused while the holder lives. A clean release deletes the file.

``flock`` locks are per open file, not per process: a second run started from the same Python process is refused
like one started from another. Forked children (DataLoader workers) close their inherited copy at once, so a
worker that outlives a killed trainer does not keep the directory locked. On network filesystems that do not
forward ``flock`` between hosts (old NFS), two hosts could both take it; the content still names the first holder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
import weakref
from pathlib import Path
from typing import Any

LOCK_FILE = "trainwell.lock"

_HELD: set[int] = set()
"""Descriptors of the locks this process holds."""


def _close_in_forked_child() -> None:
    # A forked child (a DataLoader worker) inherits the descriptor, and with it the lock: workers that outlive a
    # SIGKILLed trainer would keep the directory locked. The child closes its copies; the parent keeps the lock.
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_forked_child)


class RunLockedError(RuntimeError):
    """Another live process holds the run directory's lock; the message names its host and PID."""


class RunLock:
    """A held lock on ``<run>/trainwell.lock``; :meth:`release` gives it back (idempotent)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        _HELD.add(fd)
        # A holder dropped without release() (a Trainer built and never run) gives the lock back when collected.
        self._finalizer = weakref.finalize(self, _drop, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        """Take the lock of ``run_dir`` and write who holds it.

        Raises:
            RunLockedError: another live process holds it (named by host, PID and start time).
            OSError: the file cannot be created or written (read-only directory, disk full, …).
        """
        path = run_dir / LOCK_FILE
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunLockedError(_holder_message(run_dir, path)) from None
                raise
            # The previous holder may have released and deleted the file between our open and our flock: then
            # we hold a lock on a file nobody else will open. Only a lock on the file at the path counts.
            if _same_file(fd, path):
                break
            os.close(fd)
        lock = cls(path, fd)
        try:
            lock._write_owner()
        except BaseException:
            lock.release()
            raise
        return lock

    def _write_owner(self) -> None:
        assert self._fd is not None
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        data = (json.dumps(owner) + "\n").encode("utf-8")
        os.ftruncate(self._fd, 0)
        written = os.pwrite(self._fd, data, 0)
        if written != len(data):
            raise OSError(errno.ENOSPC, "short write", str(self.path))
        os.fsync(self._fd)

    def release(self) -> None:
        """Delete the lock file and drop the lock (on every exit path; a second call does nothing)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        self._finalizer.detach()
        _HELD.discard(fd)
        # Delete while still holding it, so no one can take a lock on the file being deleted and keep it.
        with contextlib.suppress(OSError):
            if _same_file(fd, self.path):
                self.path.unlink()
        os.close(fd)  # releases the flock

    def moved_to(self, run_dir: Path) -> None:
        """The directory holding the lock file was renamed to ``run_dir`` (``--overwrite``)."""
        self.path = run_dir / LOCK_FILE


def _drop(fd: int) -> None:
    _HELD.discard(fd)
    with contextlib.suppress(OSError):
        os.close(fd)


def read_owner(path: Path) -> dict[str, Any]:
    """The recorded holder ``{"host", "pid", "started"}`` of a lock file (``{}`` when unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _holder_message(run_dir: Path, path: Path) -> str:
    owner = read_owner(path)
    who = (
        f"process {owner.get('pid', '?')} on host {owner.get('host', '?')} (started {owner.get('started', '?')})"
        if owner
        else "another process (it has not written its host and PID yet)"
    )
    return (
        f"The run directory '{run_dir}' is in use by {who}: it holds '{path}'. Two runs never write one directory. "
        f"Wait for that run to end (or stop it), or pass another run.dir=DIR."
    )


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)
