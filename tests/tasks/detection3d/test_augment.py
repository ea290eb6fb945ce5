"""Augmentation: points inside boxes stay inside, draws are a pure function of (seed, epoch, index), on/off by epoch."""

from __future__ import annotations

import numpy as np
import torch

from trainwell.tasks.detection3d.augment import AugmentConfig, augment_frame, augment_rng
from trainwell.tasks.detection3d.boxes import points_in_boxes
from trainwell.tasks.detection3d.datasets import collate_frames, frame_to_sample
from trainwell.tasks.detection3d.scenes import SceneConfig
from trainwell.tasks.detection3d.task import Detection3DDataConfig, Detection3DTask, Detection3DTaskConfig


def _inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    return points_in_boxes(torch.from_numpy(points[:, :3]).double(), torch.from_numpy(boxes).double()).numpy()


def test_points_inside_boxes_stay_inside_and_distances_scale() -> None:
    rng = np.random.default_rng(0)
    boxes = np.array([[10.0, 2.0, -1.0, 4.0, 1.8, 1.5, 0.3], [20.0, -5.0, -0.8, 0.8, 0.6, 1.7, -2.0]])
    # Points strictly inside each box (sampled in the box frame), plus points outside.
    local = rng.uniform(-0.45, 0.45, (200, 3))
    pts = []
    for b in boxes:
        p = local * b[3:6]
        c, s = np.cos(b[6]), np.sin(b[6])
        pts.append(np.stack([p[:, 0] * c - p[:, 1] * s + b[0], p[:, 0] * s + p[:, 1] * c + b[1], p[:, 2] + b[2]], 1))
    pts.append(rng.uniform([0, -30, -2], [40, 30, 1], (300, 3)))
    points = np.concatenate([np.concatenate(pts), rng.uniform(0, 1, (700, 1))], 1)
    before = _inside(points, boxes)
    for epoch in range(5):
        cfg = AugmentConfig(rotation_deg=180.0, scale_range=(0.8, 1.2))
        new_pts, new_boxes = augment_frame(points, boxes, cfg, augment_rng(0, epoch, 3))
        np.testing.assert_array_equal(_inside(new_pts, new_boxes), before)
        # A similarity transform about the sensor: all pairwise distances scale by one factor.
        factor = np.linalg.norm(new_pts[1, :3] - new_pts[0, :3]) / np.linalg.norm(points[1, :3] - points[0, :3])
        d0 = np.linalg.norm(points[:50, None, :3] - points[None, :50, :3], axis=-1)
        d1 = np.linalg.norm(new_pts[:50, None, :3] - new_pts[None, :50, :3], axis=-1)
        np.testing.assert_allclose(d1, d0 * factor, atol=1e-9)
        np.testing.assert_array_equal(new_pts[:, 3], points[:, 3])  # intensity untouched


def test_draws_are_a_pure_function_of_seed_epoch_index() -> None:
    a = augment_rng(1, 2, 3).random(4)
    np.testing.assert_array_equal(a, augment_rng(1, 2, 3).random(4))
    assert not np.array_equal(a, augment_rng(1, 3, 3).random(4))
    assert not np.array_equal(a, augment_rng(1, 2, 4).random(4))


def test_epoch_reaches_the_dataset_and_augmentation_switches_off() -> None:
    data = Detection3DDataConfig(
        train_size=4,
        val_size=2,
        scene=SceneConfig(num_channels=8, azimuth_step_deg=1.0),
        augment=AugmentConfig(disable_from_epoch=2),
    )
    task = Detection3DTask(Detection3DTaskConfig(), data)
    train, _ = task.build_datasets()
    task.on_epoch_start(0)
    e0 = train[1]["gt_boxes"]
    task.on_epoch_start(1)
    e1 = train[1]["gt_boxes"]
    task.on_epoch_start(0)
    assert torch.equal(train[1]["gt_boxes"], e0)  # the same (seed, epoch, index) -> the same frame
    assert not torch.equal(e0, e1)
    task.on_epoch_start(2)  # DisableAugmentationHook: the raw frame from now on
    plain = frame_to_sample(train.raw(1), train.point_range_m)
    assert torch.equal(train[1]["gt_boxes"], plain["gt_boxes"])
    assert torch.equal(train[1]["points"], plain["points"])


def test_collate_keeps_frames_ragged() -> None:
    data = Detection3DDataConfig(train_size=3, val_size=1, scene=SceneConfig(num_channels=8, azimuth_step_deg=1.0))
    train, _ = Detection3DTask(Detection3DTaskConfig(), data).build_datasets()
    samples = [train[i] for i in range(3)]
    batch = collate_frames(samples)
    counts = [s["points"].shape[0] for s in samples]
    assert batch["points"].shape == (sum(counts), 5)
    assert torch.bincount(batch["points"][:, 0].long()).tolist() == counts
    max_g = max(s["gt_boxes"].shape[0] for s in samples)
    assert batch["gt_boxes"].shape == (3, max_g, 7)
    for b, s in enumerate(samples):
        g = s["gt_boxes"].shape[0]
        assert torch.equal(batch["gt_boxes"][b, :g], s["gt_boxes"])
        assert (batch["gt_labels"][b, g:] == -1).all()


def test_ground_truth_sampling_pastes_donor_objects_without_collisions() -> None:
    from trainwell.tasks.detection3d.augment import GtSamplingConfig, sample_ground_truth
    from trainwell.tasks.detection3d.boxes import iou_bev
    from trainwell.tasks.detection3d.scenes import generate_frame

    scene = SceneConfig(num_channels=16, azimuth_step_deg=0.5)
    frames = [generate_frame(scene, 0, "train", i) for i in range(6)]
    cfg = GtSamplingConfig(enabled=True, sample_groups={"Car": 12, "Pedestrian": 6, "Cyclist": 6})
    out = sample_ground_truth(frames[0], 0, frames.__getitem__, 6, cfg, augment_rng(0, 0, 0, stream=1))
    again = sample_ground_truth(frames[0], 0, frames.__getitem__, 6, cfg, augment_rng(0, 0, 0, stream=1))
    np.testing.assert_array_equal(out["points"], again["points"])  # a pure function of its generator
    n0 = len(frames[0]["gt_names"])
    added = out["gt_boxes"][n0:].astype(np.float64)
    assert len(added) > 0 and out["gt_names"].count("Cyclist") >= frames[0]["gt_names"].count("Cyclist")
    assert all(len(out[k]) == len(out["gt_names"]) for k in ("num_points", "occlusion", "height_px", "ignored"))
    # No pasted box overlaps another box; each holds exactly its donor's points (the scene's were removed there).
    iou = iou_bev(torch.from_numpy(out["gt_boxes"].astype(np.float64)), torch.from_numpy(added)).numpy()
    iou[n0 + np.arange(len(added)), np.arange(len(added))] = 0
    assert iou.max() == 0
    inside = _inside(out["points"], added)
    donor_counts = []
    for box in added:
        src = next(f for f in frames[1:] if any(np.array_equal(b, box.astype(np.float32)) for b in f["gt_boxes"]))
        donor_counts.append(int(_inside(src["points"], box[None])[:, 0].sum()))
    assert inside.sum(0).tolist() == donor_counts
