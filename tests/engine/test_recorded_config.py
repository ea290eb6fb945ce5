"""A run built in Python without a ``task:`` section records the task it trains, so reading it back works."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from trainwell.api import build_run
from trainwell.cli import main
from trainwell.config.schema import ExperimentConfig
from trainwell.engine.distributed import DistEnv
from trainwell.engine.loop import Trainer
from trainwell.tasks.regression import RegressionDataConfig, RegressionTask, RegressionTaskConfig


@dataclass
class _UnnamedConfig(RegressionTaskConfig):
    class_path: str = "???"  # a config made in Python that does not name its task


class _UnnamedTask(RegressionTask):
    """A task made in Python whose config has no class_path of its own."""


def _fit(run_dir: Path, task: RegressionTask) -> None:
    cfg = ExperimentConfig()  # task.class_path left unset: the task object is handed over directly
    cfg.train.epochs, cfg.train.batch_size, cfg.train.progress_bar, cfg.train.device = 1, 16, "off", "cpu"
    cfg.schedule.warmup_steps, cfg.run.dir = 0, str(run_dir)
    Trainer(build_run(cfg, task, env=DistEnv())).fit()


def test_the_tasks_own_section_is_recorded_and_the_run_can_be_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = RegressionDataConfig(train_size=64, val_size=16)
    _fit(tmp_path / "named", RegressionTask(RegressionTaskConfig(hidden=8), data))
    recorded = yaml.safe_load((tmp_path / "named" / "config.yaml").read_text())["task"]
    assert recorded["class_path"] == "trainwell.tasks.regression:RegressionTask" and recorded["hidden"] == 8
    assert main(["report", str(tmp_path / "named")]) == 0

    _fit(tmp_path / "unnamed", _UnnamedTask(_UnnamedConfig(), data))
    recorded = yaml.safe_load((tmp_path / "unnamed" / "config.yaml").read_text())["task"]
    assert recorded["class_path"] == f"{__name__}:_UnnamedTask"
    capsys.readouterr()
    code = main(["doctor", str(tmp_path / "unnamed")])
    out, err = capsys.readouterr()
    assert code in (0, 1) and "Diagnosis (training doctor)" in out and "config error" not in err  # read and judged
