"""MLflow: a local SQLite store by default (``sqlite:///<run dir>/mlflow.db``), no server; artifacts (the report)
under ``<run dir>/mlartifacts``."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainwell.config.log import MlflowConfig
from trainwell.trackers.params import flatten

if TYPE_CHECKING:
    from trainwell.trackers.artifacts import ReportOnce

_BATCH = 100
"""MLflow's limit of parameters per ``log_batch`` call."""
_VALUE_CHARS = 6000
"""MLflow's limit of a parameter value's length."""


def mlflow_name(tag: str) -> str:
    """The tag as MLflow accepts it (letters, digits, ``_ - . / :`` and spaces); other characters become ``_``."""
    return re.sub(r"[^\w\-./: ]", "_", tag)


class MlflowTracker:
    """One MLflow run per trainwell run; the config as params, scalars as metrics at the optimizer step."""

    name = "mlflow"

    def __init__(self, cfg: MlflowConfig, report: ReportOnce | None = None) -> None:
        self.cfg = cfg
        self.report = report
        self.client: Any = None
        self.run_id = ""
        self.run_dir = Path()

    def start(self, run_dir: Path, run_id: str | None, params: Mapping[str, Any]) -> str:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.run_dir = run_dir
        uri = self.cfg.tracking_uri or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        if run_id is not None:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        experiment = self.client.get_experiment_by_name(self.cfg.experiment)
        artifacts = (run_dir / "mlartifacts").resolve().as_uri()
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(self.cfg.experiment, artifact_location=artifacts)
        )
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        flat = [Param(key, str(value)[:_VALUE_CHARS]) for key, value in flatten(params).items()]
        for first in range(0, len(flat), _BATCH):
            self.client.log_batch(self.run_id, params=flat[first : first + _BATCH])
        return self.run_id

    def stored_points(self) -> set[tuple[str, int]] | None:
        return None  # every log_batch is a committed SQL transaction: it holds all it got

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(mlflow_name(tag), float(value), stamp, step) for tag, value in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, summary: Mapping[str, float], *, step: int, succeeded: bool) -> None:
        if summary:
            self.log_scalars(summary, step)
        html = self.report(self.run_dir, step) if self.report is not None else None
        if html is not None:
            from trainwell.trackers.artifacts import report_files

            for path, name in report_files(html):  # the artifact keeps the page's relative links
                folder = str(Path(name).parent) if "/" in name else None
                self.client.log_artifact(self.run_id, str(path), artifact_path=folder)
        self.client.set_terminated(self.run_id, status="FINISHED" if succeeded else "FAILED")
