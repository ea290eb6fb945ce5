"""Synthetic LiDAR scenes: every frame is a pure function of ``(seed, split, index)``.

A frame is a sloped ground plane, clutter (walls, poles, vegetation) and labelled Cars, Pedestrians and Cyclists as
oriented boxes, seen by a spinning LiDAR at the origin (x forward, y left, z up; sensor 1.73 m above the ground as
KITTI's). Rays (elevation channels × azimuth bins) are cast against every box (slab test in the box's frame) and the
ground plane at once; the nearest hit wins, so only visible faces return points and objects occlude each other.
Density falls with distance because the rays diverge; ranges get Gaussian noise, returns drop at random (more with
range and on vegetation), and intensity depends on the material and the angle of incidence.

Labels carry KITTI's difficulty inputs: the 2D box height (the box corners projected by a KITTI-like pinhole
camera at the sensor), truncation (the share of that 2D box outside the image) and an occlusion level from the share
of the object's rays blocked by something nearer. Objects with fewer than ``min_points`` returns get occlusion
level 3 ("unknown"), which KITTI's evaluation ignores at every difficulty, and ``ignored=True`` for training.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainwell.tasks.detection3d.boxes import corners_3d

CLASS_NAMES = ("Car", "Pedestrian", "Cyclist")
# Mean (length, width, height) and spread in metres, as KITTI's class statistics.
SIZES_M = {
    "Car": ((3.9, 1.6, 1.56), (0.3, 0.1, 0.1)),
    "Pedestrian": ((0.8, 0.6, 1.73), (0.1, 0.08, 0.1)),
    "Cyclist": ((1.76, 0.6, 1.73), (0.12, 0.06, 0.08)),
}
# Material per class: (reflectivity, range noise multiplier, extra drop probability).
MATERIAL = {
    "Car": (0.6, 1.0, 0.0),
    "Pedestrian": (0.35, 1.0, 0.0),
    "Cyclist": (0.45, 1.0, 0.05),
    "wall": (0.3, 1.0, 0.0),
    "pole": (0.5, 1.0, 0.0),
    "vegetation": (0.15, 8.0, 0.5),
}
GROUND_REFLECTIVITY = 0.2
# A KITTI-like camera at the sensor (P2 of KITTI's frames): focal length, principal point, image size in pixels.
FOCAL_PX, CX_PX, CY_PX, IMAGE_W_PX, IMAGE_H_PX = 721.5, 609.6, 172.9, 1242.0, 375.0


@dataclass
class SceneConfig:
    """How synthetic frames look (sizes in metres, angles in degrees)."""

    num_channels: int = 32
    """Elevation channels of the LiDAR, spread evenly over ``[elevation_min_deg, elevation_max_deg]``."""
    elevation_min_deg: float = -24.9
    elevation_max_deg: float = 2.0
    azimuth_step_deg: float = 0.25
    """Angle between two firings of one channel."""
    azimuth_fov_deg: float = 180.0
    """Only the front ``±fov/2`` is cast (KITTI labels the camera's view; the detector's range is x ≥ 0)."""
    sensor_height_m: float = 1.73
    max_range_m: float = 80.0
    range_noise_m: float = 0.02
    drop_prob: float = 0.05
    """Probability a return is lost, rising linearly to twice this at ``max_range_m``."""
    max_slope_deg: float = 2.0
    scene_x_m: tuple[float, float] = (4.0, 44.0)
    """Object centres lie in this forward range and within ``±scene_half_width_m`` sideways."""
    scene_half_width_m: float = 18.0
    num_cars: tuple[int, int] = (4, 10)
    """Inclusive range of the number of cars per frame (likewise for the other classes)."""
    num_pedestrians: tuple[int, int] = (0, 4)
    num_cyclists: tuple[int, int] = (0, 3)
    num_clutter: tuple[int, int] = (4, 10)
    min_points: int = 5
    """Objects with fewer returns are labelled occlusion 3 (ignored in evaluation and as training targets)."""


def frame_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one frame: a pure function of ``(seed, split, index)``."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _place(
    rng: np.random.Generator,
    taken: list[tuple[float, float, float]],
    radius: float,
    x_range: tuple[float, float],
    half_width: float,
) -> tuple[float, float] | None:
    """A free (x, y) in the camera's view, at least ``radius`` from every taken circle; None after 30 tries."""
    for _ in range(30):
        x = rng.uniform(*x_range)
        y = rng.uniform(-half_width, half_width)
        if abs(y) > x * np.tan(np.radians(42.0)) + 1.0:  # keep labelled objects in the camera's field of view
            continue
        if all((x - tx) ** 2 + (y - ty) ** 2 > (radius + tr) ** 2 for tx, ty, tr in taken):
            return x, y
    return None


def _objects(rng: np.random.Generator, cfg: SceneConfig, ground: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Labelled objects and clutter as ``(kinds, boxes (B, 7))``; labelled ones first."""
    kinds: list[str] = []
    boxes: list[list[float]] = []
    taken: list[tuple[float, float, float]] = []
    counts = {"Car": cfg.num_cars, "Pedestrian": cfg.num_pedestrians, "Cyclist": cfg.num_cyclists}
    for cls, (lo, hi) in counts.items():
        mean, std = SIZES_M[cls]
        for _ in range(int(rng.integers(lo, hi + 1))):
            dims = np.maximum(rng.normal(mean, std), 0.3)
            spot = _place(
                rng, taken, 0.5 * float(np.hypot(dims[0], dims[1])) + 0.3, cfg.scene_x_m, cfg.scene_half_width_m
            )
            if spot is None:
                continue
            if cls == "Car" and rng.random() < 0.7:  # most cars follow the road (either direction)
                heading = rng.choice([0.0, np.pi]) + rng.normal(0, 0.1)
            else:
                heading = rng.uniform(-np.pi, np.pi)
            taken.append((*spot, 0.5 * float(np.hypot(dims[0], dims[1]))))
            z = ground[0] + ground[1] * spot[0] + ground[2] * spot[1] + dims[2] / 2
            kinds.append(cls)
            boxes.append([spot[0], spot[1], z, *dims, heading])
    for _ in range(int(rng.integers(cfg.num_clutter[0], cfg.num_clutter[1] + 1))):
        kind = str(rng.choice(["wall", "pole", "vegetation"]))
        if kind == "wall":
            dims = np.array([rng.uniform(8, 25), 0.3, rng.uniform(2, 4)])
            side = rng.choice([-1.0, 1.0])
            spot, heading = (rng.uniform(5, 50), side * rng.uniform(cfg.scene_half_width_m, 28)), rng.normal(0, 0.05)
        else:
            dims = (
                np.array([0.25, 0.25, rng.uniform(3, 7)])
                if kind == "pole"
                else rng.uniform([0.8, 0.8, 0.6], [3.0, 3.0, 2.5])
            )
            spot = _place(rng, taken, float(np.hypot(dims[0], dims[1])) / 2, (2.0, 60.0), 30.0)
            heading = rng.uniform(-np.pi, np.pi)
        if spot is None:
            continue
        taken.append((*spot, float(np.hypot(dims[0], dims[1])) / 2))
        z = ground[0] + ground[1] * spot[0] + ground[2] * spot[1] + dims[2] / 2
        kinds.append(kind)
        boxes.append([spot[0], spot[1], z, *dims, heading])
    return kinds, np.array(boxes, dtype=np.float64).reshape(-1, 7)


def ray_directions(cfg: SceneConfig) -> np.ndarray:
    """Unit ray directions ``(R, 3)`` of one sweep: channels × azimuth bins over the cast field of view."""
    elev = np.radians(np.linspace(cfg.elevation_min_deg, cfg.elevation_max_deg, cfg.num_channels))
    half = cfg.azimuth_fov_deg / 2
    azim = np.radians(np.arange(-half, half, cfg.azimuth_step_deg))
    e, a = np.meshgrid(elev, azim, indexing="ij")
    return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)


def cast(dirs: np.ndarray, boxes: np.ndarray, ground: np.ndarray, max_range_m: float) -> tuple[np.ndarray, ...]:
    """Nearest hit of every ray from the origin: ``(range (R,), hit id (R,), cos incidence (R,), box hits (R, B))``.

    ``hit id`` is the box index, ``-1`` for the ground and ``-2`` for no return; ``box hits`` tells which boxes each
    ray would hit if nothing were in front (to measure occlusion).
    """
    num_rays = dirs.shape[0]
    cos, sin = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    # Ray origin and direction in every box's frame (rotate by -heading about z).
    ox, oy, oz = -boxes[:, 0], -boxes[:, 1], -boxes[:, 2]
    origin = np.stack([ox * cos + oy * sin, -ox * sin + oy * cos, oz], -1)  # (B, 3)
    dx = dirs[:, None, 0] * cos + dirs[:, None, 1] * sin
    dy = -dirs[:, None, 0] * sin + dirs[:, None, 1] * cos
    d = np.stack([dx, dy, np.broadcast_to(dirs[:, None, 2], dx.shape)], -1)  # (R, B, 3)
    half = boxes[None, :, 3:6] / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
        t1 = (-half - origin[None]) * inv
        t2 = (half - origin[None]) * inv
    t_near_axes = np.minimum(t1, t2)
    t_near = t_near_axes.max(-1)
    t_far = np.maximum(t1, t2).min(-1)
    box_hit = (t_near <= t_far) & (t_near > 0.1)
    t_box = np.where(box_hit, t_near, np.inf)
    # Ground plane z = g0 + gx x + gy y.
    denom = dirs[:, 2] - ground[1] * dirs[:, 0] - ground[2] * dirs[:, 1]
    with np.errstate(divide="ignore"):
        t_ground = np.where(denom < -1e-6, ground[0] / denom, np.inf)
    t_all = np.concatenate([t_box, t_ground[:, None]], 1)
    first = t_all.argmin(1)
    rng_m = t_all[np.arange(num_rays), first]
    hit = np.where(first == boxes.shape[0], -1, first)
    hit = np.where(rng_m <= max_range_m, hit, -2)
    # Cosine of incidence: the face's normal in the box frame is the axis whose slab gave t_near.
    cos_box = np.zeros(num_rays)
    if boxes.shape[0]:
        rays, nearest = np.arange(num_rays), np.minimum(first, boxes.shape[0] - 1)
        axis = t_near_axes[rays, nearest].argmax(-1)
        cos_box = np.abs(d[rays, nearest, axis])
    normal = np.array([-ground[1], -ground[2], 1.0]) / np.linalg.norm([ground[1], ground[2], 1.0])
    cos_ground = np.abs(dirs @ normal)
    cos_inc = np.where(hit == -1, cos_ground, cos_box)
    return rng_m, hit, cos_inc, box_hit


def _project_2d(boxes: np.ndarray, sensor_height_m: float) -> tuple[np.ndarray, np.ndarray]:
    """2D box height in pixels and truncation of each box, for a KITTI-like camera at the sensor."""
    corners = corners_3d(torch.from_numpy(boxes)).numpy() if len(boxes) else np.zeros((0, 8, 3))
    depth = np.maximum(corners[..., 0], 0.1)  # camera z = LiDAR x
    u = CX_PX - FOCAL_PX * corners[..., 1] / depth
    v = CY_PX - FOCAL_PX * corners[..., 2] / depth
    u0, u1, v0, v1 = u.min(1), u.max(1), v.min(1), v.max(1)
    area = np.maximum(u1 - u0, 1e-6) * np.maximum(v1 - v0, 1e-6)
    cu0, cu1 = np.clip(u0, 0, IMAGE_W_PX), np.clip(u1, 0, IMAGE_W_PX)
    cv0, cv1 = np.clip(v0, 0, IMAGE_H_PX), np.clip(v1, 0, IMAGE_H_PX)
    inside = np.maximum(cu1 - cu0, 0) * np.maximum(cv1 - cv0, 0)
    return cv1 - cv0, np.clip(1.0 - inside / area, 0.0, 1.0)


def generate_frame(cfg: SceneConfig, seed: int, split: str, index: int) -> dict[str, Any]:
    """One frame: ``points (N, 4)`` float32 (x, y, z, intensity) and labels (``gt_boxes (G, 7)``, ``gt_names``,
    ``num_points``, ``height_px``, ``truncation``, ``occlusion`` (0–3), ``ignored``)."""
    rng = frame_rng(seed, split, index)
    slope = np.tan(np.radians(rng.uniform(-cfg.max_slope_deg, cfg.max_slope_deg, 2)))
    ground = np.array([-cfg.sensor_height_m, slope[0], slope[1]])
    kinds, boxes = _objects(rng, cfg, ground)
    dirs = ray_directions(cfg)
    range_m, hit, cos_inc, box_hit = cast(dirs, boxes, ground, cfg.max_range_m)
    num_labelled = sum(k in CLASS_NAMES for k in kinds)
    materials = np.array([MATERIAL[k] for k in kinds]).reshape(-1, 3)
    box_idx = np.maximum(hit, 0).clip(max=max(len(kinds) - 1, 0))
    on_box = hit >= 0
    noise_mult = np.where(on_box, materials[box_idx, 1] if len(kinds) else 1.0, 1.0)
    extra_drop = np.where(on_box, materials[box_idx, 2] if len(kinds) else 0.0, 0.0)
    reflect = np.where(on_box, materials[box_idx, 0] if len(kinds) else 0.0, GROUND_REFLECTIVITY)
    drop = cfg.drop_prob * (1.0 + np.minimum(range_m, cfg.max_range_m) / cfg.max_range_m) + extra_drop
    keep = (hit != -2) & (rng.random(hit.shape[0]) >= drop)
    noisy = np.where(hit != -2, range_m, 0.0) + rng.normal(0, 1, hit.shape[0]) * cfg.range_noise_m * noise_mult
    xyz = dirs * noisy[:, None]
    intensity = np.clip(reflect * (0.3 + 0.7 * cos_inc) * (1 - range_m / 200) + rng.normal(0, 0.02, hit.shape[0]), 0, 1)
    points = np.concatenate([xyz, intensity[:, None]], 1)[keep].astype(np.float32)
    kept_hit = hit[keep]
    labelled = boxes[:num_labelled]
    num_points = np.array([(kept_hit == b).sum() for b in range(num_labelled)], dtype=np.int64)
    # Occlusion: the share of rays that would reach the object but hit something nearer first.
    would_hit = box_hit[:, :num_labelled].sum(0)
    first_hit = np.array([(hit == b).sum() for b in range(num_labelled)])
    blocked = 1.0 - first_hit / np.maximum(would_hit, 1)
    occlusion = np.digitize(blocked, [0.15, 0.5, 0.85]).astype(np.int64)
    ignored = num_points < cfg.min_points
    occlusion[ignored] = 3
    height_px, truncation = _project_2d(labelled, cfg.sensor_height_m)
    return {
        "points": points,
        "gt_boxes": labelled.astype(np.float32),
        "gt_names": list(kinds[:num_labelled]),
        "num_points": num_points,
        "height_px": height_px.astype(np.float32),
        "truncation": truncation.astype(np.float32),
        "occlusion": occlusion,
        "ignored": ignored,
    }
