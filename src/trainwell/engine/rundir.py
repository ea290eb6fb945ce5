"""Run directories: ``runs/<name>/<timestamp>`` by default; a second run never overwrites the first."""

from __future__ import annotations

import time
from pathlib import Path


def make_run_dir(name: str, explicit: str | None, root: str | Path = "runs") -> Path:
    """Create and return the run directory (``explicit`` is used as is, e.g. to resume into it)."""
    if explicit:
        path = Path(explicit)
        path.mkdir(parents=True, exist_ok=True)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(root) / name / stamp
        path, suffix = base, 1
        while True:
            try:
                path.mkdir(parents=True, exist_ok=False)
                break
            except FileExistsError:
                path = base.with_name(f"{stamp}-{suffix}")
                suffix += 1
    (path / "checkpoints").mkdir(exist_ok=True)
    return path
