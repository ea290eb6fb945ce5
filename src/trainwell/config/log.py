"""The ``log:`` section: where the scalars of ``metrics.jsonl`` also go (TensorBoard and experiment trackers)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

Problem = tuple[str, str]
"""``(key, what is wrong)`` for a value out of range (as in ``schema``)."""


TRACKERS = ("tensorboard", "mlflow", "wandb", "trackio")
"""The experiment trackers ``log.trackers`` may name."""


@dataclass
class MlflowConfig:
    """``log.mlflow:`` — MLflow tracking."""

    tracking_uri: str | None = None
    """Where runs are stored; null: ``sqlite:///<run dir>/mlflow.db`` (a local file, no server)."""
    experiment: str = "trainwell"
    """MLflow experiment the run belongs to (created if missing)."""


@dataclass
class WandbConfig:
    """``log.wandb:`` — Weights & Biases."""

    mode: Literal["offline", "online", "disabled"] = "offline"
    """``offline``: files under ``<run dir>/wandb`` only (``wandb sync`` uploads them later); ``online`` needs a
    login and a network."""
    project: str = "trainwell"
    """W&B project."""
    entity: str | None = None
    """W&B team or user; null: the default of the login."""


@dataclass
class TrackioConfig:
    """``log.trackio:`` — trackio (a local SQLite store: ``$TRACKIO_DIR``, default ``~/.cache/huggingface/trackio``)."""

    project: str = "trainwell"
    """trackio project (one database file per project)."""


@dataclass
class LogConfig:
    """``log:`` — where the scalars of ``metrics.jsonl`` also go."""

    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Any of ``tensorboard``, ``mlflow``, ``wandb``, ``trackio``: each gets the TensorBoard scalars (``Train/loss``,
    ``Val/<metric>``, …) at the same steps, the resolved config as parameters, and the final and best metrics; rank 0
    only; a resumed run continues the same tracker run. MLflow, W&B and trackio need ``pip install
    'trainwell[trackers]'``."""
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    trackio: TrackioConfig = field(default_factory=TrackioConfig)

    def problems(self) -> Iterator[Problem]:
        for i, name in enumerate(self.trackers):
            if name not in TRACKERS:
                yield f"log.trackers[{i}]", f"must be one of {', '.join(TRACKERS)}"
        if len(set(self.trackers)) != len(self.trackers):
            yield "log.trackers", "names a tracker twice"
