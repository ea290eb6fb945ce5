"""The run directory's lock: one holder (also within one process), deleted on release, named when refused."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from trainwell.engine.runlock import LOCK_FILE, RunLock, RunLockedError, read_owner


def test_one_holder_per_directory_even_within_one_process(tmp_path: Path) -> None:
    first = RunLock.acquire(tmp_path)
    owner = read_owner(tmp_path / LOCK_FILE)
    assert (owner["host"], owner["pid"]) == (socket.gethostname(), os.getpid())
    with pytest.raises(RunLockedError, match=f"in use by process {os.getpid()} on host {socket.gethostname()}"):
        RunLock.acquire(tmp_path)
    first.release()
    first.release()  # a second release does nothing
    assert not (tmp_path / LOCK_FILE).exists()
    second = RunLock.acquire(tmp_path)  # free again
    second.release()


def test_a_lock_file_nobody_holds_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text('{"host": "elsewhere", "pid": 1, "started": "long ago"}\n')
    lock = RunLock.acquire(tmp_path)  # a file without a flock on it: its writer is gone
    assert read_owner(tmp_path / LOCK_FILE)["pid"] == os.getpid()
    lock.release()


def test_a_holder_dropped_without_release_gives_the_lock_back(tmp_path: Path) -> None:
    import gc

    RunLock.acquire(tmp_path)  # not kept: collected at once
    gc.collect()
    RunLock.acquire(tmp_path).release()
