"""PointPillars: pillar scatter, shapes, box coder, target assignment, post-processing; doctor checks."""

from __future__ import annotations

import math

import torch

from trainwell.tasks.detection3d.anchors import AnchorConfig, assign_targets, decode, encode
from trainwell.tasks.detection3d.checks import (
    check_head_not_background,
    check_heading_convention,
    check_points_in_boxes,
)
from trainwell.tasks.detection3d.datasets import collate_frames
from trainwell.tasks.detection3d.model import PillarsConfig, PointPillars
from trainwell.tasks.detection3d.scenes import SceneConfig
from trainwell.tasks.detection3d.task import Detection3DDataConfig, Detection3DTask, Detection3DTaskConfig

SMALL = PillarsConfig(
    point_range_m=[0.0, -8.0, -3.0, 16.0, 8.0, 1.0],
    pillar_size_m=0.5,
    pfn_channels=8,
    layer_nums=[1, 1, 1],
    layer_strides=[1, 2, 2],
    num_filters=[8, 16, 16],
    upsample_filters=8,
)


def test_pillars_scatter_to_the_right_cell_and_max_pool() -> None:
    model = PointPillars(SMALL).eval()
    # Two frames; frame 1 has two points in the cell (ix=4, iy=2) at x=2.2 m, y=-6.8 m.
    pts = torch.tensor([[0, 10.1, 3.1, -1.0, 0.5], [1, 2.2, -6.8, -1.0, 0.1], [1, 2.4, -6.7, 0.0, 0.9]])
    canvas = model.pillar_features(pts, batch_size=2)
    assert canvas.shape == (2, 8, 32, 32)
    filled = canvas.abs().sum(1) > 0
    assert filled.sum() <= 2
    cells = {(int(b), int(y), int(x)) for b, y, x in torch.nonzero(filled)}
    assert cells <= {(0, 22, 20), (1, 2, 4)}
    # Max pooling: the pillar's feature is the elementwise max over its points' lifted features.
    assert (canvas >= 0).all()


def test_forward_shapes_and_loss_parts() -> None:
    task = Detection3DTask(
        Detection3DTaskConfig(model=SMALL),
        Detection3DDataConfig(
            train_size=2,
            val_size=1,
            scene=SceneConfig(num_channels=16, azimuth_step_deg=0.5, scene_x_m=(4.0, 15.0), scene_half_width_m=7.0),
        ),
    )
    train, _ = task.build_datasets()
    model = task.build_model()
    batch = collate_frames([train[0], train[1]])
    cls, box, dirs = model.predict_maps(batch["points"], 2)
    num_anchors = (32 // 1) * (32 // 1) * 6
    assert cls.shape == (2, num_anchors, 3) and box.shape == (2, num_anchors, 7) and dirs.shape == (2, num_anchors, 2)
    loss, tb, disp = model(batch)
    assert set(tb) == {"rpn_loss_cls", "rpn_loss_loc", "rpn_loss_dir"}
    assert torch.allclose(loss, sum(tb.values()))
    assert float(disp["num_pos_anchors"]) > 0
    out = task.compute_losses(model, batch)
    assert set(out.losses) == {"cls", "loc", "dir"}
    model.eval()
    dets = model(batch)
    assert len(dets) == 2 and all(d["boxes"].shape[1] == 7 for d in dets)


def test_box_coder_round_trip_and_assignment() -> None:
    anchors = torch.tensor([[5.0, 0, -0.95, 3.9, 1.6, 1.56, 0.0], [5.0, 0, -0.95, 3.9, 1.6, 1.56, math.pi / 2]])
    boxes = torch.tensor([[5.3, 0.2, -0.9, 4.2, 1.7, 1.5, 0.1], [5.1, -0.1, -1.0, 3.5, 1.5, 1.6, 1.4]])
    assert torch.allclose(decode(encode(boxes, anchors), anchors), boxes, atol=1e-5)
    grid = torch.tensor([[x, y, -0.95, 3.9, 1.6, 1.56, r] for x in (5.0, 10.0) for y in (0.0, 5.0) for r in (0, 1.57)])
    cls_of = torch.ones(8, dtype=torch.long)
    gt = torch.tensor([[10.0, 5.0, -0.95, 3.9, 1.6, 1.56, 0.05], [5.0, 0.0, -0.95, 3.9, 1.6, 1.56, 0.0]])
    labels, matched = assign_targets(
        grid, cls_of, gt, torch.tensor([1, 1]), torch.tensor([False, True]), AnchorConfig()
    )
    assert labels.tolist() == [-1, 0, 0, 0, 0, 0, 1, 0]  # GT 1 is ignored (too few points): its anchor is ignored
    assert torch.equal(matched[6], gt[0])


def _batch_with(points: torch.Tensor, boxes: torch.Tensor) -> dict:
    return {
        "batch_size": 1,
        "points": torch.cat([torch.zeros(len(points), 1), points], 1),
        "gt_boxes": boxes[None],
        "gt_labels": torch.ones(1, len(boxes), dtype=torch.long),
        "gt_ignored": torch.zeros(1, len(boxes), dtype=torch.bool),
    }


def _car_points(box: torch.Tensor, n: int = 200) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    local = (torch.rand(n, 3, generator=g) - 0.5) * box[3:6] * 0.95
    c, s = math.cos(box[6]), math.sin(box[6])
    xyz = torch.stack(
        [local[:, 0] * c - local[:, 1] * s + box[0], local[:, 0] * s + local[:, 1] * c + box[1], local[:, 2] + box[2]],
        1,
    )
    return torch.cat([xyz, torch.ones(n, 1)], 1)


def test_doctor_checks_catch_frame_and_heading_mixups() -> None:
    cars = torch.tensor([[10.0 + 8 * i, -5.0 + 3 * i, -0.9, 3.9, 1.6, 1.5, 0.2 * i] for i in range(4)])
    points = torch.cat([_car_points(b) for b in cars])
    good = _batch_with(points, cars)
    assert check_points_in_boxes(good) is None and check_heading_convention(good) is None
    swapped = cars.clone()
    swapped[:, [0, 1]] = swapped[:, [1, 0]]  # x and y mixed up
    assert check_points_in_boxes(_batch_with(points, swapped)).id == "detection3d.boxes_without_points"
    turned = cars.clone()
    turned[:, 6] += math.pi / 2  # e.g. KITTI's rotation_y taken as the LiDAR heading
    assert check_heading_convention(_batch_with(points, turned)).id == "detection3d.heading_convention"


def test_head_only_background_is_reported() -> None:
    model = PointPillars(SMALL)
    batch = _batch_with(_car_points(torch.tensor([5.0, 0, -0.9, 3.9, 1.6, 1.5, 0.0])), torch.zeros(0, 7))
    # A fresh head starts at probability 0.01 everywhere (focal-loss prior): below the 0.1 threshold.
    assert check_head_not_background(model, batch, 0.1).id == "detection3d.head_only_background"
    torch.nn.init.constant_(model.dense_head.conv_cls.bias, 3.0)
    assert check_head_not_background(model, batch, 0.1) is None
