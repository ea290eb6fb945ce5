"""Datasets of LiDAR frames (synthetic or KITTI-layout) and the collate that keeps point clouds ragged.

A sample is a dict of tensors: ``points (N, 4)`` (x, y, z, intensity), ``gt_boxes (G, 7)``, ``gt_labels (G,)``
(1 = Car, 2 = Pedestrian, 3 = Cyclist; 0 = a class the detector does not learn, e.g. Van or DontCare),
``gt_ignored (G,)`` (too few points: not a training target) and the KITTI difficulty inputs ``height_px``,
``truncation``, ``occlusion`` (G,), plus ``gt_names`` (a list of G strings) for the evaluation.

Augmentation on the training set is a pure function of ``(seed, epoch, index)``; the epoch comes from
:meth:`FrameDataset.set_epoch`, which the task calls from ``on_epoch_start``. That reaches DataLoader workers only
when they are started after it: the engine starts fresh workers every epoch for a task that overrides
``on_epoch_start`` (it turns ``data.persistent_workers`` off), and with ``data.num_workers: 0`` the dataset is the
training process's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from trainwell.tasks.detection3d.augment import AugmentConfig, augment_frame, augment_rng, sample_ground_truth
from trainwell.tasks.detection3d.scenes import CLASS_NAMES, SceneConfig, generate_frame

Frame = dict[str, Any]


def in_range(xyz: np.ndarray, point_range_m: Sequence[float]) -> np.ndarray:
    """``(N,)`` bool: inside ``[x_min, y_min, z_min, x_max, y_max, z_max]``."""
    lo, hi = np.asarray(point_range_m[:3]), np.asarray(point_range_m[3:])
    return np.all((xyz >= lo) & (xyz < hi), axis=1)


def frame_to_sample(frame: Frame, point_range_m: Sequence[float]) -> dict[str, Any]:
    """Crop points to the detector's range, keep the labels whose centre is inside, convert to tensors."""
    points = frame["points"][in_range(frame["points"][:, :3], point_range_m)]
    boxes = np.asarray(frame["gt_boxes"], dtype=np.float32).reshape(-1, 7)
    keep = in_range(
        boxes[:, :3], [point_range_m[0], point_range_m[1], -np.inf, point_range_m[3], point_range_m[4], np.inf]
    )
    names = [n for n, k in zip(frame["gt_names"], keep, strict=True) if k]
    labels = [CLASS_NAMES.index(n) + 1 if n in CLASS_NAMES else 0 for n in names]
    return {
        "points": torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
        "gt_boxes": torch.from_numpy(boxes[keep]),
        "gt_labels": torch.tensor(labels, dtype=torch.int64),
        "gt_ignored": torch.from_numpy(np.asarray(frame["ignored"], dtype=bool)[keep]),
        "height_px": torch.from_numpy(np.asarray(frame["height_px"], dtype=np.float32)[keep]),
        "truncation": torch.from_numpy(np.asarray(frame["truncation"], dtype=np.float32)[keep]),
        "occlusion": torch.from_numpy(np.asarray(frame["occlusion"], dtype=np.int64)[keep]),
        "gt_names": names,
    }


class FrameDataset(Dataset):
    """Map-style frames from ``load(index) -> Frame``, cropped, optionally augmented (training), cached raw.

    Args:
        load: the frame of an index (a pure function: synthetic generation, or reading KITTI files).
        size: number of frames.
        point_range_m: the detector's ``[x_min, y_min, z_min, x_max, y_max, z_max]``.
        augment: augmentation settings, or ``None`` for validation.
        seed: the augmentation seed.
        cache: keep raw frames in memory (they are pure functions of the index, so caching changes nothing).
    """

    def __init__(
        self,
        load: Callable[[int], Frame],
        size: int,
        point_range_m: Sequence[float],
        augment: AugmentConfig | None = None,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        self.load = load
        self.size = size
        self.point_range_m = list(point_range_m)
        self.augment = augment
        self.seed = seed
        self.cache: dict[int, Frame] | None = {} if cache else None
        self.epoch = 0
        self.augment_on = augment is not None and augment.enabled

    def set_epoch(self, epoch: int, augment_on: bool) -> None:
        """The epoch the augmentation draws from, and whether augmentation is on (DisableAugmentationHook)."""
        self.epoch = epoch
        self.augment_on = augment_on and self.augment is not None and self.augment.enabled

    def __len__(self) -> int:
        return self.size

    def raw(self, index: int) -> Frame:
        """The un-augmented, un-cropped frame of ``index``."""
        if not 0 <= index < self.size:
            raise IndexError(f"Frame index {index} is outside 0 … {self.size - 1}.")
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        frame = self.load(index)
        if self.cache is not None:
            self.cache[index] = frame
        return frame

    def __getitem__(self, index: int) -> dict[str, Any]:
        frame = self.raw(index)
        if self.augment_on and self.augment is not None and self.augment.gt_sampling.enabled:
            frame = sample_ground_truth(
                frame,
                index,
                self.raw,
                self.size,
                self.augment.gt_sampling,
                augment_rng(self.seed, self.epoch, index, stream=1),
            )
        if self.augment_on and self.augment is not None:
            points, boxes = augment_frame(
                frame["points"],
                np.asarray(frame["gt_boxes"]).reshape(-1, 7),
                self.augment,
                augment_rng(self.seed, self.epoch, index),
            )
            frame = {**frame, "points": points, "gt_boxes": boxes}
        return frame_to_sample(frame, self.point_range_m)


def synthetic_dataset(
    scene: SceneConfig,
    seed: int,
    split: str,
    size: int,
    point_range_m: Sequence[float],
    augment: AugmentConfig | None = None,
    cache: bool = True,
) -> FrameDataset:
    """Synthetic frames of ``split``: frame ``i`` is ``generate_frame(scene, seed, split, i)``."""

    def load(index: int) -> Frame:
        return generate_frame(scene, seed, split, index)

    return FrameDataset(load, size, point_range_m, augment=augment, seed=seed, cache=cache)


def collate_frames(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch frames without padding points: ``points (sum N, 5)`` with the frame index in column 0.

    Boxes are padded only to the batch's largest frame: ``gt_boxes (B, Gmax, 7)``, ``gt_labels (B, Gmax)`` with
    ``-1`` marking padding, ``gt_ignored (B, Gmax)``; the per-frame difficulty inputs and names stay lists.
    """
    points = [
        torch.cat([torch.full((s["points"].shape[0], 1), float(b)), s["points"]], 1) for b, s in enumerate(samples)
    ]
    max_g = max([s["gt_boxes"].shape[0] for s in samples] + [1])
    boxes = torch.zeros(len(samples), max_g, 7)
    labels = torch.full((len(samples), max_g), -1, dtype=torch.int64)
    ignored = torch.zeros(len(samples), max_g, dtype=torch.bool)
    for b, s in enumerate(samples):
        g = s["gt_boxes"].shape[0]
        boxes[b, :g], labels[b, :g], ignored[b, :g] = s["gt_boxes"], s["gt_labels"], s["gt_ignored"]
    return {
        "points": torch.cat(points, 0),
        "batch_size": len(samples),
        "gt_boxes": boxes,
        "gt_labels": labels,
        "gt_ignored": ignored,
        "height_px": [s["height_px"] for s in samples],
        "truncation": [s["truncation"] for s in samples],
        "occlusion": [s["occlusion"] for s in samples],
        "gt_names": [s["gt_names"] for s in samples],
    }
