"""The run's report as a tracker artifact: drawn once per run end however many trackers store it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

ReportWriter = Callable[[Path], Path | None]
"""Writes the report of a run directory and returns its ``report.html`` (``None``: none written)."""


class ReportOnce:
    """A :data:`ReportWriter` that draws the report once per run end (step), however many trackers ask for it."""

    def __init__(self, writer: ReportWriter) -> None:
        self.writer = writer
        self._written: dict[tuple[Path, int], Path | None] = {}

    def __call__(self, run_dir: Path, step: int) -> Path | None:
        key = (run_dir, step)
        if key not in self._written:
            self._written[key] = self.writer(run_dir)
        return self._written[key]


def report_files(html: Path) -> list[tuple[Path, str]]:
    """The report's files as ``(path, path inside the artifact)``: ``report.html`` and ``report_files/*.png``."""
    files = [(html, html.name)]
    folder = html.parent / "report_files"
    if folder.is_dir():
        files += [(p, f"report_files/{p.name}") for p in sorted(folder.iterdir()) if p.is_file()]
    return files
