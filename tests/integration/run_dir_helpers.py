"""What the run-directory tests share: a sha256 snapshot of a directory, and the real ``trainwell`` as a subprocess."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from small_run import ROOT


def snapshot(directory: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``directory`` (the set of files counts too)."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def trainwell(*args: str, pythonpath: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``python -m trainwell ARGS`` in a fresh interpreter, as a user runs it; stdout and stderr together."""
    paths = [str(pythonpath)] if pythonpath else []
    paths += [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "trainwell", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
