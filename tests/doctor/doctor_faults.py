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

from trainwell.tasks.captioning import CaptioningTask
from trainwell.tasks.captioning.tokenizer import IGNORE_INDEX
from trainwell.tasks.detection3d import Detection3DTask
from trainwell.tasks.hand_pose import HandPoseTask, RGBDHandPoseTask
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


# -- captioning ----------------------------------------------------------------------------------------
class PaddingInLossCaptioningTask(CaptioningTask):
    """Labels are the next input token everywhere, padding included (``labels = input_ids[:, 1:]`` with no
    ignore index for the pad positions)."""

    def labels(self, text_ids: torch.Tensor, text_mask: torch.Tensor, is_caption: torch.Tensor) -> torch.Tensor:
        right = super().labels(text_ids, text_mask, is_caption)
        soft = self.cfg.model.continuous_prompt_length
        following = torch.cat((text_ids[:, 1:], text_ids[:, -1:]), dim=1)  # pad follows pad
        padded = torch.cat((torch.zeros_like(text_mask[:, :soft]), text_mask), dim=1) == 0
        return torch.where(padded, torch.cat((right[:, :soft], following), dim=1), right)


class UnshiftedLabelsCaptioningTask(CaptioningTask):
    """The label of position t is the input token at t (the port forgot the one-token shift)."""

    def labels(self, text_ids: torch.Tensor, text_mask: torch.Tensor, is_caption: torch.Tensor) -> torch.Tensor:
        soft = self.cfg.model.continuous_prompt_length
        ignore = torch.full_like(text_ids[:, :1], IGNORE_INDEX).expand(-1, soft)
        return torch.cat((ignore, torch.where(is_caption, text_ids, IGNORE_INDEX)), dim=1)


# -- 3D detection --------------------------------------------------------------------------------------
class _TurnedHeadings(Dataset):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> dict[str, Any]:
        frame = dict(self.inner[index])
        boxes = frame["gt_boxes"].clone()
        boxes[:, 6] = boxes[:, 6] + math.pi / 2  # KITTI's camera rotation_y taken for the LiDAR heading
        frame["gt_boxes"] = boxes
        return frame


class CameraHeadingDetectionTask(Detection3DTask):
    """The training labels' headings are 90° off: a reader that kept the camera frame's rotation convention."""

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        train, val = super().build_datasets()  # self.train_set stays the inner set (augmentation epochs)
        return _TurnedHeadings(train), val


# -- RGB-D hand pose -----------------------------------------------------------------------------------
class _ScaledImages(Dataset):
    def __init__(self, inner: Any, key: str, factor: float) -> None:
        self.inner, self.key, self.factor = inner, key, factor

    def __len__(self) -> int:
        return len(self.inner)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = self.inner.__getitems__(indices)
        batch[self.key] = batch[self.key] * self.factor
        return batch


class DepthInMetresRGBDTask(RGBDHandPoseTask):
    """Depth maps reach the model in metres (a reader that divided HO3D's decoded depth by 1000 once too often)."""

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        train, val = super().build_datasets()
        return _ScaledImages(train, "depth_mm", 1e-3), _ScaledImages(val, "depth_mm", 1e-3)


class RGB255RGBDTask(RGBDHandPoseTask):
    """RGB reaches the model in 0…255 (an image decoded to uint8 values and never divided by 255)."""

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        train, val = super().build_datasets()
        return _ScaledImages(train, "rgb", 255.0), _ScaledImages(val, "rgb", 255.0)
