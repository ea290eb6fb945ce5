"""trackio: a local SQLite store (``$TRACKIO_DIR``, default ``~/.cache/huggingface/trackio/<project>.db``)."""

from __future__ import annotations

import contextlib
import io
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainwell.config.log import TrackioConfig

if TYPE_CHECKING:
    from trainwell.trackers.artifacts import ReportOnce


class TrackioTracker:
    """One trackio run per trainwell run, named ``<run dir name>-<random>`` (the id kept for a resume)."""

    name = "trackio"

    def __init__(self, cfg: TrackioConfig, report: ReportOnce | None = None) -> None:
        self.cfg = cfg
        self.report = report
        self.run: Any = None
        self.name_ = ""
        self.run_dir = Path()

    def start(self, run_dir: Path, run_id: str | None, params: Mapping[str, Any]) -> str:
        import trackio

        self.run_dir = run_dir
        name = run_id or f"{run_dir.name}-{secrets.token_hex(3)}"
        with contextlib.redirect_stdout(io.StringIO()):  # its banner would interleave with trainwell's log
            self.run = trackio.init(
                project=self.cfg.project,
                name=name,
                config=dict(params),
                resume="allow",
                embed=False,
                auto_log_gpu=False,
                auto_log_cpu=False,
            )
        self.name_ = name
        return name

    def stored_points(self) -> set[tuple[str, int]] | None:
        from trackio.sqlite_storage import SQLiteStorage

        # trackio writes in batches: a killed process loses its last ones, which the resumed run then sends.
        rows = SQLiteStorage.get_logs(self.cfg.project, self.name_)
        return {(tag, int(row["step"])) for row in rows for tag in row if tag not in ("step", "timestamp")}

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        self.run.log(dict(scalars), step=step)

    def finish(self, summary: Mapping[str, float], *, step: int, succeeded: bool) -> None:
        if summary:
            self.run.log(dict(summary), step=step)  # trackio has no summary: the final values at the last step
        html = self.report(self.run_dir, step) if self.report is not None else None
        if html is not None:
            import trackio

            from trainwell.trackers.artifacts import report_files

            artifact = trackio.Artifact("report", type="report")
            for path, name in report_files(html):
                artifact.add_file(path, name=name)
            with contextlib.redirect_stdout(io.StringIO()):
                self.run.log_artifact(artifact)
        with contextlib.redirect_stdout(io.StringIO()):
            self.run.finish()
