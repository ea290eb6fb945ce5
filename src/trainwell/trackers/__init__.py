"""Experiment trackers beside TensorBoard (``log.trackers``): one small adapter per tracker behind the engine's
:class:`~trainwell.engine.trackers.Tracker` interface. The CLI builds them here and hands them to the Trainer.

Each adapter imports its package only when it is built; a tracker named but not installed is a config error that
names the extra to install (``pip install 'trainwell[trackers]'``).

Each tracker also gets the run's report (``trainwell report``: ``report.html`` and its ``report_files/``) as an artifact
when its run ends, if the CLI hands :func:`build_trackers` a report writer (this package may not import the report).
"""

from __future__ import annotations

import importlib.util

from trainwell.config.loader import ConfigError
from trainwell.config.schema import ExperimentConfig
from trainwell.engine.trackers import Tracker
from trainwell.trackers.artifacts import ReportOnce, ReportWriter

_PACKAGES = {"mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio"}
"""Tracker name → the package it needs (all in the ``trackers`` extra)."""


def require_installed(names: list[str]) -> None:
    """Raise a :class:`ConfigError` naming the extra when a tracker's package is missing."""
    missing = [name for name in names if name in _PACKAGES and importlib.util.find_spec(_PACKAGES[name]) is None]
    if missing:
        raise ConfigError(
            f"log.trackers names {', '.join(missing)}, but the package(s) {', '.join(_PACKAGES[m] for m in missing)} "
            f"are not installed: pip install 'trainwell[trackers]' (or remove them from log.trackers)."
        )


def build_trackers(cfg: ExperimentConfig, report: ReportWriter | None = None) -> list[Tracker]:
    """The adapters for ``cfg.log.trackers`` other than TensorBoard (which the recorder writes itself); with
    ``report``, each one stores the run's report as an artifact when the run ends."""
    require_installed(cfg.log.trackers)
    once = ReportOnce(report) if report is not None else None
    trackers: list[Tracker] = []
    for name in cfg.log.trackers:
        if name == "mlflow":
            from trainwell.trackers.mlflow_tracker import MlflowTracker

            trackers.append(MlflowTracker(cfg.log.mlflow, once))
        elif name == "wandb":
            from trainwell.trackers.wandb_tracker import WandbTracker

            trackers.append(WandbTracker(cfg.log.wandb, once))
        elif name == "trackio":
            from trainwell.trackers.trackio_tracker import TrackioTracker

            trackers.append(TrackioTracker(cfg.log.trackio, once))
    return trackers
