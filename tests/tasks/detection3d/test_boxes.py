"""Rotated IoU and NMS against an independent Sutherland–Hodgman clipping reference (plain Python floats)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainwell.tasks.detection3d.boxes import bev_corners, corners_3d, iou_3d, iou_bev, nms_rotated, points_in_boxes


def _rect(box: list[float]) -> list[tuple[float, float]]:
    """Counter-clockwise BEV rectangle of a box, from the heading's unit vectors (not the code's corner table)."""
    x, y, _, dx, dy, _, h = box
    fx, fy = math.cos(h), math.sin(h)
    lx, ly = -fy, fx
    out = []
    for a, b in ((0.5, 0.5), (-0.5, 0.5), (-0.5, -0.5), (0.5, -0.5)):
        out.append((x + a * dx * fx + b * dy * lx, y + a * dx * fy + b * dy * ly))
    return out


def _side(a: tuple[float, float], b: tuple[float, float], p: tuple[float, float]) -> float:
    """Twice the signed area of (a, b, p): positive when p is left of a->b."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def _clip(subject: list[tuple[float, float]], clipper: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sutherland–Hodgman: clip ``subject`` by each half-plane of the convex counter-clockwise ``clipper``."""
    output = subject
    for i in range(len(clipper)):
        a, b = clipper[i], clipper[(i + 1) % len(clipper)]
        inp, output = output, []
        for j in range(len(inp)):
            cur, prev = inp[j], inp[j - 1]
            d_cur, d_prev = _side(a, b, cur), _side(a, b, prev)
            if (d_cur >= -1e-12) != (d_prev >= -1e-12):
                t = d_prev / (d_prev - d_cur)  # where segment prev-cur crosses the clipper's line
                output.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if d_cur >= -1e-12:
                output.append(cur)
        if not output:
            return []
    return output


def _area(poly: list[tuple[float, float]]) -> float:
    return 0.5 * abs(sum(p[0] * q[1] - q[0] * p[1] for p, q in zip(poly, poly[1:] + poly[:1], strict=True)))


def _ref_ious(a: list[float], b: list[float]) -> tuple[float, float]:
    inter = _area(_clip(_rect(a), _rect(b)))
    bev = inter / (a[3] * a[4] + b[3] * b[4] - inter)
    top, bottom = min(a[2] + a[5] / 2, b[2] + b[5] / 2), max(a[2] - a[5] / 2, b[2] - b[5] / 2)
    inter3 = inter * max(0.0, top - bottom)
    return bev, inter3 / (a[3] * a[4] * a[5] + b[3] * b[4] * b[5] - inter3)


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    centre = rng.uniform(-3, 3, (n, 3))
    dims = rng.uniform(0.5, 4.0, (n, 3))
    heading = rng.uniform(-math.pi, math.pi, (n, 1))
    return np.concatenate([centre, dims, heading], 1)


def test_random_pairs_match_the_clipping_reference() -> None:
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 40), _random_boxes(rng, 30)
    bev = iou_bev(torch.tensor(a), torch.tensor(b)).numpy()
    d3 = iou_3d(torch.tensor(a), torch.tensor(b)).numpy()
    ref = np.array([[_ref_ious(list(x), list(y)) for y in b] for x in a])
    assert (ref[..., 0] > 0.05).sum() > 50  # the sample really exercises overlaps
    np.testing.assert_allclose(bev, ref[..., 0], atol=1e-9)
    np.testing.assert_allclose(d3, ref[..., 1], atol=1e-9)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0, 0, 0, 2, 2, 2, 0], [2, 0, 0, 2, 2, 2, 0]),  # shared edge: touching, zero overlap
        ([0, 0, 0, 2, 2, 2, 0], [1, 0, 0, 2, 2, 2, 0]),  # half overlap, collinear edges
        ([0, 0, 0, 4, 4, 2, 0.3], [0.2, 0.1, 0, 1, 1, 1, 1.1]),  # containment
        ([1, 2, 0, 4, 2, 1.5, 0.7], [1, 2, 0, 4, 2, 1.5, 0.7]),  # identical
        ([1, 2, 0, 4, 2, 1.5, 0.7], [1, 2, 0, 4, 2, 1.5, 0.7 + math.pi]),  # identical footprint, heading flipped
        ([0, 0, 0, 2, 2, 2, 0], [0, 0, 0, 2, 2, 2, math.pi / 4]),  # octagon
        ([0, 0, 0, 2, 1, 2, 0], [0, 0, 5, 2, 1, 2, 0]),  # BEV-identical, no height overlap
    ],
)
def test_special_cases(a: list[float], b: list[float]) -> None:
    ta, tb = torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)
    bev = float(iou_bev(ta, tb)[0, 0])
    d3 = float(iou_3d(ta, tb)[0, 0])
    ref_bev, ref_3d = _ref_ious(a, b)
    assert bev == pytest.approx(ref_bev, abs=1e-9)
    assert d3 == pytest.approx(ref_3d, abs=1e-9)


def test_known_values() -> None:
    # Half overlap of 2x2 squares: 2 / (4 + 4 - 2); two squares rotated by 45° overlap in an octagon.
    half = iou_bev(torch.tensor([[0.0, 0, 0, 2, 2, 2, 0]]), torch.tensor([[1.0, 0, 0, 2, 2, 2, 0]]))
    assert float(half) == pytest.approx(1 / 3)
    octagon_area = 8 * (math.sqrt(2) - 1)  # side 2 square and its 45° rotation
    rot = iou_bev(torch.tensor([[0.0, 0, 0, 2, 2, 2, 0]]), torch.tensor([[0.0, 0, 0, 2, 2, 2, math.pi / 4]]))
    assert float(rot) == pytest.approx(octagon_area / (8 - octagon_area))
    empty = iou_bev(torch.zeros(0, 7), torch.zeros(3, 7))
    assert empty.shape == (0, 3)


def test_corners_and_points_in_boxes() -> None:
    box = torch.tensor([[1.0, 2.0, 0.5, 4.0, 2.0, 1.0, math.pi / 2]])
    corners = bev_corners(box)[0]
    # Heading +90°: the box's length runs along +y, so its front-left corner is at (x - w/2, y + l/2).
    assert torch.allclose(corners[0], torch.tensor([0.0, 4.0]), atol=1e-6)
    c3 = corners_3d(box)[0]
    assert torch.allclose(c3[:4, 2], torch.zeros(4)) and torch.allclose(c3[4:, 2], torch.ones(4))
    pts = torch.tensor([[1.0, 3.9, 0.5], [1.9, 2.0, 0.5], [2.1, 2.0, 0.5], [1.0, 2.0, 1.1]])
    assert points_in_boxes(pts, box)[:, 0].tolist() == [True, True, False, False]


def test_nms_suppresses_overlaps_and_keeps_separate_boxes() -> None:
    boxes = torch.tensor(
        [
            [0.0, 0, 0, 4, 2, 1.5, 0],
            [0.2, 0.1, 0, 4, 2, 1.5, 0.05],  # overlaps box 0 heavily
            [10.0, 0, 0, 4, 2, 1.5, 0],
            [0.0, 3.0, 0, 4, 2, 1.5, 0],  # next to box 0, no overlap
        ]
    )
    scores = torch.tensor([0.8, 0.9, 0.5, 0.7])
    keep = nms_rotated(boxes, scores, iou_threshold=0.1)
    assert keep.tolist() == [1, 3, 2]
    assert nms_rotated(boxes, scores, 0.1, post_max=2).tolist() == [1, 3]
    # Reference greedy NMS over the clipping IoU.
    order = sorted(range(4), key=lambda i: -float(scores[i]))
    ref: list[int] = []
    for i in order:
        if all(_ref_ious(boxes[i].tolist(), boxes[j].tolist())[0] <= 0.1 for j in ref):
            ref.append(i)
    assert keep.tolist() == ref
