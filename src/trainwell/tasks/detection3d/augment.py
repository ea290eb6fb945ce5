"""OpenPCDet's global augmentations (``random_world_flip`` along y, ``random_world_rotation``,
``random_world_scaling``), as pure functions of the frame and a generator.

The generator of a training frame is a pure function of ``(seed, epoch, index)`` (:func:`augment_rng`), so a resumed
run draws exactly the augmentations the uninterrupted run would have drawn, whichever DataLoader worker loads the
frame. Ground-truth sampling (``gt_sampling``, :func:`sample_ground_truth`) pastes labelled objects and their points
from other training frames, at the positions they had there (so their point patterns stay those a sensor at the
origin sees), as OpenPCDet's ``DataBaseSampler`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainwell.tasks.detection3d.boxes import iou_bev, points_in_boxes


@dataclass
class GtSamplingConfig:
    """``data.augment.gt_sampling``: OpenPCDet's ``gt_sampling`` (``SAMPLE_GROUPS``, ``filter_by_min_points``)."""

    enabled: bool = False
    sample_groups: dict[str, int] = field(default_factory=lambda: {"Car": 15, "Pedestrian": 15, "Cyclist": 15})
    """Fill each class up to this many objects per frame (OpenPCDet's ``'Car:15'``)."""
    min_points: int = 5
    """Only objects with at least this many points are pasted."""
    max_tries: int = 40
    """Donor draws per class and frame before giving up (a draw fails on a collision or an empty donor)."""


@dataclass
class AugmentConfig:
    """``data.augment``: OpenPCDet's ``DATA_AUGMENTOR.AUG_CONFIG_LIST`` (global flip / rotation / scaling)."""

    enabled: bool = True
    flip_y: bool = True
    """``random_world_flip`` with ``ALONG_AXIS_LIST: ['x']`` (mirror y -> -y), probability 0.5."""
    rotation_deg: float = 45.0
    """``random_world_rotation``: yaw drawn uniformly from ``±rotation_deg`` (OpenPCDet: ±π/4)."""
    scale_range: tuple[float, float] = (0.95, 1.05)
    """``random_world_scaling``: a factor drawn uniformly from this range."""
    gt_sampling: GtSamplingConfig = field(default_factory=GtSamplingConfig)
    disable_from_epoch: int | None = None
    """OpenPCDet's ``DisableAugmentationHook``: no augmentation from this (0-based) epoch on; for the last N of
    ``train.epochs`` set it to ``epochs - N`` (the task does not see ``train.epochs``). ``null``: never."""


def augment_rng(seed: int, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
    """The augmentation generator of one training frame in one epoch (``stream`` 1: ground-truth sampling)."""
    return np.random.default_rng([seed, epoch, index, 0xA06, stream])


_PER_OBJECT = ("num_points", "height_px", "truncation", "occlusion", "ignored")


def sample_ground_truth(
    frame: dict[str, Any],
    index: int,
    donor: Callable[[int], dict[str, Any]],
    num_frames: int,
    cfg: GtSamplingConfig,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Paste objects of other frames (their box, labels and the points inside the box) into ``frame``.

    Each class is filled up to ``cfg.sample_groups[cls]`` objects; a pasted box may not overlap (BEV) any box
    already there or pasted; the frame's own points inside pasted boxes are removed.
    """
    boxes = np.asarray(frame["gt_boxes"], dtype=np.float64).reshape(-1, 7)
    names = list(frame["gt_names"])
    new: list[tuple[dict[str, Any], int]] = []
    for cls, want in cfg.sample_groups.items():
        need = want - names.count(cls)
        for _ in range(cfg.max_tries):
            if need <= 0:
                break
            j = int(rng.integers(num_frames))
            src = donor(j)
            cand = [
                k
                for k, n in enumerate(src["gt_names"])
                if n == cls and src["num_points"][k] >= cfg.min_points and not src["ignored"][k]
            ]
            if j == index or not cand:
                continue
            k = cand[int(rng.integers(len(cand)))]
            box = np.asarray(src["gt_boxes"][k], dtype=np.float64)[None]
            taken = np.concatenate([boxes, *(np.asarray(d["gt_boxes"][m], dtype=np.float64)[None] for d, m in new)])
            if len(taken) and float(iou_bev(torch.from_numpy(box), torch.from_numpy(taken)).max()) > 0:
                continue
            new.append((src, k))
            need -= 1
    if not new:
        return frame
    pasted = np.stack([np.asarray(d["gt_boxes"][m], dtype=np.float64) for d, m in new])
    points = frame["points"]
    inside = points_in_boxes(torch.from_numpy(points[:, :3]).double(), torch.from_numpy(pasted)).any(1).numpy()
    parts = [points[~inside]]
    for (src, _), box in zip(new, pasted, strict=True):
        own = points_in_boxes(torch.from_numpy(src["points"][:, :3]).double(), torch.from_numpy(box[None]))[:, 0]
        parts.append(src["points"][own.numpy()])
    out = {
        **frame,
        "points": np.concatenate(parts).astype(np.float32),
        "gt_boxes": np.concatenate([boxes, pasted]).astype(np.float32),
        "gt_names": names + [src["gt_names"][m] for src, m in new],
    }
    for key in _PER_OBJECT:
        out[key] = np.concatenate([np.asarray(frame[key]), np.array([src[key][m] for src, m in new])])
    return out


def rotate_z(xy: np.ndarray, angle: float) -> np.ndarray:
    """Rotate ``(N, 2)`` points by ``angle`` (radians, counter-clockwise about +z)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([xy[:, 0] * c - xy[:, 1] * s, xy[:, 0] * s + xy[:, 1] * c], -1)


def flip_y(points: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror the scene across the x–z plane: y -> -y, heading -> -heading."""
    points, boxes = points.copy(), boxes.copy()
    points[:, 1] = -points[:, 1]
    boxes[:, 1] = -boxes[:, 1]
    boxes[:, 6] = -boxes[:, 6]
    return points, boxes


def rotate(points: np.ndarray, boxes: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the whole scene about the sensor's z axis by ``angle`` radians."""
    points, boxes = points.copy(), boxes.copy()
    points[:, :2] = rotate_z(points[:, :2], angle)
    boxes[:, :2] = rotate_z(boxes[:, :2], angle)
    boxes[:, 6] = boxes[:, 6] + angle
    return points, boxes


def scale(points: np.ndarray, boxes: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale positions and box sizes by ``factor`` about the sensor."""
    points, boxes = points.copy(), boxes.copy()
    points[:, :3] *= factor
    boxes[:, :6] *= factor
    return points, boxes


def augment_frame(
    points: np.ndarray, boxes: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Flip, rotate and scale ``points (N, 4+)`` and ``boxes (G, 7)`` together, in OpenPCDet's order.

    Every draw is made whether or not its augmentation is on, so switching one off leaves the others' draws
    unchanged.
    """
    do_flip = rng.random() < 0.5
    angle = np.radians(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    factor = rng.uniform(*cfg.scale_range)
    if cfg.flip_y and do_flip:
        points, boxes = flip_y(points, boxes)
    if cfg.rotation_deg > 0:
        points, boxes = rotate(points, boxes, float(angle))
    if cfg.scale_range != (1.0, 1.0):
        points, boxes = scale(points, boxes, float(factor))
    return points, boxes
