"""KITTI formats on fixtures written here: files round-trip, camera <-> LiDAR boxes agree with KITTI's geometry."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from trainwell.tasks.detection3d import kitti
from trainwell.tasks.detection3d.boxes import corners_3d

# Calibration of a KITTI-like rig: LiDAR -> camera axes, a small extra rotation, and the usual offsets.
TR = np.array(
    [
        [7.533745e-03, -9.999714e-01, -6.166020e-04, -4.069766e-03],
        [1.480249e-02, 7.280733e-04, -9.998902e-01, -7.631618e-02],
        [9.998621e-01, 7.523790e-03, 1.480755e-02, -2.717806e-01],
    ]
)
R0 = np.array(
    [
        [0.9999239, 0.00983776, -0.007445048],
        [-0.009869795, 0.9999421, -0.004278459],
        [0.007402527, 0.004351614, 0.9999631],
    ]
)
P2 = np.array([[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791], [0.0, 0.0, 1.0, 0.002745884]])
LABEL = """Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59
Pedestrian 0.00 1 0.21 423.17 173.67 433.17 224.03 1.60 0.38 0.30 -5.87 1.63 23.11 -0.03
Cyclist 0.32 2 -2.70 0.00 186.00 140.45 322.69 1.76 0.55 1.75 -8.51 1.72 6.86 2.47
DontCare -1 -1 -10.00 503.89 169.71 590.61 190.13 -1.00 -1.00 -1.00 -1000.00 -1000.00 -1000.00 -10.00
"""


def _write_frame(root: Path, frame: str, points: np.ndarray, label: str) -> None:
    for sub in ("velodyne", "label_2", "calib"):
        (root / "training" / sub).mkdir(parents=True, exist_ok=True)
    kitti.write_velodyne(root / "training" / "velodyne" / f"{frame}.bin", points)
    (root / "training" / "label_2" / f"{frame}.txt").write_text(label)
    kitti.write_calib(root / "training" / "calib" / f"{frame}.txt", kitti.Calib(P2, R0, TR))


def test_files_round_trip(tmp_path: Path) -> None:
    pts = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    _write_frame(tmp_path, "000007", pts, LABEL)
    np.testing.assert_array_equal(kitti.read_velodyne(tmp_path / "training" / "velodyne" / "000007.bin"), pts)
    calib = kitti.read_calib(tmp_path / "training" / "calib" / "000007.txt")
    np.testing.assert_allclose(calib.P2, P2, rtol=1e-10)
    objects = kitti.read_label(tmp_path / "training" / "label_2" / "000007.txt")
    assert [o.type for o in objects] == ["Car", "Pedestrian", "Cyclist", "DontCare"]
    assert objects[1].occluded == 1 and objects[2].truncated == pytest.approx(0.32)
    kitti.write_label(tmp_path / "out.txt", objects, decimals=2)
    assert (tmp_path / "out.txt").read_text() == LABEL
    with pytest.raises(ValueError, match=r"000007\.txt:1: expected 15 or 16 columns"):
        (tmp_path / "bad").mkdir()
        bad = tmp_path / "bad" / "000007.txt"
        bad.write_text("Car 0 0\n")
        kitti.read_label(bad)


def _kitti_camera_corners(loc: np.ndarray, hwl: np.ndarray, ry: float) -> np.ndarray:
    """KITTI devkit geometry: x along l, z along w, y from -h (top) to 0 (bottom), rotated about camera y by ry."""
    h, w, l = hwl  # noqa: E741
    xs = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * l / 2
    zs = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
    ys = np.array([0, 0, 0, 0, -h, -h, -h, -h])
    c, s = math.cos(ry), math.sin(ry)
    return np.stack([c * xs + s * zs + loc[0], ys + loc[1], -s * xs + c * zs + loc[2]], 1)


def test_camera_lidar_conversion_matches_kitti_geometry_and_round_trips() -> None:
    calib = kitti.Calib(P2, R0, TR)
    rows = [line.split() for line in LABEL.splitlines()[:3]]
    loc = np.array([[float(v) for v in r[11:14]] for r in rows])
    hwl = np.array([[float(v) for v in r[8:11]] for r in rows])
    ry = np.array([float(r[14]) for r in rows])
    boxes = kitti.camera_to_lidar_boxes(loc, hwl, ry, calib)
    for i in range(3):
        cam_corners = _kitti_camera_corners(loc[i], hwl[i], ry[i])
        expected = calib.rect_to_lidar(cam_corners)
        ours = corners_3d(torch.from_numpy(boxes[i : i + 1]))[0].numpy()
        # Same corner sets (order differs). OpenPCDet's conversion keeps only the yaw, -(ry + π/2), and ignores the
        # ~0.5-1° by which this rig's LiDAR axes are tilted against the camera's: a few centimetres at the corners.
        d = np.linalg.norm(expected[:, None] - ours[None], axis=-1).min(1)
        assert d.max() < 0.05
        # With axes that agree exactly (the synthetic rig), the corners agree exactly.
        exact = kitti.synthetic_calib()
        box = kitti.camera_to_lidar_boxes(loc[i : i + 1], hwl[i : i + 1], ry[i : i + 1], exact)
        ours = corners_3d(torch.from_numpy(box))[0].numpy()
        expected = exact.rect_to_lidar(cam_corners)
        assert np.linalg.norm(expected[:, None] - ours[None], axis=-1).min(1).max() < 1e-9
    back_loc, back_hwl, back_ry = kitti.lidar_to_camera_boxes(boxes, calib)
    np.testing.assert_allclose(back_loc, loc, atol=1e-9)
    np.testing.assert_allclose(back_hwl, hwl, atol=1e-12)
    np.testing.assert_allclose(back_ry, ry, atol=1e-12)
    # Written back through the label format: the same text to the printed precision.
    text = "".join(
        kitti.format_object(
            kitti.KittiObject(
                r[0],
                float(r[1]),
                int(r[2]),
                float(r[3]),
                [float(v) for v in r[4:8]],
                list(back_hwl[i]),
                list(back_loc[i]),
                float(back_ry[i]),
            ),
            2,
        )
        + "\n"
        for i, r in enumerate(rows)
    )
    assert text == "".join(line + "\n" for line in LABEL.splitlines()[:3])


def _openpcdet_image_boxes(boxes_lidar: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """OpenPCDet's 2D boxes of predictions, re-expressed: ``boxes3d_lidar_to_kitti_camera`` (bottom centre through
    ``lidar_to_rect``, ``r = -heading - π/2``), ``boxes3d_to_corners3d_kitti_camera`` (corners @ its ``R_list``),
    ``Calibration.rect_to_img`` (``P2``, then divided by the rectified z) and the clip to ``image_shape``."""
    xyz = boxes_lidar[:, :3].copy()
    l, w, h = boxes_lidar[:, 3], boxes_lidar[:, 4], boxes_lidar[:, 5]  # noqa: E741
    xyz[:, 2] -= h / 2
    hom = np.concatenate([xyz, np.ones((len(xyz), 1))], 1)
    loc = hom @ (np.vstack([TR, [0, 0, 0, 1]]).T[:, :3] @ R0.T)
    r = -boxes_lidar[:, 6] - np.pi / 2
    x_c = np.array([l / 2, l / 2, -l / 2, -l / 2, l / 2, l / 2, -l / 2, -l / 2]).T
    z_c = np.array([w / 2, -w / 2, -w / 2, w / 2, w / 2, -w / 2, -w / 2, w / 2]).T
    y_c = np.zeros((len(r), 8))
    y_c[:, 4:8] = -h[:, None]
    zeros, ones = np.zeros(len(r)), np.ones(len(r))
    rot = np.transpose(np.array([[np.cos(r), zeros, -np.sin(r)], [zeros, ones, zeros], [np.sin(r), zeros, np.cos(r)]]))
    rot = np.transpose(rot, (0, 2, 1))  # (N, 3, 3) as np.transpose(rot_list, (2, 0, 1))
    corners = np.matmul(np.stack([x_c, y_c, z_c], -1), rot) + loc[:, None]
    pts = corners.reshape(-1, 3)
    img = (np.concatenate([pts, np.ones((len(pts), 1))], 1) @ P2.T)[:, :2] / pts[:, 2:3]
    img = img.reshape(-1, 8, 2)
    out = np.concatenate([img.min(1), img.max(1)], 1)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, image_hw[1] - 1)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, image_hw[0] - 1)
    return out


def test_detections_2d_boxes_are_openpcdets_projection_of_the_camera_box() -> None:
    calib = kitti.Calib(P2, R0, TR)
    rows = [line.split() for line in LABEL.splitlines()[:3]]
    labelled = kitti.camera_to_lidar_boxes(
        np.array([[float(v) for v in r[11:14]] for r in rows]),
        np.array([[float(v) for v in r[8:11]] for r in rows]),
        np.array([float(r[14]) for r in rows]),
        calib,
    )
    rng = np.random.default_rng(3)  # boxes ahead of the camera, some reaching past the image's edges
    random = np.concatenate(
        [rng.uniform([3, -25, -2], [60, 25, 0], (40, 3)), rng.uniform([0.5, 0.5, 1], [5, 2.5, 3], (40, 3))], 1
    )
    boxes = np.concatenate([labelled, np.c_[random, rng.uniform(-4, 4, 40)]])
    ours = kitti.image_boxes(boxes, calib)
    want = _openpcdet_image_boxes(boxes, (375, 1242))
    np.testing.assert_allclose(ours, want, atol=1e-8, rtol=0)
    inside = (want[:, 0] > 0) & (want[:, 2] < 1241) & (want[:, 1] > 0) & (want[:, 3] < 374)
    assert ((want[:, 0] == 0) | (want[:, 2] == 1241)).any() and inside.sum() >= 10  # clipped boxes and whole ones
    # Not a vacuous check: projecting the LiDAR box's own corners (the tilted axes) gives other boxes on this rig.
    pts = calib.lidar_to_rect(corners_3d(torch.from_numpy(boxes)).numpy().reshape(-1, 3))
    hom = np.concatenate([pts, np.ones((len(pts), 1))], 1) @ P2.T
    uv = (hom[:, :2] / hom[:, 2:3]).reshape(-1, 8, 2)
    lidar_corner_boxes = np.concatenate([uv.min(1), uv.max(1)], 1)
    assert np.abs(lidar_corner_boxes - want)[inside].max() > 0.5
    # The exported result lines carry these boxes.
    objects = kitti.result_objects(boxes, np.linspace(0.9, 0.1, len(boxes)), ["Car"] * len(boxes), calib)
    np.testing.assert_allclose([o.bbox for o in objects], want, atol=1e-8, rtol=0)


def test_a_frames_own_image_size_sets_its_fov_and_its_2d_clip(tmp_path: Path) -> None:
    from PIL import Image

    from trainwell.engine.task import DataError

    calib = kitti.Calib(P2, R0, TR)
    # Two points 20 m ahead: one seen at u = 600 px, one at u = 1230 px (inside 1242 px, outside 1224 px).
    u = np.array([600.0, 1230.0])
    rect = np.stack([(u * 20.0 - P2[0, 2] * 20.0 - P2[0, 3]) / P2[0, 0], np.full(2, 0.5), np.full(2, 20.0)], 1)
    points = np.c_[calib.rect_to_lidar(rect), np.zeros(2)].astype(np.float32)
    _write_frame(tmp_path, "000000", points, LABEL)
    assert len(kitti.load_kitti_frame(tmp_path, "000000")["points"]) == 2  # no image: KITTI's usual 1242 × 375
    (tmp_path / "training" / "image_2").mkdir()
    Image.new("RGB", (1224, 370)).save(tmp_path / "training" / "image_2" / "000000.png")  # a narrower KITTI frame
    frame = kitti.load_kitti_frame(tmp_path, "000000")
    assert frame["calib"].image_size_px == (1224, 370)
    np.testing.assert_allclose(frame["points"], points[:1])  # OpenPCDet's get_fov_flag with this image's shape
    # A box reaching past the right edge is clipped at 1223 px, as OpenPCDet clips to image_shape[1] - 1.
    box = kitti.camera_to_lidar_boxes(np.array([[16.0, 1.6, 20.0]]), np.array([[1.5, 1.6, 3.9]]), np.zeros(1), calib)
    (line,) = kitti.result_objects(box, np.ones(1), ["Car"], frame["calib"])
    np.testing.assert_allclose(line.bbox, _openpcdet_image_boxes(box, (370, 1224))[0], atol=1e-8, rtol=0)
    assert line.bbox[2] == 1223.0 and kitti.image_boxes(box, calib)[0, 2] > 1223.0
    (tmp_path / "training" / "image_2" / "000000.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"image_2/000000\.png' is not a PNG"):
        kitti.load_kitti_frame(tmp_path, "000000")


def test_a_kitti_directory_trains_the_same_model(tmp_path: Path) -> None:
    from trainwell.tasks.detection3d.datasets import collate_frames
    from trainwell.tasks.detection3d.scenes import SceneConfig, generate_frame
    from trainwell.tasks.detection3d.task import Detection3DDataConfig, Detection3DTask, Detection3DTaskConfig

    calib = kitti.Calib(P2, R0, TR)
    scene = SceneConfig(num_channels=16, azimuth_step_deg=0.5)
    frames = [generate_frame(scene, 0, "train", i) for i in range(3)]
    for i, f in enumerate(frames):
        objs = kitti.result_objects(f["gt_boxes"].astype(np.float64), np.ones(len(f["gt_names"])), f["gt_names"], calib)
        for o, occ, trunc in zip(objs, f["occlusion"], f["truncation"], strict=True):
            o.score, o.occluded, o.truncated = None, int(occ), float(trunc)
        _write_frame(tmp_path, f"{i:06d}", f["points"], "".join(kitti.format_object(o) + "\n" for o in objs))
    (tmp_path / "ImageSets").mkdir()
    (tmp_path / "ImageSets" / "train.txt").write_text("000000\n000001\n")
    (tmp_path / "ImageSets" / "val.txt").write_text("000002\n")
    task = Detection3DTask(Detection3DTaskConfig(), Detection3DDataConfig(root=str(tmp_path)))
    train, val = task.build_datasets()
    assert len(train) == 2 and len(val) == 1
    # The boxes read back from the files are the generated ones (to the 4 printed decimals of the camera frame).
    raw = val.raw(0)
    assert raw["gt_names"] == frames[2]["gt_names"]
    np.testing.assert_allclose(raw["gt_boxes"][:, :6], frames[2]["gt_boxes"][:, :6], atol=2e-3)
    model = task.build_model()
    out = task.compute_losses(model, collate_frames([train[0], train[1]]))
    total = sum(out.losses.values())
    assert torch.isfinite(total.detach()) and float(total.detach()) > 0
    total.backward()


def test_a_kitti_frame_is_scored_against_its_whole_label_file(tmp_path: Path) -> None:
    from trainwell.tasks.detection3d.task import Detection3DDataConfig, Detection3DTask, Detection3DTaskConfig

    pts = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    _write_frame(tmp_path, "000000", pts, LABEL)
    (tmp_path / "ImageSets").mkdir()
    for split in ("train", "val"):
        (tmp_path / "ImageSets" / f"{split}.txt").write_text("000000\n")
    # A point range that holds none of the labelled objects: they are still scored (as the devkit does).
    task = Detection3DTask(Detection3DTaskConfig(), Detection3DDataConfig(root=str(tmp_path)))
    task.cfg.model.point_range_m = [0.0, -5.0, -3.0, 5.0, 5.0, 1.0]
    task.build_datasets()
    gt = task.build_evaluator().ground_truth(0)
    objects = kitti.read_label(tmp_path / "training" / "label_2" / "000000.txt")
    assert list(gt.names) == ["Car", "Pedestrian", "Cyclist", "DontCare"]
    np.testing.assert_array_equal(gt.bbox, [o.bbox for o in objects])  # the label file's 2D boxes and alphas
    np.testing.assert_array_equal(gt.alpha, [o.alpha for o in objects])
    np.testing.assert_array_equal(gt.occlusion, [0, 1, 2, -1])
    # Boxes are compared in the rectified camera frame: a detection given in the LiDAR frame lands on its label there.
    raw = task.val_set.raw(0)
    det = kitti.frame_detections(
        kitti.result_objects(raw["gt_boxes"][:3].astype(np.float64), np.ones(3), raw["gt_names"][:3], raw["calib"])
    )
    np.testing.assert_allclose(det.boxes, gt.boxes[:3], atol=1e-4)
    with_option = Detection3DTask(Detection3DTaskConfig(eval_gt_in_range_only=True), task.data_cfg)
    with_option.cfg.model.point_range_m = task.cfg.model.point_range_m
    with_option.build_datasets()
    assert len(with_option.build_evaluator().ground_truth(0).names) == 0
