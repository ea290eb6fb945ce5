"""OpenPCDet's global augmentations (``random_world_flip`` along y, ``random_world_rotation``,
``random_world_scaling``), as pure functions of the frame and a generator.

The generator of a training frame is a pure function of ``(seed, epoch, index)`` (:func:`augment_rng`), so a resumed
run draws exactly the augmentations the uninterrupted run would have drawn, whichever DataLoader worker loads the
frame. Ground-truth sampling (``gt_sampling``) is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    disable_from_epoch: int | None = None
    """OpenPCDet's ``DisableAugmentationHook``: no augmentation from this (0-based) epoch on; for the last N of
    ``train.epochs`` set it to ``epochs - N`` (the task does not see ``train.epochs``). ``null``: never."""


def augment_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation generator of one training frame in one epoch."""
    return np.random.default_rng([seed, epoch, index, 0xA06])


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
