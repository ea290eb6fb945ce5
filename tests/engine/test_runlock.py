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


def test_a_forked_child_that_outlives_its_killed_parent_does_not_keep_the_lock(tmp_path: Path) -> None:
    """A DataLoader worker (a forked child) still alive after its trainer was SIGKILLed holds nothing."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import os, signal, sys, time; from pathlib import Path; from trainwell.engine.runlock import RunLock\n"
        f"lock = RunLock.acquire(Path({str(tmp_path)!r}))\n"
        "child = os.fork()\n"
        "if child == 0:\n"  # the fork handlers have run by the time the child's code goes on
        f"    Path({str(tmp_path / 'child.ready')!r}).write_text('ready'); time.sleep(60); os._exit(0)\n"
        "print(child, flush=True); os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    # The child says it runs through a file of its own: two processes printing to one pipe may interleave.
    deadline = time.monotonic() + 30
    while not (tmp_path / "child.ready").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (tmp_path / "child.ready").exists(), "the forked child never started"
    assert parent.wait(timeout=30) == -signal.SIGKILL
    try:
        os.kill(child, 0)  # the child is alive (it would raise ProcessLookupError otherwise)
        lock = RunLock.acquire(tmp_path)  # and yet the lock is free: the child closed its inherited copy
        lock.release()
    finally:
        os.kill(child, signal.SIGKILL)
