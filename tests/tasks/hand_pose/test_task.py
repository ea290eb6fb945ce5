"""The task as the engine sees it: typed config sections, losses, evaluation, debugging hooks."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from trainwell.config.loader import ConfigError
from trainwell.engine.task import Task
from trainwell.experiment import load_config
from trainwell.metrics import PoseAccumulator
from trainwell.tasks.hand_pose import HandPoseDataConfig, HandPoseTask, HandPoseTaskConfig
from trainwell.tasks.hand_pose.datasets import SAMPLE_KEYS

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "hand_pose"


@pytest.mark.parametrize("name", ["synthetic_lifting.yaml", "tiny.yaml"])
def test_shipped_configs_load_into_the_typed_sections(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg.task, HandPoseTaskConfig) and isinstance(cfg.data, HandPoseDataConfig)
    assert cfg.task.loss_weights.joint_3d > 0
    assert cfg.data.hand_scale_jitter == pytest.approx(0.15)
    assert list(cfg.data.depth_range_mm) == [250.0, 800.0]


def test_a_misspelt_loss_weight_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="joint_3d"):
        load_config(CONFIGS / "tiny.yaml", ["task.loss_weights.joint3d=1.0"])


@pytest.fixture(scope="module")
def task() -> HandPoseTask:
    cfg = load_config(CONFIGS / "tiny.yaml", ["data.train_size=256", "data.val_size=100", "task.model.hidden=32"])
    task = HandPoseTask(cfg.task, cfg.data)
    assert isinstance(task, Task)
    return task


def test_losses_are_weighted_named_tensors(task: HandPoseTask) -> None:
    torch.manual_seed(0)
    train, _ = task.build_datasets()
    model = task.build_model()
    batch = task.collate_fn()(train.__getitems__(list(range(64))))
    losses = task.compute_losses(model, batch)
    weights = task.cfg.loss_weights
    assert set(losses) == {name for name in vars(weights) if getattr(weights, name)}
    for value in losses.values():
        assert isinstance(value, torch.Tensor) and value.shape == () and value.requires_grad
        assert math.isfinite(float(value.detach())) and float(value.detach()) > 0


def test_eval_step_feeds_the_pose_accumulator_with_mm_errors(task: HandPoseTask) -> None:
    torch.manual_seed(0)
    _, val = task.build_datasets()
    model = task.build_model().eval()
    evaluator = task.build_evaluator()
    assert isinstance(evaluator, PoseAccumulator)
    evaluator.reset()
    with torch.no_grad():
        for start in range(0, len(val), 32):
            indices = list(range(start, min(len(val), start + 32)))
            task.eval_step(model, val.__getitems__(indices), torch.tensor(indices), evaluator)
        pred = model(val.fields["keypoints_2d_px"], val.fields["visibility"], val.fields["intrinsics"])["joints_mm"]
    metrics = evaluator.compute()
    expected = np.linalg.norm((pred - val.fields["joints_rel_mm"]).double().numpy(), axis=-1).mean()
    assert metrics["mpjpe"] == pytest.approx(expected, rel=1e-4)
    assert 0 < metrics["pa_mpjpe"] < metrics["mpjpe"]
    assert task.metric_units()["mpjpe"] == task.metric_units()["pa_mpjpe"] == "mm"


def test_collate_fn_passes_batches_through(task: HandPoseTask) -> None:
    train, _ = task.build_datasets()
    batch = train.__getitems__([3, 1])
    assert task.collate_fn()(batch) == batch
    assert set(task.collate_fn()([train[3], train[1]])) == set(SAMPLE_KEYS)


def test_debug_losses_reports_finite_statistics(task: HandPoseTask) -> None:
    torch.manual_seed(0)
    train, _ = task.build_datasets()
    model = task.build_model()
    stats = task.debug_losses(model, train.__getitems__(list(range(64))))
    for key in ["pred_cam_mean_mm", "target_rel_std_mm", "joint_error_mean_mm", "joint_error_max_mm", "joint_3d"]:
        assert key in stats
    assert all(isinstance(v, float) and math.isfinite(v) for v in stats.values())
    assert stats["pred_root_abs_max_mm"] == 0.0  # the model is root-relative by construction
    assert stats["joint_error_max_mm"] >= stats["joint_error_mean_mm"] > 0
    assert task.check_batch(train.__getitems__([0, 1])) == []
