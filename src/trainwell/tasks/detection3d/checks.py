"""Doctor checks of the 3D detection task: pure functions over a collated batch (and, for the head, a model).

* Boxes whose points lie outside them: labels in another frame (camera coordinates fed as LiDAR, x/y swapped,
  the KITTI bottom centre taken for the box centre).
* Headings in the wrong convention: the points inside a car-sized box spread along its *width* instead of its
  length (KITTI's ``rotation_y`` used as the LiDAR heading without ``-(ry + π/2)``).
* A head that predicts only background: no anchor's score reaches the post-processing threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from trainwell.doctor import Finding
from trainwell.tasks.detection3d.boxes import points_in_boxes

MIN_FILLED_SHARE = 0.5
"""At least this share of (non-ignored) labelled boxes must contain a point."""
MIN_ALIGNED_SHARE = 0.5
"""At least this share of cars must have their points spread along their length."""


def _frames(batch: Mapping[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per frame: points (N, 3), boxes (G, 7) and labels (G,) of the labelled, non-ignored boxes."""
    out = []
    for b in range(int(batch["batch_size"])):
        pts = batch["points"][batch["points"][:, 0] == b, 1:4]
        keep = (batch["gt_labels"][b] > 0) & ~batch["gt_ignored"][b]
        out.append((pts, batch["gt_boxes"][b][keep], batch["gt_labels"][b][keep]))
    return out


def check_points_in_boxes(batch: Mapping[str, Any]) -> Finding | None:
    """Most labelled boxes must hold points (a box frame / axis mix-up leaves them empty)."""
    filled = total = 0
    for pts, boxes, _ in _frames(batch):
        if len(boxes) == 0:
            continue
        inside = points_in_boxes(pts.double(), boxes.double(), margin_m=0.1)
        filled += int(inside.any(0).sum())
        total += len(boxes)
    if total == 0 or filled / total >= MIN_FILLED_SHARE:
        return None
    return Finding(
        id="detection3d.boxes_without_points",
        severity="error",
        title="Most ground-truth boxes contain no LiDAR points",
        evidence=f"{filled} of {total} labelled boxes in the batch hold at least one point.",
        fix="Boxes and points must both be in the LiDAR frame (x forward, y left, z up) with z at the box centre; "
        "convert KITTI camera labels with kitti.camera_to_lidar_boxes.",
    )


def check_heading_convention(batch: Mapping[str, Any], car_label: int = 1) -> Finding | None:
    """Points in a car box (taken with a generous square footprint) should spread along the box's heading."""
    aligned = total = 0
    for pts, boxes, labels in _frames(batch):
        for box in boxes[labels == car_label]:
            # A square of side = length around the box, so a wrong heading cannot cut the points off.
            square = box.clone()
            square[3] = square[4] = box[3]
            inside = points_in_boxes(pts.double(), square[None].double())[:, 0]
            inside &= pts[:, 2] > box[2] - box[5] / 2 + 0.25  # not the ground under the car
            local = pts[inside, :2].double() - box[:2].double()
            if local.shape[0] < 20:
                continue
            c, s = torch.cos(box[6]).double(), torch.sin(box[6]).double()
            along = (local[:, 0] * c + local[:, 1] * s).abs()
            across = (-local[:, 0] * s + local[:, 1] * c).abs()
            total += 1
            aligned += int(along.max() > across.max())
    if total < 3 or aligned / total >= MIN_ALIGNED_SHARE:
        return None
    return Finding(
        id="detection3d.heading_convention",
        severity="warning",
        title="Car headings look rotated by 90°: their points spread across the box, not along it",
        evidence=f"{aligned} of {total} cars with ≥ 20 points extend further along their heading than across it.",
        fix="The LiDAR heading is counter-clockwise from +x with dx the length; from KITTI use -(rotation_y + π/2).",
    )


@torch.no_grad()
def check_head_not_background(model: nn.Module, batch: Mapping[str, Any], score_thresh: float) -> Finding | None:
    """A head whose every anchor scores below ``score_thresh`` detects nothing (collapsed to background)."""
    was_training = model.training
    model.eval()
    try:
        cls, _, _ = model.predict_maps(batch["points"], int(batch["batch_size"]))
    finally:
        model.train(was_training)
    top = float(torch.sigmoid(cls.float()).max())
    if top >= score_thresh:
        return None
    return Finding(
        id="detection3d.head_only_background",
        severity="warning",
        title="The detection head predicts only background",
        evidence=f"Highest class probability over all anchors of the batch: {top:.4f} < score_thresh {score_thresh}.",
        fix="Check the target assignment (positives per frame in the progress line: num_pos_anchors), the anchor "
        "sizes and heights against the labels, and the focal loss weight; or train longer.",
    )


def check_detection_batch(batch: Mapping[str, Any]) -> list[Finding]:
    """All batch checks; the findings that fire."""
    found = [check_points_in_boxes(batch), check_heading_convention(batch)]
    return [f for f in found if f is not None]
