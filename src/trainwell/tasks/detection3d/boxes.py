"""3D box geometry in the LiDAR frame: corners, rotated BEV IoU, 3D IoU, rotated NMS.

Convention (OpenPCDet's): x forward, y left, z up, metres. A box is ``(x, y, z, dx, dy, dz, heading)`` with
``(x, y, z)`` the box *centre* (not the bottom), ``dx`` the length along the heading, ``dy`` the width, ``dz`` the
height, and ``heading`` the yaw in radians, counter-clockwise from +x around +z.

The rotated IoU is exact for convex quadrilaterals and vectorised over all ``N x M`` pairs: the intersection of two
convex polygons is the convex hull of (corners of A inside B) ∪ (corners of B inside A) ∪ (edge-edge crossings);
those candidate points are sorted by angle around their mean and the shoelace formula gives the area. Computed in
float64, only for pairs whose circumscribed circles overlap, in chunks so that memory stays bounded.
"""

from __future__ import annotations

import torch

BOX_DIM = 7
"""Columns of a box: x, y, z, dx, dy, dz, heading."""

_EPS = 1e-9


def check_boxes(boxes: torch.Tensor, name: str = "boxes") -> torch.Tensor:
    """Validate a ``(N, 7)`` box tensor and return it; raise a ValueError that names ``name`` otherwise."""
    if boxes.ndim != 2 or boxes.shape[1] < BOX_DIM:
        raise ValueError(f"{name} must have shape (N, 7) (x, y, z, dx, dy, dz, heading); got {tuple(boxes.shape)}.")
    return boxes[:, :BOX_DIM]


def limit_period(angle: torch.Tensor, offset: float = 0.5, period: float = 2 * torch.pi) -> torch.Tensor:
    """Wrap ``angle`` into ``[-offset * period, (1 - offset) * period)`` (OpenPCDet's ``limit_period``)."""
    return angle - torch.floor(angle / period + offset) * period


def bev_corners(boxes: torch.Tensor) -> torch.Tensor:
    """BEV corners ``(N, 4, 2)`` of ``(N, 7)`` boxes, counter-clockwise starting at the front-left corner."""
    boxes = check_boxes(boxes)
    half = boxes[:, 3:5] / 2
    # Unit square corners in counter-clockwise order: front-left, rear-left, rear-right, front-right.
    signs = boxes.new_tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    local = signs[None] * half[:, None, :]
    cos, sin = torch.cos(boxes[:, 6])[:, None], torch.sin(boxes[:, 6])[:, None]
    x = local[..., 0] * cos - local[..., 1] * sin + boxes[:, None, 0]
    y = local[..., 0] * sin + local[..., 1] * cos + boxes[:, None, 1]
    return torch.stack([x, y], dim=-1)


def corners_3d(boxes: torch.Tensor) -> torch.Tensor:
    """3D corners ``(N, 8, 3)``: the 4 BEV corners at the bottom (``z - dz/2``), then the same 4 at the top."""
    boxes = check_boxes(boxes)
    bev = bev_corners(boxes)
    bottom = (boxes[:, 2] - boxes[:, 5] / 2)[:, None, None].expand(-1, 4, 1)
    top = (boxes[:, 2] + boxes[:, 5] / 2)[:, None, None].expand(-1, 4, 1)
    return torch.cat([torch.cat([bev, bottom], -1), torch.cat([bev, top], -1)], dim=1)


def points_in_boxes(points_xyz: torch.Tensor, boxes: torch.Tensor, margin_m: float = 0.0) -> torch.Tensor:
    """``(P, N)`` bool: point ``p`` lies inside box ``n`` (grown by ``margin_m`` on every side)."""
    boxes = check_boxes(boxes)
    rel = points_xyz[:, None, :3] - boxes[None, :, :3]
    cos, sin = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
    # Rotate into each box's frame (by -heading).
    local_x = rel[..., 0] * cos + rel[..., 1] * sin
    local_y = -rel[..., 0] * sin + rel[..., 1] * cos
    half = boxes[None, :, 3:6] / 2 + margin_m
    return (local_x.abs() <= half[..., 0]) & (local_y.abs() <= half[..., 1]) & (rel[..., 2].abs() <= half[..., 2])


def _cross2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _inside_convex(points: torch.Tensor, poly: torch.Tensor) -> torch.Tensor:
    """``points (..., P, 2)`` inside (or on) the counter-clockwise polygon ``poly (..., 4, 2)``: ``(..., P)``."""
    edges = torch.roll(poly, -1, dims=-2) - poly  # (..., 4, 2)
    rel = points[..., :, None, :] - poly[..., None, :, :]  # (..., P, 4, 2)
    side = _cross2(edges[..., None, :, :], rel)
    scale = edges.norm(dim=-1)[..., None, :].clamp_min(_EPS)
    # A small tolerance (relative to the edge length) keeps corners on a shared edge.
    return (side / scale >= -1e-7).all(dim=-1)


def _edge_crossings(pa: torch.Tensor, pb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Crossing points of every edge of ``pa (..., 4, 2)`` with every edge of ``pb``: ``(..., 16, 2)`` and a mask."""
    a0 = pa[..., :, None, :]
    a1 = torch.roll(pa, -1, dims=-2)[..., :, None, :]
    b0 = pb[..., None, :, :]
    b1 = torch.roll(pb, -1, dims=-2)[..., None, :, :]
    da, db = a1 - a0, b1 - b0
    denom = _cross2(da, db)
    diff = b0 - a0
    parallel = denom.abs() < _EPS
    safe = torch.where(parallel, torch.ones_like(denom), denom)
    t = _cross2(diff, db) / safe
    u = _cross2(diff, da) / safe
    valid = ~parallel & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
    points = a0 + t[..., None] * da
    return points.flatten(-3, -2), valid.flatten(-2)


def _polygon_area(points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Area of the convex hull of the valid ``points (..., K, 2)`` (they are the vertices of a convex polygon)."""
    count = valid.sum(-1, keepdim=True).clamp_min(1)
    center = (points * valid[..., None]).sum(-2) / count
    rel = points - center[..., None, :]
    angle = torch.atan2(rel[..., 1], rel[..., 0])
    # Invalid points sort to the end and are then replaced by the last valid one (zero-area contributions).
    angle = torch.where(valid, angle, torch.full_like(angle, 10.0))
    order = torch.argsort(angle, dim=-1)
    rel = torch.gather(rel, -2, order[..., None].expand_as(rel))
    ordered_valid = torch.gather(valid, -1, order)
    last = (count - 1).clamp_min(0)
    last_point = torch.gather(rel, -2, last[..., None].expand(*last.shape, 2))
    rel = torch.where(ordered_valid[..., None], rel, last_point)
    nxt = torch.roll(rel, -1, dims=-2)
    area = 0.5 * _cross2(rel, nxt).sum(-1)
    return torch.where(valid.sum(-1) >= 3, area.abs(), torch.zeros_like(area))


def _maybe_prefilter(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` bool: the circumscribed circles overlap (pairs that cannot overlap are skipped cheaply)."""
    ra = boxes_a[:, 3:5].double().norm(dim=-1) / 2
    rb = boxes_b[:, 3:5].double().norm(dim=-1) / 2
    dist = torch.cdist(boxes_a[:, :2].double(), boxes_b[:, :2].double())
    return dist < ra[:, None] + rb[None, :]


def bev_intersection_area(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Overlap area in BEV (m², float64) of every pair ``(N, 7), (M, 7) -> (N, M)``.

    Only pairs whose circumscribed circles overlap are computed (in chunks, so memory stays bounded)."""
    boxes_a, boxes_b = check_boxes(boxes_a, "boxes_a"), check_boxes(boxes_b, "boxes_b")
    out = torch.zeros(boxes_a.shape[0], boxes_b.shape[0], dtype=torch.float64, device=boxes_a.device)
    if out.numel() == 0:
        return out
    ia, ib = torch.nonzero(_maybe_prefilter(boxes_a, boxes_b), as_tuple=True)
    for start in range(0, ia.numel(), 16384):
        sa, sb = ia[start : start + 16384], ib[start : start + 16384]
        pa = bev_corners(boxes_a[sa].double())
        pb = bev_corners(boxes_b[sb].double())
        crossings, crossing_valid = _edge_crossings(pa, pb)
        points = torch.cat([pa, pb, crossings], dim=-2)
        valid = torch.cat([_inside_convex(pa, pb), _inside_convex(pb, pa), crossing_valid], dim=-1)
        out[sa, sb] = _polygon_area(points, valid)
    return out


def iou_bev(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Rotated IoU in bird's-eye view of every pair: ``(N, 7), (M, 7) -> (N, M)`` float64."""
    inter = bev_intersection_area(boxes_a, boxes_b)
    area_a = (boxes_a[:, 3] * boxes_a[:, 4]).double()
    area_b = (boxes_b[:, 3] * boxes_b[:, 4]).double()
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp_min(_EPS)


def iou_3d(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """3D IoU of every pair (BEV overlap × height overlap over the union volume): ``(N, M)`` float64."""
    inter_bev = bev_intersection_area(boxes_a, boxes_b)
    a, b = boxes_a.double(), boxes_b.double()
    top = torch.minimum((a[:, 2] + a[:, 5] / 2)[:, None], (b[:, 2] + b[:, 5] / 2)[None, :])
    bottom = torch.maximum((a[:, 2] - a[:, 5] / 2)[:, None], (b[:, 2] - b[:, 5] / 2)[None, :])
    inter = inter_bev * (top - bottom).clamp_min(0)
    vol_a = a[:, 3] * a[:, 4] * a[:, 5]
    vol_b = b[:, 3] * b[:, 4] * b[:, 5]
    return inter / (vol_a[:, None] + vol_b[None, :] - inter).clamp_min(_EPS)


def nms_rotated(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, pre_max: int = 1000, post_max: int = 100
) -> torch.Tensor:
    """Greedy NMS with rotated BEV IoU (OpenPCDet's ``nms_gpu``): indices ``(K,)`` into ``boxes``, best first.

    Keeps the ``pre_max`` best-scoring boxes, suppresses every box whose BEV IoU with a kept, higher-scoring box
    exceeds ``iou_threshold``, and returns at most ``post_max`` indices.
    """
    boxes = check_boxes(boxes)
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)[:pre_max]
    iou = iou_bev(boxes[order], boxes[order]).cpu()
    suppress = (iou > iou_threshold).numpy()
    keep: list[int] = []
    removed = [False] * order.numel()
    # The greedy pass is inherently sequential; it runs over at most pre_max boxes on the host.
    for i in range(order.numel()):
        if removed[i]:
            continue
        keep.append(i)
        if len(keep) >= post_max:
            break
        for j in suppress[i].nonzero()[0]:
            removed[j] = True
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]
