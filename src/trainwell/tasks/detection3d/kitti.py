"""KITTI object-detection formats: ``velodyne/*.bin``, ``label_2/*.txt``, ``calib/*.txt``, and the camera ↔ LiDAR
box conversions (OpenPCDet's ``boxes3d_kitti_camera_to_lidar`` and ``boxes3d_lidar_to_kitti_camera``).

KITTI's label location is the *bottom centre* of the box in rectified camera coordinates (x right, y down,
z forward), its dimensions are written ``h w l`` and ``rotation_y`` turns about the camera's y axis. In the LiDAR
frame (x forward, y left, z up) a box is ``(x, y, z, dx=l, dy=w, dz=h, heading)`` with z at the centre, and
``heading = -(rotation_y + π/2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainwell.engine.task import DataError, MissingDataError
from trainwell.tasks.detection3d.ap import FrameDetections, FrameLabels
from trainwell.tasks.detection3d.boxes import limit_period, points_in_boxes
from trainwell.tasks.detection3d.scenes import CX_PX, CY_PX, FOCAL_PX

POINT_BYTES = 16
"""Bytes of one KITTI LiDAR point (4 × float32)."""

IMAGE_SIZE_PX = (1242, 375)
"""KITTI's usual image width and height: the image size of a frame without ``image_2/<frame>.png``."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_velodyne(path: Path) -> np.ndarray:
    """A KITTI point cloud: float32 ``(N, 4)`` x, y, z, reflectance (LiDAR frame).

    Raises:
        DataError: the file's size is not a whole number of 16-byte points (a truncated copy or another format);
            ``np.fromfile`` alone would drop the stray bytes and shift nothing, or read half a point as a whole one.
    """
    size_bytes = path.stat().st_size
    if size_bytes % POINT_BYTES:
        raise DataError(
            f"Velodyne file '{path}' is {size_bytes} bytes, not a multiple of {POINT_BYTES} (one point is 4 float32: "
            f"x, y, z, reflectance): it is truncated or not a KITTI point cloud. Copy it again from the dataset."
        )
    return np.fromfile(path, dtype=np.float32).reshape(-1, 4)


def write_velodyne(path: Path, points: np.ndarray) -> None:
    """Write ``(N, 4)`` points as KITTI's float32 ``.bin``."""
    np.ascontiguousarray(points[:, :4], dtype=np.float32).tofile(path)


@dataclass
class Calib:
    """A frame's calibration: ``P2 (3, 4)``, ``R0_rect (3, 3)``, ``Tr_velo_to_cam (3, 4)``, and the camera image's
    ``(width, height)`` in pixels (OpenPCDet's ``image_shape``: the FOV filter and the 2D boxes' clip use it)."""

    P2: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    image_size_px: tuple[int, int] = IMAGE_SIZE_PX

    def lidar_to_rect(self, xyz: np.ndarray) -> np.ndarray:
        """LiDAR points ``(N, 3)`` to rectified camera coordinates."""
        hom = np.concatenate([xyz, np.ones((xyz.shape[0], 1))], 1)
        return (self.R0_rect @ (self.Tr_velo_to_cam @ hom.T)).T

    def rect_to_lidar(self, xyz: np.ndarray) -> np.ndarray:
        """Rectified camera coordinates ``(N, 3)`` to the LiDAR frame."""
        tr = np.vstack([self.Tr_velo_to_cam, [0, 0, 0, 1]])
        r0 = np.eye(4)
        r0[:3, :3] = self.R0_rect
        hom = np.concatenate([xyz, np.ones((xyz.shape[0], 1))], 1)
        return np.linalg.solve(r0 @ tr, hom.T).T[:, :3]

    def rect_to_image(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates ``(N, 2)`` and depth ``(N,)`` of rectified points, as OpenPCDet's ``rect_to_img``: ``P2``
        applied, then divided by the rectified depth ``z`` (not by ``z + P2[2, 3]``, KITTI's 0.0027 m: a quirk that
        moves pixels by < 0.1 px, kept so that projected 2D boxes are OpenPCDet's)."""
        hom = np.concatenate([xyz, np.ones((xyz.shape[0], 1))], 1) @ self.P2.T
        depth = np.asarray(xyz, dtype=np.float64)[:, 2]
        return hom[:, :2] / np.where(np.abs(depth) < 1e-6, 1e-6, depth)[:, None], depth


def read_calib(path: Path) -> Calib:
    """Parse a KITTI ``calib/*.txt`` (``key: 12 or 9 numbers`` per line)."""
    values: dict[str, np.ndarray] = {}
    for line in Path(path).read_text().splitlines():
        if ":" in line:
            key, rest = line.split(":", 1)
            values[key.strip()] = np.array([float(v) for v in rest.split()])
    try:
        return Calib(
            values["P2"].reshape(3, 4), values["R0_rect"].reshape(3, 3), values["Tr_velo_to_cam"].reshape(3, 4)
        )
    except KeyError as err:
        raise DataError(
            f"{path}: missing calibration key {err.args[0]!r} (need P2, R0_rect, Tr_velo_to_cam)."
        ) from None


def read_image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of a PNG from its header (KITTI's ``image_2`` frames are 1224–1242 × 370–376 px).

    Raises:
        DataError: the file is not a PNG.
    """
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise DataError(f"'{path}' is not a PNG image (KITTI's image_2 frames are PNGs); replace or remove it.")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def frame_calib(calib_path: Path, image_path: Path) -> Calib:
    """A frame's calibration with its image's size when ``image_path`` exists (else KITTI's usual size)."""
    calib = read_calib(calib_path)
    if Path(image_path).is_file():
        calib.image_size_px = read_image_size(image_path)
    return calib


def write_calib(path: Path, calib: Calib) -> None:
    """Write the three matrices KITTI's object devkit reads (P0, P1, P3 and Tr_imu_to_velo are not kept)."""
    rows = [("P2", calib.P2), ("R0_rect", calib.R0_rect), ("Tr_velo_to_cam", calib.Tr_velo_to_cam)]
    Path(path).write_text("".join(f"{k}: {' '.join(f'{v:.12e}' for v in m.ravel())}\n" for k, m in rows))


@dataclass
class KittiObject:
    """One line of a KITTI label / result file (camera frame; dimensions h, w, l in metres)."""

    type: str
    truncated: float = 0.0
    occluded: int = 0
    alpha: float = 0.0
    bbox: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    """left, top, right, bottom in pixels."""
    dimensions_hwl: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    location: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    """Bottom centre in rectified camera coordinates."""
    rotation_y: float = 0.0
    score: float | None = None


def read_label(path: Path) -> list[KittiObject]:
    """Parse a ``label_2/*.txt`` (15 columns) or a result file (16: with a score)."""
    objects = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (15, 16):
            raise DataError(f"{path}:{n}: expected 15 or 16 columns (type … rotation_y [score]), got {len(parts)}.")
        v = [float(p) for p in parts[1:]]
        objects.append(
            KittiObject(
                parts[0], v[0], int(v[1]), v[2], v[3:7], v[7:10], v[10:13], v[13], v[14] if len(v) == 15 else None
            )
        )
    return objects


def format_object(obj: KittiObject, decimals: int = 4) -> str:
    """One KITTI line (score last when present): 4 decimals as OpenPCDet's ``test.py`` writes results, 2 as KITTI's
    own ``label_2`` files. The score is written exactly (shortest round-trip repr): rounded scores tie, ties reorder
    detections, and re-scoring the file would then give another AP."""
    occ = f"{obj.occluded:d}" if obj.occluded >= 0 else "-1"
    trunc = f"{obj.truncated:.2f}" if obj.truncated >= 0 else "-1"
    nums = [obj.alpha, *obj.bbox, *obj.dimensions_hwl, *obj.location, obj.rotation_y]
    text = f"{obj.type} {trunc} {occ} " + " ".join(f"{v:.{decimals}f}" for v in nums)
    return text + (f" {float(obj.score)!r}" if obj.score is not None else "")


def write_label(path: Path, objects: list[KittiObject], decimals: int = 4) -> None:
    """Write a label / result file (an empty file for a frame without objects, as KITTI expects)."""
    Path(path).write_text("".join(format_object(o, decimals) + "\n" for o in objects))


def camera_to_lidar_boxes(
    location: np.ndarray, dims_hwl: np.ndarray, rotation_y: np.ndarray, calib: Calib
) -> np.ndarray:
    """KITTI camera boxes -> LiDAR ``(N, 7)`` (centre z, l w h, heading = -(ry + π/2))."""
    xyz = calib.rect_to_lidar(np.asarray(location, dtype=np.float64).reshape(-1, 3))
    h, w, l = (np.asarray(dims_hwl, dtype=np.float64).reshape(-1, 3)[:, i] for i in range(3))  # noqa: E741
    xyz[:, 2] += h / 2
    heading = -(np.asarray(rotation_y, dtype=np.float64).reshape(-1) + np.pi / 2)
    return np.concatenate([xyz, l[:, None], w[:, None], h[:, None], heading[:, None]], 1)


def lidar_to_camera_boxes(boxes: np.ndarray, calib: Calib) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LiDAR ``(N, 7)`` -> KITTI ``(location (N, 3) bottom centre, dims h w l (N, 3), rotation_y (N,))``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    bottom = boxes[:, :3].copy()
    bottom[:, 2] -= boxes[:, 5] / 2
    location = calib.lidar_to_rect(bottom)
    ry = limit_period(torch.from_numpy(-boxes[:, 6] - np.pi / 2), 0.5, 2 * math.pi).numpy()
    return location, boxes[:, [5, 4, 3]], ry


def camera_corners(location: np.ndarray, dims_hwl: np.ndarray, rotation_y: np.ndarray) -> np.ndarray:
    """The 8 corners ``(N, 8, 3)`` of KITTI camera boxes (bottom-centre ``location``, ``h w l``, ``rotation_y`` about
    the camera's y axis), in OpenPCDet's ``boxes3d_to_corners3d_kitti_camera`` order: bottom face, then top."""
    loc = np.asarray(location, dtype=np.float64).reshape(-1, 3)
    h, w, l = (np.asarray(dims_hwl, dtype=np.float64).reshape(-1, 3)[:, i : i + 1] for i in range(3))  # noqa: E741
    x = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * l / 2
    z = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1]) * -h
    ry = np.asarray(rotation_y, dtype=np.float64).reshape(-1, 1)
    c, s = np.cos(ry), np.sin(ry)
    return np.stack([x * c + z * s + loc[:, :1], y + loc[:, 1:2], -x * s + z * c + loc[:, 2:3]], -1)


def image_boxes(boxes: np.ndarray, calib: Calib) -> np.ndarray:
    """2D boxes ``(N, 4)`` (left, top, right, bottom px) of LiDAR boxes, as OpenPCDet's ``generate_prediction_dicts``
    makes them: the box converted to the camera (yaw only, :func:`lidar_to_camera_boxes`), the corners of that camera
    box projected (``boxes3d_kitti_camera_to_imageboxes``), clipped to the frame's image (``calib.image_size_px``).
    On a real rig this differs from projecting the LiDAR box's own corners by the ~1° the LiDAR axes are tilted
    against the camera's."""
    if len(boxes) == 0:
        return np.zeros((0, 4))
    image_size_px = calib.image_size_px
    corners = camera_corners(*lidar_to_camera_boxes(boxes, calib))
    uv = calib.rect_to_image(corners.reshape(-1, 3))[0].reshape(-1, 8, 2)
    out = np.concatenate([uv.min(1), uv.max(1)], 1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, image_size_px[0] - 1)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, image_size_px[1] - 1)
    return out


RECT_AXES = Calib(np.eye(3, 4), np.eye(3), np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]], dtype=np.float64))
"""Rectified camera coordinates put on LiDAR axes (x forward, y left, z up) without any other transform."""


def rect_boxes(location: np.ndarray, dims_hwl: np.ndarray, rotation_y: np.ndarray) -> np.ndarray:
    """KITTI camera boxes as ``(N, 7)`` boxes of the rectified camera frame on LiDAR axes: the frame the devkit
    compares boxes in (BEV on the camera's x-z plane, height along its y), so IoUs equal the devkit's exactly."""
    return camera_to_lidar_boxes(location, dims_hwl, rotation_y, RECT_AXES)


def observation_alpha(boxes: np.ndarray, rotation_y: np.ndarray) -> np.ndarray:
    """KITTI's ``alpha`` of LiDAR boxes: ``rotation_y`` minus the viewing angle (OpenPCDet's
    ``-arctan2(-y, x) + rotation_y``)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    return -np.arctan2(-boxes[:, 1], boxes[:, 0]) + np.asarray(rotation_y, dtype=np.float64).reshape(-1)


def result_objects(boxes: np.ndarray, scores: np.ndarray, names: list[str], calib: Calib) -> list[KittiObject]:
    """Detections as KITTI result lines: truncation/occlusion -1, alpha from the viewing angle, score last."""
    location, dims, ry = lidar_to_camera_boxes(boxes, calib)
    bbox = image_boxes(boxes, calib)
    alpha = observation_alpha(boxes, ry)
    return [
        KittiObject(
            names[i],
            -1,
            -1,
            float(alpha[i]),
            list(bbox[i]),
            list(dims[i]),
            list(location[i]),
            float(ry[i]),
            float(scores[i]),
        )
        for i in range(len(names))
    ]


def load_kitti_frame(root: Path, frame_id: str, min_points: int = 5, fov_only: bool = True) -> dict[str, Any]:
    """One frame of a KITTI object directory (``root/training/{velodyne,label_2,calib}``, and ``image_2`` for the
    image's size when present) as a scene-style frame."""
    base = Path(root) / "training"
    names = (f"calib/{frame_id}.txt", f"velodyne/{frame_id}.bin", f"label_2/{frame_id}.txt")
    for path in (base / name for name in names):
        if not path.is_file():
            raise MissingDataError(f"KITTI frame '{frame_id}' (listed in ImageSets) has no file '{path}'.")
    calib = frame_calib(base / "calib" / f"{frame_id}.txt", base / "image_2" / f"{frame_id}.png")
    points = read_velodyne(base / "velodyne" / f"{frame_id}.bin")
    if fov_only:  # OpenPCDet's FOV_POINTS_ONLY: keep the points the camera sees
        rect = calib.lidar_to_rect(points[:, :3].astype(np.float64))
        uv, depth = calib.rect_to_image(rect)
        w, h = calib.image_size_px
        points = points[(depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)]
    objects = [o for o in read_label(base / "label_2" / f"{frame_id}.txt")]
    boxes = camera_to_lidar_boxes(
        np.array([o.location for o in objects]).reshape(-1, 3),
        np.array([o.dimensions_hwl for o in objects]).reshape(-1, 3),
        np.array([o.rotation_y for o in objects]),
        calib,
    )
    num_points = points_in_boxes(torch.from_numpy(points[:, :3]).double(), torch.from_numpy(boxes)).sum(0).numpy()
    return {
        "points": points,
        "gt_boxes": boxes.astype(np.float32),
        "gt_names": [o.type for o in objects],
        "num_points": num_points,
        "height_px": np.array([o.bbox[3] - o.bbox[1] for o in objects], dtype=np.float32),
        # What the evaluation compares, exactly as the label file has it (not through the float32 LiDAR boxes).
        "rect_boxes": _label_rect_boxes(objects),
        "bbox": np.array([o.bbox for o in objects], dtype=np.float64).reshape(-1, 4),
        "alpha": np.array([o.alpha for o in objects], dtype=np.float64),
        "truncation": np.array([o.truncated for o in objects], dtype=np.float32),
        "occlusion": np.array([o.occluded for o in objects], dtype=np.int64),
        "ignored": num_points < min_points,
        "calib": calib,
    }


def _label_rect_boxes(objects: list[KittiObject]) -> np.ndarray:
    return rect_boxes(
        np.array([o.location for o in objects]).reshape(-1, 3),
        np.array([o.dimensions_hwl for o in objects]).reshape(-1, 3),
        np.array([o.rotation_y for o in objects]),
    )


def frame_labels(frame: dict[str, Any], calib: Calib, keep: np.ndarray | None = None) -> FrameLabels:
    """A frame's ground truth as the evaluation sees it: every label (``keep``: a subset), with its 2D box and
    alpha. KITTI frames carry their label file's values; synthetic frames get them through ``calib``."""
    boxes = np.asarray(frame["gt_boxes"], dtype=np.float64).reshape(-1, 7)
    keep = np.ones(len(boxes), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    if "rect_boxes" in frame:
        rect, bbox, alpha = frame["rect_boxes"], frame["bbox"], frame["alpha"]
    else:
        location, dims, ry = lidar_to_camera_boxes(boxes, calib)
        rect, bbox, alpha = rect_boxes(location, dims, ry), image_boxes(boxes, calib), observation_alpha(boxes, ry)
    return FrameLabels(
        [n for n, k in zip(frame["gt_names"], keep, strict=True) if k],
        np.asarray(rect, dtype=np.float64).reshape(-1, 7)[keep],
        np.asarray(bbox, dtype=np.float64).reshape(-1, 4)[keep],
        np.asarray(alpha, dtype=np.float64)[keep],
        np.asarray(frame["truncation"], dtype=np.float64)[keep],
        np.asarray(frame["occlusion"], dtype=np.int64)[keep],
    )


def labels_from_objects(objects: list[KittiObject]) -> FrameLabels:
    """A ``label_2`` file's objects as the evaluation sees them (every line, DontCare included)."""
    return FrameLabels(
        [o.type for o in objects],
        _label_rect_boxes(objects),
        np.array([o.bbox for o in objects], dtype=np.float64).reshape(-1, 4),
        np.array([o.alpha for o in objects], dtype=np.float64),
        np.array([o.truncated for o in objects], dtype=np.float64),
        np.array([o.occluded for o in objects], dtype=np.int64),
    )


def frame_detections(objects: list[KittiObject]) -> FrameDetections:
    """Result lines (with scores) as the evaluation sees them: camera boxes, 2D boxes and alphas as written."""
    if any(o.score is None for o in objects):
        raise ValueError("frame_detections: a result line has no score (16th column).")
    return FrameDetections(
        [o.type for o in objects],
        _label_rect_boxes(objects),
        np.array([o.score for o in objects], dtype=np.float64),
        np.array([o.bbox for o in objects], dtype=np.float64).reshape(-1, 4),
        np.array([o.alpha for o in objects], dtype=np.float64),
    )


def read_image_set(root: Path, split: str) -> list[str]:
    """Frame ids of ``root/ImageSets/<split>.txt``."""
    path = Path(root) / "ImageSets" / f"{split}.txt"
    if not path.is_file():
        raise MissingDataError(f"{path} not found: data.root must be a KITTI object directory with ImageSets/.")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def synthetic_calib() -> Calib:
    """The calibration of the synthetic scenes: a KITTI-like camera (P2) at the LiDAR, R0_rect the identity."""
    p2 = np.array([[FOCAL_PX, 0, CX_PX, 0], [0, FOCAL_PX, CY_PX, 0], [0, 0, 1, 0]], dtype=np.float64)
    # LiDAR (x fwd, y left, z up) -> camera (x right, y down, z fwd).
    tr = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]], dtype=np.float64)
    return Calib(p2, np.eye(3), tr)
