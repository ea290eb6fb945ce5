"""Procedural synthetic hands seen by a pinhole camera: 3D joints (mm), 2D keypoints (px), visibility.

Every sample is a pure function of ``(seed, split, index)``. Its random numbers come from a
counter-based hash (splitmix64 in NumPy ``uint64`` arithmetic) of ``(seed, split, index, draw number)``,
so any subset of indices, in any order, in any process or DataLoader worker, generates the same
hands, the train and val streams never overlap, and nothing holds state. All geometry is element-wise
over the batch (no reduction or matmul whose rounding could depend on the batch), so a sample is
bit-for-bit the same whichever batch it is generated in. 100k samples take about a second.

One hand:

1. **Shape.** Template bone lengths (:data:`skeleton.TEMPLATE_BONE_LENGTHS_MM`) × a per-hand scale
   ``1 ± hand_scale_jitter`` × a per-bone factor ``1 ± bone_length_jitter``.
2. **Pose.** A hand-level "closure" in [0, 1] (open … fist) and per-finger deviations from it set the
   flexion of each joint inside its anatomical range (:data:`skeleton.FLEXION_LIMITS_DEG`); abduction
   is uniform in its range and shrinks as the finger closes; DIP flexion is 2/3 of PIP flexion ± 5°.
3. **Placement.** A uniformly random rotation (or, with ``view_tilt_deg < 180``, a hand seen from the front:
   palm or back towards the camera within a tilt, rolled in the image plane); the centroid of the 21
   joints at a depth uniform in ``depth_range_mm`` and projecting inside the central ``centroid_region``
   of the image.
4. **Camera.** Focal length uniform in ``focal_px_range`` (``fy`` within ``±aspect_jitter`` of
   ``fx``), principal point within ``±principal_point_jitter_px`` of the image centre; no skew.
5. **Observation.** Pixel projection; a joint is visible if it lands inside the image and is not
   randomly occluded (probability ``occlusion_prob``); visible keypoints get Gaussian noise of
   ``noise_px`` pixels per coordinate; invisible ones are reported as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from trainwell.tasks.hand_pose import skeleton as S

Split = Literal["train", "val", "test"]
SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
"""Each split is its own random stream: the key of a sample is ``(seed, split id, index)``."""


@dataclass
class SyntheticHandsConfig:
    """Parameters of the synthetic hand generator (the hand-pose task's ``data:`` section holds them)."""

    image_width_px: int = 256
    """Image width in pixels; keypoints outside ``[0, width)`` are not visible."""
    image_height_px: int = 256
    """Image height in pixels."""
    focal_px_range: list[float] = field(default_factory=lambda: [300.0, 600.0])
    """``[min, max]`` focal length ``fx`` in pixels, drawn uniformly per sample."""
    aspect_jitter: float = 0.02
    """``fy = fx × (1 ± aspect_jitter)`` (non-square pixels)."""
    principal_point_jitter_px: float = 8.0
    """The principal point is the image centre ± this many pixels in each direction."""
    depth_range_mm: list[float] = field(default_factory=lambda: [250.0, 800.0])
    """``[min, max]`` depth of the hand's centroid in front of the camera, millimetres."""
    centroid_region: float = 0.5
    """The centroid projects uniformly inside the central fraction of the image of this size (0–1)."""
    hand_scale_jitter: float = 0.15
    """Per-hand scale of all bone lengths: uniform in ``1 ± hand_scale_jitter``."""
    bone_length_jitter: float = 0.05
    """Per-bone length factor on top of the hand scale: uniform in ``1 ± bone_length_jitter``."""
    finger_independence: float = 0.4
    """How far each finger's closure may stray from the hand's (0 = all fingers close together)."""
    angle_jitter: float = 0.15
    """Per-joint deviation from the finger's closure, as a fraction of the joint's flexion range."""
    occlusion_prob: float = 0.1
    """Probability that a joint is hidden (independently per joint), on top of leaving the image."""
    noise_px: float = 1.0
    """Standard deviation of the Gaussian noise on visible 2D keypoints, pixels per coordinate."""
    view_tilt_deg: float = 180.0
    """How far the hand turns away from facing the camera: the palm's normal (or the back's, see
    ``back_view_prob``) lies within this angle of the line of sight, uniformly over that spherical cap.
    180 (the default) = a uniformly random 3D orientation. Datasets filmed from the front (FreiHAND, HO3D) are
    closer to 60–90."""
    view_roll_deg: float = 180.0
    """In-plane turn of the hand about the line of sight, uniform in ``±view_roll_deg`` from fingers-up (only
    used when ``view_tilt_deg < 180``)."""
    back_view_prob: float = 0.5
    """Probability that the camera sees the back of the hand rather than the palm (when ``view_tilt_deg < 180``)."""


# -- counter-based random numbers ----------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on a ``uint64`` array (a bijection with good avalanche)."""
    z = x + _GOLDEN  # uint64 arrays wrap around silently, which is what the hash wants
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


def sample_keys(seed: int, split: Split, indices: np.ndarray) -> np.ndarray:
    """``(N,) uint64`` key of each sample: distinct for every ``(split, index)`` of one seed."""
    if split not in SPLIT_IDS:
        raise ValueError(f"Unknown split '{split}'; expected one of {sorted(SPLIT_IDS)}.")
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= 2**48):
        raise IndexError(f"Sample indices must be in [0, 2**48); got {indices.min()} … {indices.max()}.")
    seed_key = splitmix64(np.array([seed % 2**64], dtype=np.uint64))
    # (split id, index) packed into one word: distinct pairs give distinct hash inputs, so train and
    # val keys can never coincide.
    counter = (np.uint64(SPLIT_IDS[split]) << np.uint64(48)) | indices.astype(np.uint64)
    return splitmix64(seed_key ^ splitmix64(counter))


def uniforms(keys: np.ndarray, num_draws: int) -> np.ndarray:
    """``(N, num_draws)`` float64 uniforms in [0, 1): draw ``d`` of sample ``k`` is ``hash(k, d)``."""
    draws = np.arange(num_draws, dtype=np.uint64) * _GOLDEN
    bits = splitmix64(keys[:, None] ^ splitmix64(draws)[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


# Draw numbers of each random quantity. Append new ones at the end: changing an offset changes every hand.
_LAYOUT: dict[str, int] = {
    "hand_scale": 1,
    "bone_factor": 20,
    "closure": 1,
    "finger_closure": 5,
    "flexion_jitter": 15,
    "abduction": 15,
    "dip_coupling": 5,
    "rotation": 3,
    "camera": 4,
    "placement": 3,
    "occlusion": 21,
    "noise": 42,
    "view_back": 1,
}
_OFFSETS: dict[str, int] = {}
_offset = 0
for _name, _count in _LAYOUT.items():
    _OFFSETS[_name] = _offset
    _offset += _count
NUM_DRAWS = _offset


def _draw(u: np.ndarray, name: str) -> np.ndarray:
    return u[:, _OFFSETS[name] : _OFFSETS[name] + _LAYOUT[name]]


def _symmetric(u: np.ndarray, half_width: float) -> np.ndarray:
    """Uniform in ``[-half_width, half_width)`` from uniforms in [0, 1)."""
    return half_width * (2.0 * u - 1.0)


# -- camera ------------------------------------------------------------------------------------------
def project_to_pixels(joints_cam_mm: torch.Tensor, intrinsics: torch.Tensor, min_depth_mm: float = 1.0) -> torch.Tensor:
    """Pinhole projection (no skew) of camera-space points to pixels.

    Args:
        joints_cam_mm: ``(..., J, 3)`` points in the camera frame, millimetres (z forward).
        intrinsics: ``(..., 3, 3)`` matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels.
        min_depth_mm: depths are clamped to at least this, so a wild prediction behind the camera
            gives a large finite error instead of a division by zero.

    Returns:
        ``(..., J, 2)`` pixel coordinates ``(u, v)``.
    """
    depth = joints_cam_mm[..., 2].clamp_min(min_depth_mm)
    fx, fy = intrinsics[..., 0, 0].unsqueeze(-1), intrinsics[..., 1, 1].unsqueeze(-1)
    cx, cy = intrinsics[..., 0, 2].unsqueeze(-1), intrinsics[..., 1, 2].unsqueeze(-1)
    u = joints_cam_mm[..., 0] / depth * fx + cx
    v = joints_cam_mm[..., 1] / depth * fy + cy
    return torch.stack((u, v), dim=-1)


def pixels_to_normalized(keypoints_px: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """``((u - cx) / fx, (v - cy) / fy)``: camera-independent image coordinates ``(..., J, 2)``."""
    fx, fy = intrinsics[..., 0, 0].unsqueeze(-1), intrinsics[..., 1, 1].unsqueeze(-1)
    cx, cy = intrinsics[..., 0, 2].unsqueeze(-1), intrinsics[..., 1, 2].unsqueeze(-1)
    return torch.stack(((keypoints_px[..., 0] - cx) / fx, (keypoints_px[..., 1] - cy) / fy), dim=-1)


# -- the generator -----------------------------------------------------------------------------------
def _to_torch(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


def _pose_angles(u: np.ndarray, cfg: SyntheticHandsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Flexion and abduction ``(N, 5, 3)`` in radians, inside the skeleton's limits."""
    n = u.shape[0]
    flex_lim = np.deg2rad(np.array(S.FLEXION_LIMITS_DEG))  # (5, 3, 2)
    abd_lim = np.deg2rad(np.array(S.ABDUCTION_LIMITS_DEG))
    closure = _draw(u, "closure")  # (N, 1): 0 = open hand, 1 = fist
    finger = np.clip(closure + _symmetric(_draw(u, "finger_closure"), cfg.finger_independence), 0.0, 1.0)
    jitter = _symmetric(_draw(u, "flexion_jitter").reshape(n, 5, 3), cfg.angle_jitter)
    level = np.clip(finger[:, :, None] + jitter, 0.0, 1.0)
    flexion = flex_lim[..., 0] + level * (flex_lim[..., 1] - flex_lim[..., 0])
    # DIP follows PIP (fingers only): 2/3 of it, ± a few degrees, inside the DIP range.
    coupled = S.DIP_PIP_RATIO * flexion[:, 1:, 1] + np.deg2rad(
        _symmetric(_draw(u, "dip_coupling")[:, 1:], S.DIP_COUPLING_TOLERANCE_DEG)
    )
    flexion[:, 1:, 2] = np.clip(coupled, flex_lim[1:, 2, 0], flex_lim[1:, 2, 1])
    # Abduction: uniform in the range (zero for hinges), narrowing as the finger closes.
    spread = abd_lim[..., 0] + _draw(u, "abduction").reshape(n, 5, 3) * (abd_lim[..., 1] - abd_lim[..., 0])
    abduction = spread * (1.0 - 0.7 * finger[:, :, None])
    return flexion, abduction


def _rotation_matrices(u: np.ndarray) -> torch.Tensor:
    """``(N, 3, 3)`` uniformly random rotations (Shoemake's quaternion method) from 3 uniforms each."""
    u1, u2, u3 = u[:, 0], u[:, 1], u[:, 2]
    a, b = np.sqrt(1.0 - u1), np.sqrt(u1)
    x, y = a * np.sin(2 * math.pi * u2), a * np.cos(2 * math.pi * u2)
    z, w = b * np.sin(2 * math.pi * u3), b * np.cos(2 * math.pi * u3)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return _to_torch(np.stack([np.stack(row, axis=-1) for row in rows], axis=-2))


def _view_rotations(u: np.ndarray, back: np.ndarray, cfg: SyntheticHandsConfig) -> torch.Tensor:
    """``(N, 3, 3)`` palm-frame → camera rotations of hands seen from the front (``view_tilt_deg < 180``).

    Fingers-up with the palm towards the camera is the palm frame's x axis (fingers) on the image's -y, its z
    axis (the palm faces -z) on the camera's +z; then, with ``back_view_prob``, a half turn about the image's
    vertical shows the back; a tilt by ``θ`` (``cos θ`` uniform in ``[cos view_tilt_deg, 1]``) about a random axis
    in the image plane; a roll uniform in ``±view_roll_deg`` about the line of sight.
    """
    n = u.shape[0]
    front = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # columns: images of x, y, z
    flip = np.where((back < cfg.back_view_prob)[:, None, None], np.diag([-1.0, 1.0, -1.0]), np.eye(3))
    cos_t = 1.0 - u[:, 0] * (1.0 - math.cos(math.radians(cfg.view_tilt_deg)))
    sin_t = np.sqrt(np.clip(1.0 - cos_t * cos_t, 0.0, 1.0))
    phi = 2.0 * math.pi * u[:, 1]
    ax, ay = np.cos(phi), np.sin(phi)  # the tilt axis, in the image plane
    tilt = np.empty((n, 3, 3))  # Rodrigues' formula for an axis (ax, ay, 0)
    tilt[:, 0] = np.stack((cos_t + ax * ax * (1 - cos_t), ax * ay * (1 - cos_t), ay * sin_t), -1)
    tilt[:, 1] = np.stack((ax * ay * (1 - cos_t), cos_t + ay * ay * (1 - cos_t), -ax * sin_t), -1)
    tilt[:, 2] = np.stack((-ay * sin_t, ax * sin_t, cos_t), -1)
    roll = np.deg2rad(_symmetric(u[:, 2], cfg.view_roll_deg))
    cr, sr, zero, one = np.cos(roll), np.sin(roll), np.zeros(n), np.ones(n)
    roll_m = np.stack((np.stack((cr, -sr, zero), -1), np.stack((sr, cr, zero), -1), np.stack((zero, zero, one), -1)), 1)
    rotation = _to_torch(front).expand(n, 3, 3)
    for factor in (flip, tilt, roll_m):  # factor @ rotation, column by column (element-wise: batch-independent)
        f = _to_torch(factor)
        rotation = torch.stack([S.frame_apply(f, rotation[..., k]) for k in range(3)], dim=-1)
    return rotation


def _hand_local_mm(u: np.ndarray, cfg: SyntheticHandsConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Joints ``(N, 21, 3)`` in the palm frame (wrist at the origin), float64 mm, and the pose drawn."""
    n = u.shape[0]
    scale = 1.0 + _symmetric(_draw(u, "hand_scale")[:, 0], cfg.hand_scale_jitter)
    factor = 1.0 + _symmetric(_draw(u, "bone_factor"), cfg.bone_length_jitter)
    lengths = _to_torch(np.asarray(S.TEMPLATE_BONE_LENGTHS_MM) * scale[:, None] * factor)  # (N, 20)

    joints = torch.zeros(n, S.NUM_JOINTS, 3, dtype=torch.float64)
    for finger, chain in enumerate(S.FINGER_JOINTS):  # thumb CMC and the four MCPs: the palm
        direction = torch.tensor(S.PALM_DIRECTIONS[finger], dtype=torch.float64)
        joints[:, chain[0]] = direction * lengths[:, chain[0] - 1 : chain[0]]
    frames = S.base_frames(joints)  # (N, 5, 3, 3): the same frames the pose prior reads back

    flexion, abduction = _pose_angles(u, cfg)
    cos_f, sin_f = _to_torch(np.cos(flexion)), _to_torch(np.sin(flexion))
    cos_a, sin_a = _to_torch(np.cos(abduction)), _to_torch(np.sin(abduction))
    for level in range(3):
        local = S.direction_from_angles(cos_f[..., level], sin_f[..., level], cos_a[..., level], sin_a[..., level])
        direction = S.frame_apply(frames, local)  # (N, 5, 3)
        for finger, chain in enumerate(S.FINGER_JOINTS):
            child = chain[level + 1]
            joints[:, child] = joints[:, chain[level]] + lengths[:, child - 1 : child] * direction[:, finger]
        frames = S.frame_from_xy(direction, frames[..., 1])
    pose = {"hand_scale": _to_torch(scale), "flexion_rad": _to_torch(flexion), "abduction_rad": _to_torch(abduction)}
    return joints, pose


def _camera(u: np.ndarray, cfg: SyntheticHandsConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample pinhole parameters ``fx, fy, cx, cy`` ``(N,)`` float64 pixels (step 4 of the module doc).

    Drawn before the placement because the centroid is placed by un-projecting an image position through them.
    """
    cam = _draw(u, "camera")
    f_lo, f_hi = cfg.focal_px_range
    fx = f_lo + cam[:, 0] * (f_hi - f_lo)
    fy = fx * (1.0 + _symmetric(cam[:, 1], cfg.aspect_jitter))
    cx = cfg.image_width_px / 2 + _symmetric(cam[:, 2], cfg.principal_point_jitter_px)
    cy = cfg.image_height_px / 2 + _symmetric(cam[:, 3], cfg.principal_point_jitter_px)
    return fx, fy, cx, cy


def _place_in_camera(
    u: np.ndarray,
    local: torch.Tensor,
    camera: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    cfg: SyntheticHandsConfig,
) -> torch.Tensor:
    """Joints ``(N, 21, 3)`` float64 mm in the camera frame (step 3 of the module doc).

    The hand turns about its centroid (not the wrist), so the centroid lands exactly at the drawn depth and image
    position whatever the rotation; the centroid is a written-out sum so its rounding cannot depend on the batch.
    """
    fx, fy, cx, cy = camera
    place = _draw(u, "placement")
    d_lo, d_hi = cfg.depth_range_mm
    depth = d_lo + place[:, 0] * (d_hi - d_lo)
    u_c = cfg.image_width_px * (0.5 + cfg.centroid_region * (place[:, 1] - 0.5))
    v_c = cfg.image_height_px * (0.5 + cfg.centroid_region * (place[:, 2] - 0.5))
    centroid_cam = _to_torch(np.stack(((u_c - cx) / fx * depth, (v_c - cy) / fy * depth, depth), axis=-1))
    centroid_local = local[:, 0]
    for joint in range(1, S.NUM_JOINTS):
        centroid_local = centroid_local + local[:, joint]
    centroid_local = centroid_local / S.NUM_JOINTS
    if cfg.view_tilt_deg >= 180.0:
        rotation = _rotation_matrices(_draw(u, "rotation"))[:, None]  # (N, 1, 3, 3)
    else:
        rotation = _view_rotations(_draw(u, "rotation"), _draw(u, "view_back")[:, 0], cfg)[:, None]
    return S.frame_apply(rotation, local - centroid_local[:, None]) + centroid_cam[:, None]


def _intrinsics_matrix(camera: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> torch.Tensor:
    """``(N, 3, 3)`` float32 ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``: the matrix the losses project with."""
    fx, fy, cx, cy = camera
    intrinsics = torch.zeros(fx.shape[0], 3, 3, dtype=torch.float32)
    intrinsics[:, 0, 0], intrinsics[:, 1, 1] = _to_torch(fx).float(), _to_torch(fy).float()
    intrinsics[:, 0, 2], intrinsics[:, 1, 2] = _to_torch(cx).float(), _to_torch(cy).float()
    intrinsics[:, 2, 2] = 1.0
    return intrinsics


def _observe(
    u: np.ndarray, joints_cam_mm: torch.Tensor, intrinsics: torch.Tensor, cfg: SyntheticHandsConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Observed keypoints ``(N, 21, 2)`` px and visibility ``(N, 21)`` bool (step 5 of the module doc).

    Projected in float32 with the function the keypoint_2d loss uses, so without noise the labels are exactly
    what a perfect prediction projects to.
    """
    clean_px = project_to_pixels(joints_cam_mm, intrinsics)
    inside = (
        (clean_px[..., 0] >= 0)
        & (clean_px[..., 0] < cfg.image_width_px)
        & (clean_px[..., 1] >= 0)
        & (clean_px[..., 1] < cfg.image_height_px)
    )
    visible = inside & torch.from_numpy(_draw(u, "occlusion") >= cfg.occlusion_prob)
    noise_u = _draw(u, "noise")  # Box–Muller: 21 pairs of uniforms → 21 × 2 standard normals
    radius = np.sqrt(-2.0 * np.log1p(-noise_u[:, :21]))  # log(1 - u) with 1 - u in (0, 1]
    angle = 2.0 * math.pi * noise_u[:, 21:]
    noise = _to_torch(cfg.noise_px * np.stack((radius * np.cos(angle), radius * np.sin(angle)), axis=-1)).float()
    return torch.where(visible[..., None], clean_px + noise, torch.zeros(())), visible


def generate_hands(cfg: SyntheticHandsConfig, seed: int, split: Split, indices: np.ndarray) -> dict[str, torch.Tensor]:
    """Generate the samples ``indices`` of ``split`` in one vectorised call.

    Args:
        cfg: generator parameters.
        seed: the data seed (``data.seed``).
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint streams).
        indices: ``(N,)`` non-negative sample indices, any order, duplicates allowed.

    Returns:
        float32 tensors, ``N`` first:

        * ``joints_cam_mm`` ``(N, 21, 3)``: joints in the camera frame (x right, y down, z forward), mm;
          exactly ``joints_rel_mm + root_cam_mm`` in float32.
        * ``joints_rel_mm`` ``(N, 21, 3)``: root(wrist)-relative joints, camera axes, mm (row 0 is 0).
        * ``root_cam_mm`` ``(N, 3)``: the wrist in the camera frame, mm.
        * ``keypoints_2d_px`` ``(N, 21, 2)``: observed pixel coordinates (noisy; 0 where not visible).
        * ``visibility`` ``(N, 21)``: 1 where the keypoint is observed, else 0.
        * ``intrinsics`` ``(N, 3, 3)``: pinhole camera matrix, pixels.
        * ``hand_scale`` ``(N,)``: the per-hand scale factor (1 = template size).

        and float64 pose internals (for tests and analysis): ``flexion_rad`` and ``abduction_rad``
        ``(N, 5, 3)`` (fingers thumb…pinky × articulated joints base→tip).
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    u = uniforms(sample_keys(seed, split, indices), NUM_DRAWS)
    local, pose = _hand_local_mm(u, cfg)
    camera = _camera(u, cfg)
    joints_cam = _place_in_camera(u, local, camera, cfg)

    # float32 outputs; joints_cam is rebuilt from root + relative so the two agree exactly in float32.
    root_cam_mm = joints_cam[:, S.ROOT].float()
    joints_rel_mm = (joints_cam - joints_cam[:, S.ROOT : S.ROOT + 1]).float()
    joints_cam_mm = joints_rel_mm + root_cam_mm[:, None]
    intrinsics = _intrinsics_matrix(camera)
    keypoints_2d_px, visible = _observe(u, joints_cam_mm, intrinsics, cfg)
    return {
        "joints_cam_mm": joints_cam_mm,
        "joints_rel_mm": joints_rel_mm,
        "root_cam_mm": root_cam_mm,
        "keypoints_2d_px": keypoints_2d_px,
        "visibility": visible.float(),
        "intrinsics": intrinsics,
        "hand_scale": pose["hand_scale"].float(),
        "flexion_rad": pose["flexion_rad"],
        "abduction_rad": pose["abduction_rad"],
    }
