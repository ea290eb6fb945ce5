"""Weights & Biases: offline by default (``<run dir>/wandb``; ``wandb sync`` uploads later)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainwell.config.log import WandbConfig

if TYPE_CHECKING:
    from trainwell.trackers.artifacts import ReportOnce


class WandbTracker:
    """One W&B run per trainwell run (its id kept, so a resumed run continues it); scalars at the optimizer step."""

    name = "wandb"

    def __init__(self, cfg: WandbConfig, report: ReportOnce | None = None) -> None:
        self.cfg = cfg
        self.report = report
        self.run: Any = None
        self.run_dir = Path()

    def start(self, run_dir: Path, run_id: str | None, params: Mapping[str, Any]) -> str:
        os.environ.setdefault("WANDB_SILENT", "true")  # no banner per run; trainwell's log says where it is
        import wandb

        self.run_dir = run_dir
        self.run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            dir=str(run_dir),
            mode=self.cfg.mode,
            id=run_id or secrets.token_hex(4),
            resume="allow",
            name=run_dir.name,
            config=dict(params),
            settings=wandb.Settings(console="off", x_disable_stats=True),  # trainwell keeps its own logs
        )
        return str(self.run.id)

    def stored_points(self) -> set[tuple[str, int]] | None:
        return None  # offline W&B cannot be asked; a killed process loses its unflushed records (docs/trackers.md)

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        self.run.log(dict(scalars), step=step)

    def finish(self, summary: Mapping[str, float], *, step: int, succeeded: bool) -> None:
        self.run.summary.update(dict(summary))
        html = self.report(self.run_dir, step) if self.report is not None else None
        if html is not None:
            import wandb

            from trainwell.trackers.artifacts import report_files

            artifact = wandb.Artifact("report", type="report", description="trainwell report RUN_DIR")
            for path, name in report_files(html):
                artifact.add_file(str(path), name=name)
            self.run.log_artifact(artifact)
        self.run.finish(exit_code=0 if succeeded else 1)
