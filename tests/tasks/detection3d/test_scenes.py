"""Synthetic scenes: determinism, points on visible surfaces, density falling with range, difficulty labels."""

from __future__ import annotations

import time

import numpy as np
import torch

from trainwell.tasks.detection3d.boxes import points_in_boxes
from trainwell.tasks.detection3d.scenes import SceneConfig, generate_frame

CFG = SceneConfig(num_channels=24, azimuth_step_deg=0.4)


def test_frames_are_pure_functions_of_seed_split_index() -> None:
    a, b = generate_frame(CFG, 3, "train", 5), generate_frame(CFG, 3, "train", 5)
    np.testing.assert_array_equal(a["points"], b["points"])
    np.testing.assert_array_equal(a["gt_boxes"], b["gt_boxes"])
    assert a["gt_names"] == b["gt_names"]
    for other in (
        generate_frame(CFG, 3, "train", 6),
        generate_frame(CFG, 3, "val", 5),
        generate_frame(CFG, 4, "train", 5),
    ):
        assert other["points"].shape != a["points"].shape or not np.array_equal(other["points"], a["points"])


def _surface_distance(points: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of points (in the box) to the box's nearest face, and whether that face looks at the sensor."""
    rel = points[:, :3] - box[:3]
    c, s = np.cos(box[6]), np.sin(box[6])
    local = np.stack([rel[:, 0] * c + rel[:, 1] * s, -rel[:, 0] * s + rel[:, 1] * c, rel[:, 2]], 1)
    sensor = -box[:3]
    sensor_local = np.array([sensor[0] * c + sensor[1] * s, -sensor[0] * s + sensor[1] * c, sensor[2]])
    gap = box[3:6] / 2 - np.abs(local)  # per axis, distance to the face on the point's side
    axis = gap.argmin(1)
    rows = np.arange(len(points))
    side = np.sign(local[rows, axis])
    # The face on `side` of `axis` is visible when the sensor lies beyond it.
    visible = side * sensor_local[axis] > box[3:6][axis] / 2
    return np.abs(gap[rows, axis]), visible


def test_points_lie_on_visible_faces_or_the_ground() -> None:
    near, visible, total = 0, 0, 0
    for index in range(4):
        f = generate_frame(CFG, 0, "train", index)
        pts, boxes = f["points"], f["gt_boxes"].astype(np.float64)
        inside = points_in_boxes(torch.from_numpy(pts[:, :3]).double(), torch.from_numpy(boxes), margin_m=0.1).numpy()
        for b in range(len(boxes)):
            p = pts[inside[:, b]]
            p = p[p[:, 2] > boxes[b, 2] - boxes[b, 5] / 2 + 0.1]  # leave out ground returns under the box
            dist, vis = _surface_distance(p, boxes[b])
            near += int((dist < 0.1).sum())
            visible += int(vis.sum())
            total += len(p)
        # Points in no labelled box: the ground (within the slope) or clutter.
        free = pts[~inside.any(1)]
        low = free[:, 2] < -1.73 + 0.05 * np.hypot(free[:, 0], free[:, 1]) + 0.2
        assert low.mean() > 0.4  # most of a LiDAR sweep is ground
    assert total > 500
    assert near / total > 0.97  # on a face, within range noise
    assert visible / total > 0.97  # and only on faces that look at the sensor


def test_far_objects_have_fewer_points_and_sparse_ones_are_ignored() -> None:
    dist, counts, occl, ignored = [], [], [], []
    for index in range(12):
        f = generate_frame(CFG, 1, "val", index)
        cars = [i for i, n in enumerate(f["gt_names"]) if n == "Car"]
        dist += list(np.hypot(f["gt_boxes"][cars, 0], f["gt_boxes"][cars, 1]))
        counts += list(f["num_points"][cars])
        occl += list(f["occlusion"])
        ignored += list(f["ignored"])
    dist, counts = np.array(dist), np.array(counts)
    near, far = counts[dist < 15].mean(), counts[dist > 30].mean()
    assert near > 3 * far
    occl_arr, ign = np.array(occl), np.array(ignored)
    assert (occl_arr[ign] == 3).all()
    assert set(occl_arr.tolist()) >= {0, 1}  # visible and partly occluded objects both occur


def test_generation_speed_is_reported() -> None:
    start = time.perf_counter()
    for index in range(5):
        generate_frame(SceneConfig(), 0, "train", index)
    fps = 5 / (time.perf_counter() - start)
    print(f"synthetic frames/s (default scene, 1 thread): {fps:.1f}")
    assert fps > 1.0
