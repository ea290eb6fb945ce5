"""An OpenPCDet-style port in one file: ``model_func(model, batch) -> (loss, tb_dict, disp_dict)`` on trainwell.

OpenPCDet's ``train_one_epoch`` calls ``loss, tb_dict, disp_dict = model_func(model, batch)``, backpropagates
``loss``, clips at ``GRAD_NORM_CLIP``, steps ``adam_onecycle`` and logs every ``tb_dict`` item to TensorBoard. Here
the model's training forward returns the same triple and ``compute_losses`` maps it in one line onto trainwell's
contract: the summed parts → ``losses``, the other ``tb_dict`` items → ``logs``, ``disp_dict`` → ``progress``.
Everything else (OneCycle with β1 cycling, clipping, checkpoint interval and maximum kept, an iteration budget,
augmentation off for the last epochs) is configuration (``config.yaml``, mapping in the README).

Synthetic data so it runs anywhere in seconds: each frame holds a variable number of points around one object
centre (plus clutter); the "detector" pools per-point features per frame (a batch-index column, no padding, as
OpenPCDet's collate) and regresses the centre and a class score. Predictions per frame are ragged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from trainwell.engine.task import DataConfig, LossOutput, MetricSpec, Task, TaskConfig


@dataclass
class PCDetStyleConfig(TaskConfig):
    class_path: str = "pcdet_task:PCDetStyleTask"
    width: int = 32
    disable_aug_last_epochs: int = 1
    """OpenPCDet's DisableAugmentationHook (NUM_LAST_EPOCHS): global rotation/flip off for the last N epochs."""


@dataclass
class PCDetStyleDataConfig(DataConfig):
    train_size: int = 256
    val_size: int = 48
    seed: int = 0


class Frames(Dataset):
    """``{"points": (N, 4) x y z intensity, "center": (3,)}`` with N varying; a pure function of (seed, split, index)
    and, in training, of the epoch (the augmentation stream), so a resumed epoch sees the same frames."""

    def __init__(self, cfg: PCDetStyleDataConfig, split: str) -> None:
        self.cfg, self.split = cfg, split
        self.size = cfg.train_size if split == "train" else cfg.val_size
        self.augment, self.epoch = split == "train", 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(
            self.cfg.seed * 1_000_003 + (0 if self.split == "train" else 7_777_777) + index
        )
        center = torch.rand(3, generator=g) * torch.tensor([40.0, 20.0, 2.0]) - torch.tensor([0.0, 10.0, 1.0])
        n_obj, n_bg = int(torch.randint(20, 60, (1,), generator=g)), int(torch.randint(10, 30, (1,), generator=g))
        obj = center + torch.randn(n_obj, 3, generator=g) * torch.tensor([1.0, 0.5, 0.4])
        clutter = torch.rand(n_bg, 3, generator=g) * torch.tensor([40.0, 20.0, 3.0]) - torch.tensor([0.0, 10.0, 1.5])
        points = torch.cat([obj, clutter])
        points = torch.cat([points, torch.rand(len(points), 1, generator=g)], dim=1)
        if self.augment:  # global flip along x, as OpenPCDet's random_world_flip; its own stream per (epoch, index)
            a = torch.Generator().manual_seed(self.cfg.seed * 31 + self.epoch * 1_000_003 + index)
            if float(torch.rand(1, generator=a)) < 0.5:
                points[:, 1], center = -points[:, 1], center * torch.tensor([1.0, -1.0, 1.0])
        return {"points": points, "center": center}


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Points of all frames concatenated with a leading batch-index column (no padding), centres stacked."""
    points = torch.cat(
        [torch.cat([torch.full((len(i["points"]), 1), float(b)), i["points"]], 1) for b, i in enumerate(items)]
    )
    return {
        "points": points,
        "center": torch.stack([i["center"] for i in items]),
        "batch_size": torch.tensor(len(items)),
    }


class PointDetector(nn.Module):
    """Per-point features → a per-frame softmax over points (which points belong to the object) → the weighted
    mean of their coordinates, refined by a pooled offset; the training forward returns OpenPCDet's triple."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.point_net = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.score = nn.Linear(width, 1)
        self.offset = nn.Linear(width, 3)

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        points = batch["points"]
        frame = points[:, 0].long()
        xyz = points[:, 1:4]
        # Features of each point relative to its frame's mean: the object is the dense cluster, not a position.
        num_frames = batch["center"].shape[0]  # known on the host: no device read for the batch size
        count = torch.zeros(num_frames, device=points.device).index_add_(
            0, frame, torch.ones_like(frame, dtype=xyz.dtype)
        )
        mean = torch.zeros(num_frames, 3, device=points.device).index_add_(0, frame, xyz) / count[:, None]
        features = self.point_net(torch.cat([xyz - mean[frame], points[:, 4:]], dim=1))
        score = self.score(features).squeeze(1).float()
        top = torch.full((num_frames,), -1e9, device=points.device).scatter_reduce(0, frame, score, reduce="amax")
        weight = torch.exp(score - top[frame])
        total = torch.zeros(num_frames, device=points.device).index_add_(0, frame, weight)
        center = torch.zeros(num_frames, 3, device=points.device).index_add_(0, frame, weight[:, None] * xyz.float())
        pooled = torch.zeros(num_frames, features.shape[1], device=points.device, dtype=features.dtype)
        pooled = pooled.index_add_(0, frame, weight[:, None].to(features.dtype) * features) / total[:, None].to(
            features.dtype
        )
        pred = center / total[:, None] + self.offset(pooled).float()
        if not self.training:
            return pred
        loss_loc = nn.functional.smooth_l1_loss(pred[:, :2], batch["center"][:, :2])
        loss_z = 0.5 * nn.functional.smooth_l1_loss(pred[:, 2], batch["center"][:, 2])
        loss = loss_loc + loss_z
        tb_dict = {"loss_loc": loss_loc, "loss_z": loss_z, "num_points": float(points.shape[0]) / num_frames}
        disp_dict = {"loc_err": (pred[:, :2] - batch["center"][:, :2]).norm(dim=1).mean().detach()}
        return loss, tb_dict, disp_dict


class CenterError:
    """Per-frame predicted centres (ragged in general: a detector returns K boxes per frame; here K = 1)."""

    def __init__(self, references: Dataset) -> None:
        self.references = references
        self.reset()

    def reset(self) -> None:
        self.indices: list[int] = []
        self.boxes: list[torch.Tensor] = []

    def update(self, pred: torch.Tensor, indices: torch.Tensor) -> None:
        self.boxes += list(pred.detach().cpu().float().unsqueeze(1))
        self.indices += indices.tolist()

    def local_results(self) -> tuple[torch.Tensor, dict[str, Any]]:
        return torch.tensor(self.indices, dtype=torch.int64), {"boxes": self.boxes}

    def load_results(self, indices: torch.Tensor, results: dict[str, Any]) -> None:
        self.indices, self.boxes = indices.tolist(), results["boxes"]

    def compute(self) -> dict[str, float]:
        errors = torch.stack(
            [(b[0] - self.references[i]["center"]).norm() for i, b in zip(self.indices, self.boxes, strict=True)]
        )
        return {"center_error_m": float(errors.mean()), "recall_1m": float((errors < 1.0).float().mean())}


class PCDetStyleTask(Task):
    Config = PCDetStyleConfig
    DataConfig = PCDetStyleDataConfig
    cfg: PCDetStyleConfig
    data_cfg: PCDetStyleDataConfig

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        self.train_set, self.val_set = Frames(self.data_cfg, "train"), Frames(self.data_cfg, "val")
        return self.train_set, self.val_set

    def build_model(self) -> nn.Module:
        return PointDetector(self.cfg.width)

    def collate_fn(self) -> Any:
        return collate

    def build_evaluator(self) -> CenterError:
        return CenterError(self.val_set)

    def metric_names(self) -> set[str]:
        return {"center_error_m", "recall_1m"}  # what CenterError.compute returns

    def metric_specs(self) -> dict[str, MetricSpec]:
        return {
            "center_error_m": MetricSpec(unit="m", plausible=(0, 100)),
            "recall_1m": MetricSpec(higher_is_better=True),
        }

    def on_epoch_start(self, epoch: int) -> None:
        # The engine gives fresh DataLoader workers each epoch when a task has this hook, so they see the change.
        self.train_set.epoch = epoch
        assert self.num_epochs is not None  # set by the engine before the first epoch
        self.train_set.augment = epoch < self.num_epochs - self.cfg.disable_aug_last_epochs

    def compute_losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        _, tb_dict, disp_dict = model(batch)  # OpenPCDet's model_func(model, batch); its loss = the sum below
        summed = {k: v for k, v in tb_dict.items() if k.startswith("loss_")}  # their sum is `loss`
        return LossOutput(losses=summed, logs={k: v for k, v in tb_dict.items() if k not in summed}, progress=disp_dict)

    def eval_step(
        self, model: nn.Module, batch: dict[str, torch.Tensor], indices: torch.Tensor, evaluator: Any
    ) -> None:
        evaluator.update(model(batch), indices)
