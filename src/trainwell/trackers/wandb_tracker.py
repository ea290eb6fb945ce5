"""Weights & Biases: offline by default (``<run dir>/wandb``; ``wandb sync`` uploads later)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainwell.config.log import WandbConfig


class WandbTracker:
    """One W&B run per trainwell run (its id kept, so a resumed run continues it); scalars at the optimizer step."""

    name = "wandb"

    def __init__(self, cfg: WandbConfig) -> None:
        self.cfg = cfg
        self.run: Any = None

    def start(self, run_dir: Path, run_id: str | None, params: Mapping[str, Any]) -> str:
        os.environ.setdefault("WANDB_SILENT", "true")  # no banner per run; trainwell's log says where it is
        import wandb

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
        self.run.finish(exit_code=0 if succeeded else 1)
