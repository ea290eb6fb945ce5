"""Tasks with one planted mistake each, for the fault library (:mod:`fault_table`).

Configs name them by import path (``task.class_path=doctor_faults:ShuffledLabelsRegressionTask``); the runner puts
this directory on ``sys.path``. Each is the healthy task with exactly one realistic mistake, written the way the
mistake happens in a real port (a reader that skips a step, a transform applied to one side only).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from trainwell.tasks.hand_pose import HandPoseTask
from trainwell.tasks.regression import RegressionTask

NAN_SAMPLE_INDEX = 300
"""The training sample whose input holds a NaN (not in the first batches: the run meets it mid-epoch)."""
MANO_ORDER = [0, 5, 6, 7, 9, 10, 11, 17, 18, 19, 13, 14, 15, 1, 2, 3, 4, 8, 12, 16, 20]
"""Joint ``i`` of a MANO/HO3D-ordered array is OpenPose joint ``MANO_ORDER[i]``: the reader forgot to reorder."""
LABEL_KEYS = ("joints_cam_mm", "joints_rel_mm", "root_cam_mm")


# -- regression ----------------------------------------------------------------------------------------
class _ShuffledTargets(Dataset):
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        order = torch.randperm(len(inner), generator=torch.Generator().manual_seed(123))
        self.y = inner.y[order]  # the targets sorted differently from the inputs (e.g. two sorted file lists)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.inner.x[index], "y": self.y[index]}


class ShuffledLabelsRegressionTask(RegressionTask):
    """The training targets are permuted against the inputs."""

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        train, val = super().build_datasets()
        return _ShuffledTargets(train), val


class _NaNSample(Dataset):
    def __init__(self, inner: Any, index: int) -> None:
        self.inner, self.index = inner, index

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = dict(self.inner[index])
        if index == self.index:
            item["x"] = item["x"].clone()
            item["x"][3] = float("nan")  # a missing feature stored as NaN
        return item


class NaNSampleRegressionTask(RegressionTask):
    """Training sample :data:`NAN_SAMPLE_INDEX` has a NaN input feature."""

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        train, val = super().build_datasets()
        return _NaNSample(train, NAN_SAMPLE_INDEX), val


class FrozenRegressionTask(RegressionTask):
    """A freeze loop meant for the first layer runs over every layer but the head."""

    def build_model(self) -> nn.Module:
        model = super().build_model()
        for layer in list(model)[:-1]:
            for p in layer.parameters():
                p.requires_grad_(False)
        return model


# -- hand pose -----------------------------------------------------------------------------------------
class _BatchFault(HandPoseTask):
    """A hand-pose task whose collate applies :meth:`fault` to every (train and val) batch."""

    def fault(self, batch: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def collate_fn(self) -> Callable[[Any], dict[str, Any]]:
        collate = super().collate_fn()
        return lambda items: self.fault(collate(items))


class MANOOrderHandPoseTask(_BatchFault):
    """The reader keeps HO3D's MANO joint order in every array while the pack assumes OpenPose order."""

    def fault(self, batch: dict[str, Any]) -> dict[str, Any]:
        for key in ("joints_cam_mm", "joints_rel_mm", "keypoints_2d_px", "visibility"):
            batch[key] = batch[key][:, MANO_ORDER]
        return batch


class MirroredHandPoseTask(_BatchFault):
    """The 3D labels are the mirror image (x → −x about the wrist) of the hand the 2D keypoints show."""

    def fault(self, batch: dict[str, Any]) -> dict[str, Any]:
        rel = batch["joints_rel_mm"] * torch.tensor([-1.0, 1.0, 1.0])
        batch["joints_rel_mm"], batch["joints_cam_mm"] = rel, rel + batch["root_cam_mm"].unsqueeze(1)
        return batch


class ShuffledLabelsHandPoseTask(_BatchFault):
    """The 3D labels of each batch belong to other samples (a shuffle applied to the labels alone)."""

    def fault(self, batch: dict[str, Any]) -> dict[str, Any]:
        n = batch["joints_rel_mm"].shape[0]
        order = torch.roll(torch.arange(n), 1)
        for key in LABEL_KEYS:
            batch[key] = batch[key][order]
        return batch


class RotatedInputHandPoseTask(HandPoseTask):
    """An in-plane rotation augmentation (±90° about the image centre) applied to the 2D keypoints only."""

    def collate_fn(self) -> Callable[[Any], dict[str, Any]]:
        collate = super().collate_fn()
        generator = torch.Generator().manual_seed(7)
        centre = torch.tensor([self.data_cfg.image_width_px / 2, self.data_cfg.image_height_px / 2])

        def rotated(items: Any) -> dict[str, Any]:
            batch = collate(items)
            kp = batch["keypoints_2d_px"] - centre
            angle = (torch.rand(kp.shape[0], generator=generator) * 2 - 1) * (math.pi / 2)
            c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
            turned = torch.stack((c * kp[..., 0] - s * kp[..., 1], s * kp[..., 0] + c * kp[..., 1]), dim=-1)
            batch["keypoints_2d_px"] = (turned + centre) * (batch["visibility"] > 0).unsqueeze(-1)
            return batch

        return rotated


class StaleEvalHandPoseTask(HandPoseTask):
    """eval_step scores a copy of the model taken at the first evaluation."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.frozen: nn.Module | None = None

    def eval_step(self, model: nn.Module, batch: Mapping[str, Any], indices: torch.Tensor, evaluator: Any) -> None:
        if self.frozen is None:
            self.frozen = copy.deepcopy(model)
        super().eval_step(self.frozen, batch, indices, evaluator)


class EvalModeHandPoseTask(HandPoseTask):
    """compute_losses switches the model to eval mode (BatchNorm then uses and freezes its running statistics)."""

    def compute_losses(self, model: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        model.eval()
        return super().compute_losses(model, batch)
