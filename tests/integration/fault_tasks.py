"""Tasks with one planted fault each, for tests/integration/test_planted_faults.py.

Configs name them by import path (``task.class_path=fault_tasks:NaNRegressionTask``); the test puts this
directory on ``sys.path``. Each is the healthy task with exactly one realistic mistake.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from trainwell.tasks.hand_pose import HandPoseTask
from trainwell.tasks.regression import RegressionTask, RegressionTaskConfig


# -- hand pose: data faults ----------------------------------------------------------------------------
class MetresHandPoseTask(HandPoseTask):
    """3D annotations left in metres (as FreiHAND/HO3D store them) under the ``*_mm`` keys."""

    def collate_fn(self) -> Callable[[Any], dict[str, Any]]:
        collate = super().collate_fn()

        def in_metres(items: Any) -> dict[str, Any]:
            batch = collate(items)
            for key in ("joints_cam_mm", "joints_rel_mm", "root_cam_mm"):
                batch[key] = batch[key] / 1000.0
            return batch

        return in_metres


class CentroidCentredHandPoseTask(HandPoseTask):
    """ "Root-relative" targets centred on the centroid of the joints instead of the wrist."""

    def collate_fn(self) -> Callable[[Any], dict[str, Any]]:
        collate = super().collate_fn()

        def centroid_centred(items: Any) -> dict[str, Any]:
            batch = collate(items)
            joints = batch["joints_cam_mm"]
            batch["joints_rel_mm"] = joints - joints.mean(dim=1, keepdim=True)
            return batch

        return centroid_centred


# -- regression: training faults ------------------------------------------------------------------------
@dataclass
class NaNRegressionTaskConfig(RegressionTaskConfig):
    class_path: str = "fault_tasks:NaNRegressionTask"
    nan_at_batch: int = 7
    """The training micro-batch (1-based, counted over the run) whose 'mse' is NaN."""


class NaNRegressionTask(RegressionTask):
    """The 'mse' component is NaN on one micro-batch (a log of 0, a division by a zero scale…)."""

    Config = NaNRegressionTaskConfig
    cfg: NaNRegressionTaskConfig

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.calls = 0

    def compute_losses(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = super().compute_losses(model, batch)
        self.calls += 1
        if self.calls == self.cfg.nan_at_batch:
            losses["mse"] = losses["mse"] * torch.tensor(float("nan"))
        return losses


class EvalModeRegressionTask(RegressionTask):
    """compute_losses switches the model to eval mode (and never back)."""

    def compute_losses(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        model.eval()
        return super().compute_losses(model, batch)


class StaleEvalRegressionTask(RegressionTask):
    """eval_step scores a copy of the model taken at the first evaluation ("evaluation looks stuck")."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.frozen: nn.Module | None = None

    def eval_step(self, model: nn.Module, batch: Any, indices: torch.Tensor, evaluator: Any) -> None:
        if self.frozen is None:
            self.frozen = copy.deepcopy(model)
        super().eval_step(self.frozen, batch, indices, evaluator)


class _SlowDataset(Dataset):
    def __init__(self, inner: Dataset, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.inner[index]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        time.sleep(self.delay_s)  # decoding, resizing, a slow disk: once per batch
        return [self.inner[i] for i in indices]


class SlowDataRegressionTask(RegressionTask):
    """The training set takes 300 ms to produce each batch in the training process (decoding images from a slow
    disk): several times the regression model's step even on a contended CPU, so the run is input-bound by
    construction."""

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        train, val = super().build_datasets()
        return _SlowDataset(train, 0.3), val


class OneShardEvalRegressionTask(RegressionTask):
    """eval_step scores only the first half of each batch (an evaluation that sees part of the data)."""

    def eval_step(self, model: nn.Module, batch: Any, indices: torch.Tensor, evaluator: Any) -> None:
        half = max(1, indices.shape[0] // 2)
        evaluator.update(model(batch["x"][:half]), batch["y"][:half], indices[:half])
