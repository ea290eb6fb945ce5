"""Anchors, OpenPCDet's residual box coder and the axis-aligned target assigner (vectorised per frame).

Anchors lie on the head's BEV grid, one per class and rotation (0 and π/2) at every cell (OpenPCDet's
``AnchorGenerator``). A ground truth's targets are encoded against its anchor as ``ResidualCoder`` does:
``(Δx/d, Δy/d, Δz/h_a, log(l/l_a), log(w/w_a), log(h/h_a), Δθ)`` with ``d`` the anchor's BEV diagonal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from trainwell.tasks.detection3d.boxes import limit_period


@dataclass
class AnchorClassConfig:
    """One class's anchors and matching thresholds (OpenPCDet's ``ANCHOR_GENERATOR_CONFIG`` entry)."""

    name: str = "Car"
    size_m: tuple[float, float, float] = (3.9, 1.6, 1.56)
    """Anchor (length dx, width dy, height dz)."""
    bottom_z_m: float = -1.73
    """Anchor bottom height in the LiDAR frame (the ground under a sensor 1.73 m high)."""
    matched_threshold: float = 0.6
    unmatched_threshold: float = 0.45


def default_anchor_classes() -> list[AnchorClassConfig]:
    """KITTI's PointPillars anchors: Car 0.6/0.45, Pedestrian and Cyclist 0.5/0.35."""
    return [
        AnchorClassConfig("Car", (3.9, 1.6, 1.56), -1.73, 0.6, 0.45),
        AnchorClassConfig("Pedestrian", (0.8, 0.6, 1.73), -1.73, 0.5, 0.35),
        AnchorClassConfig("Cyclist", (1.76, 0.6, 1.73), -1.73, 0.5, 0.35),
    ]


@dataclass
class AnchorConfig:
    """``task.model.anchors``."""

    classes: list[AnchorClassConfig] = field(default_factory=default_anchor_classes)
    rotations: tuple[float, ...] = (0.0, math.pi / 2)
    align_center: bool = True
    """True: anchors at the centres of the head's cells; False: OpenPCDet's default (``align_center: False``),
    ``n`` anchors spread evenly from the range's lower edge to its upper edge (a step of ``range / (n - 1)``) — use
    it to run OpenPCDet's weights, whose box residuals are relative to those anchors."""


def make_anchors(cfg: AnchorConfig, point_range_m: list[float], grid_xy: tuple[int, int]) -> torch.Tensor:
    """Anchors ``(ny, nx, num_classes * num_rotations, 7)`` centred on the cells of a ``(nx, ny)`` BEV grid."""
    nx, ny = grid_xy
    if cfg.align_center:
        step_x = (point_range_m[3] - point_range_m[0]) / nx
        step_y = (point_range_m[4] - point_range_m[1]) / ny
        xs = point_range_m[0] + step_x * (torch.arange(nx, dtype=torch.float32) + 0.5)
        ys = point_range_m[1] + step_y * (torch.arange(ny, dtype=torch.float32) + 0.5)
    else:
        xs = torch.linspace(point_range_m[0], point_range_m[3], nx, dtype=torch.float32)
        ys = torch.linspace(point_range_m[1], point_range_m[4], ny, dtype=torch.float32)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    per_loc = []
    for cls in cfg.classes:
        for rot in cfg.rotations:
            size = torch.tensor(cls.size_m)
            z = cls.bottom_z_m + cls.size_m[2] / 2
            per_loc.append(torch.cat([torch.tensor([0.0, 0.0, z]), size, torch.tensor([rot])]))
    template = torch.stack(per_loc)  # (K, 7)
    anchors = template[None, None].repeat(ny, nx, 1, 1)
    anchors[..., 0] = xx[..., None]
    anchors[..., 1] = yy[..., None]
    return anchors


def encode(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """ResidualCoder targets ``(..., 7)`` of ``boxes`` against ``anchors``."""
    diag = torch.sqrt(anchors[..., 3] ** 2 + anchors[..., 4] ** 2)
    xyz = torch.stack(
        [
            (boxes[..., 0] - anchors[..., 0]) / diag,
            (boxes[..., 1] - anchors[..., 1]) / diag,
            (boxes[..., 2] - anchors[..., 2]) / anchors[..., 5],
        ],
        -1,
    )
    dims = torch.log(boxes[..., 3:6].clamp_min(1e-3) / anchors[..., 3:6])
    return torch.cat([xyz, dims, (boxes[..., 6] - anchors[..., 6])[..., None]], -1)


def decode(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode`: boxes ``(..., 7)``."""
    diag = torch.sqrt(anchors[..., 3] ** 2 + anchors[..., 4] ** 2)
    x = deltas[..., 0] * diag + anchors[..., 0]
    y = deltas[..., 1] * diag + anchors[..., 1]
    z = deltas[..., 2] * anchors[..., 5] + anchors[..., 2]
    dims = torch.exp(deltas[..., 3:6].clamp(max=5.0)) * anchors[..., 3:6]
    return torch.cat([torch.stack([x, y, z], -1), dims, (deltas[..., 6] + anchors[..., 6])[..., None]], -1)


def nearest_bev_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """OpenPCDet's ``boxes3d_nearest_bev_iou``: axis-aligned BEV IoU after snapping headings to 0 or 90°."""

    def to_aabb(boxes: torch.Tensor) -> torch.Tensor:
        swap = limit_period(boxes[:, 6], 0.5, math.pi).abs() > math.pi / 4
        dx = torch.where(swap, boxes[:, 4], boxes[:, 3])
        dy = torch.where(swap, boxes[:, 3], boxes[:, 4])
        return torch.stack([boxes[:, 0] - dx / 2, boxes[:, 1] - dy / 2, boxes[:, 0] + dx / 2, boxes[:, 1] + dy / 2], 1)

    pa, pb = to_aabb(a), to_aabb(b)
    lt = torch.maximum(pa[:, None, :2], pb[None, :, :2])
    rb = torch.minimum(pa[:, None, 2:], pb[None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (pa[:, 2:] - pa[:, :2]).prod(-1)
    area_b = (pb[:, 2:] - pb[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp_min(1e-9)


def assign_targets(
    anchors: torch.Tensor,
    anchor_class: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_ignored: torch.Tensor,
    cfg: AnchorConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels ``(A,)`` (-1 ignore, 0 background, c ≥ 1 class) and matched GT boxes ``(A, 7)`` of one frame.

    Per class, as OpenPCDet's ``AxisAlignedTargetAssigner``: an anchor is positive when its IoU with a GT of its class
    reaches ``matched_threshold``, or when it is that GT's best anchor; background below ``unmatched_threshold``;
    ignored in between. Anchors that overlap an *ignored* GT (too few points) by at least ``unmatched_threshold`` are
    ignored rather than background.
    """
    labels = torch.zeros(anchors.shape[0], dtype=torch.int64, device=anchors.device)
    matched = torch.zeros_like(anchors)
    for c, cls in enumerate(cfg.classes, start=1):
        idx = torch.nonzero(anchor_class == c, as_tuple=True)[0]
        sel = gt_labels == c
        if not bool(sel.any()):
            continue
        boxes, ignored = gt_boxes[sel], gt_ignored[sel]
        iou = nearest_bev_iou(anchors[idx], boxes)  # (A_c, G_c)
        iou_used = torch.where(ignored[None], torch.full_like(iou, -1.0), iou)
        best_iou, best_gt = iou_used.max(1)
        cls_labels = torch.full((idx.numel(),), -1, dtype=torch.int64, device=anchors.device)
        cls_labels[best_iou < cls.unmatched_threshold] = 0
        pos = best_iou >= cls.matched_threshold
        # Every (non-ignored) GT also takes its best anchor, however low the IoU (as long as it overlaps).
        gt_best_iou, gt_best_anchor = iou_used.max(0)
        takes = (gt_best_iou > 0) & ~ignored
        pos[gt_best_anchor[takes]] = True
        best_gt[gt_best_anchor[takes]] = torch.nonzero(takes)[:, 0]
        cls_labels[pos] = c
        near_ignored = (
            (torch.where(ignored[None], iou, torch.zeros_like(iou)).max(1).values >= cls.unmatched_threshold)
            if bool(ignored.any())
            else torch.zeros_like(pos)
        )
        cls_labels[near_ignored & ~pos] = -1
        labels[idx] = cls_labels
        matched[idx] = boxes[best_gt]
    return labels, matched


def direction_targets(rot_gt: torch.Tensor, dir_offset: float, num_bins: int = 2) -> torch.Tensor:
    """OpenPCDet's direction-classifier bins of GT headings."""
    period = 2 * math.pi / num_bins
    return torch.floor(limit_period(rot_gt - dir_offset, 0.0, 2 * math.pi) / period).long().clamp(0, num_bins - 1)
