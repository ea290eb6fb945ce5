"""Geometric and colour augmentation of RGB-D crops that keeps images, depth, 2D/3D labels and intrinsics consistent.

An in-plane rotation by ``θ`` about the optical axis is a *camera* rotation: the 3D labels turn by ``R_z(θ)`` (depth
unchanged) and the image is re-projected with the same intrinsics. Scale ``s`` about the crop centre and a shift
``t`` (crop jitter) change only the intrinsics: ``K' = A K`` with ``A = [[s, 0, (1 - s) c + t_x], [0, s, (1 - s) c +
t_y], [0, 0, 1]]``. The image maps through the homography ``H = K' R_z K⁻¹``, which is exact for any ``K`` (also
``fx ≠ fy``); each output pixel centre is traced back through ``H⁻¹`` and sampled there — bilinearly for RGB,
nearest for depth (blending a finger with the background would invent depths no sensor returns). The new 2D
labels are the old ones mapped through ``H`` (so they keep whatever the labels were, e.g. annotation noise), and
the 3D labels are rotated: projecting the new joints with ``K'`` lands on the new labels.

The random parameters of sample ``index`` in ``epoch`` are a pure function of ``(seed, epoch, index)``
(:func:`augment_keys`), so a resumed run sees the same augmented batches bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from trainwell.tasks.hand_pose.synthetic import splitmix64

_AUGMENT_SALT = np.uint64(0xA06_3E47)


@dataclass
class AugmentConfig:
    """``data.augment``: the ranges of the training augmentation (all 0 = off)."""

    rotation_deg: float = 30.0
    """In-plane rotation uniform in ``±rotation_deg`` (about the optical axis). Rendered hands already come in every
    3D orientation; large angles mostly turn the crop's corners (and fingertips) out of view."""
    scale: float = 0.1
    """Zoom uniform in ``1 ± scale`` about the crop centre."""
    shift: float = 0.05
    """Crop jitter: a shift uniform in ``±shift × crop size`` in each direction."""
    color: float = 0.15
    """Brightness, contrast and per-channel gain jitter, uniform in ``1 ± color``."""

    @property
    def enabled(self) -> bool:
        return any(v != 0 for v in (self.rotation_deg, self.scale, self.shift, self.color))


def augment_keys(seed: int, epoch: int | np.ndarray, indices: np.ndarray) -> list[int]:
    """A seed per sample from ``(seed, epoch, index)`` (``epoch`` a scalar or one per index), batch-independent."""
    idx = np.asarray(indices, dtype=np.uint64).reshape(-1)
    epochs = np.broadcast_to(np.asarray(epoch, dtype=np.uint64), idx.shape)
    base = splitmix64(np.array([seed % 2**64], dtype=np.uint64) ^ _AUGMENT_SALT)
    mixed = splitmix64(base ^ splitmix64((epochs << np.uint64(40)) | idx))
    return [int(k) for k in mixed >> np.uint64(1)]


def _rotate_z(points: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``(B, N, 3)`` points by the per-sample angle ``(B,)`` about the z axis (element-wise)."""
    x, y = points[..., 0], points[..., 1]
    c, s = cos[:, None], sin[:, None]
    return torch.stack((c * x - s * y, s * x + c * y, points[..., 2]), dim=-1)


def _map_pixels(
    px: torch.Tensor, k_from: torch.Tensor, k_to: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    """Pixels ``(B, N, 2)`` of camera ``k_from`` to camera ``k_to`` rotated by ``(cos, sin)`` about z: ``H p``."""
    x = (px[..., 0] - k_from[:, 0, 2, None]) / k_from[:, 0, 0, None]
    y = (px[..., 1] - k_from[:, 1, 2, None]) / k_from[:, 1, 1, None]
    c, s = cos[:, None], sin[:, None]
    xr, yr = c * x - s * y, s * x + c * y
    return torch.stack(
        (xr * k_to[:, 0, 0, None] + k_to[:, 0, 2, None], yr * k_to[:, 1, 1, None] + k_to[:, 1, 2, None]), -1
    )


def warp_to_camera(
    images: torch.Tensor,
    k_from: torch.Tensor,
    k_to: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    size_px: tuple[int, int],
    *,
    mode: str,
) -> torch.Tensor:
    """Re-render ``images (B, C, H, W)`` of camera ``k_from`` as seen by ``k_to`` rotated by ``(cos, sin)`` about z.

    Each output pixel centre is traced back through ``H⁻¹`` and sampled (``mode``: ``"bilinear"`` for RGB,
    ``"nearest"`` for depth); outside the input: the border colour for RGB, 0 (no return) for depth. Output
    ``(B, C, *size_px)``.
    """
    n, (h, w) = images.shape[0], size_px
    v_grid, u_grid = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    out_px = torch.stack((u_grid, v_grid), -1).reshape(1, -1, 2).expand(n, -1, -1).to(k_to.dtype)
    src = _map_pixels(out_px, k_to, k_from, cos, -sin)  # (B, h·w, 2) input pixel coordinates
    in_h, in_w = images.shape[-2:]
    grid = torch.stack((src[..., 0] / in_w * 2 - 1, src[..., 1] / in_h * 2 - 1), -1).view(n, h, w, 2)
    padding = "zeros" if mode == "nearest" else "border"
    return torch.nn.functional.grid_sample(images, grid, mode=mode, padding_mode=padding, align_corners=False)


def augment_batch(batch: dict[str, torch.Tensor], cfg: AugmentConfig, keys: list[int]) -> dict[str, torch.Tensor]:
    """Augment a batch of crops (keys of :func:`~trainwell.tasks.hand_pose.render.render_rgbd`), one seed per sample.

    Returns a new dict; ``rgb``, ``depth_mm``, ``keypoints_2d_px``, ``visibility``, ``intrinsics`` and every 3D key
    (``joints_cam_mm``, ``joints_rel_mm``, ``root_cam_mm``, ``vertices_rel_mm``) change together.
    """
    rgb, depth, k_old = batch["rgb"], batch["depth_mm"], batch["intrinsics"]
    h, w = rgb.shape[-2:]
    u = torch.stack([torch.rand(8, generator=torch.Generator().manual_seed(key)) for key in keys])
    angle = math.radians(cfg.rotation_deg) * (2 * u[:, 0] - 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    scale = 1.0 + cfg.scale * (2 * u[:, 1] - 1)
    shift = cfg.shift * (2 * u[:, 2:4] - 1) * torch.tensor([w, h], dtype=torch.float32)
    centre = torch.tensor([w / 2, h / 2], dtype=torch.float32)
    k_new = k_old.clone()
    k_new[:, 0, 0], k_new[:, 1, 1] = k_old[:, 0, 0] * scale, k_old[:, 1, 1] * scale
    k_new[:, :2, 2] = scale[:, None] * k_old[:, :2, 2] + (1 - scale[:, None]) * centre + shift

    new_rgb = warp_to_camera(rgb, k_old, k_new, cos, sin, (h, w), mode="bilinear")
    new_depth = warp_to_camera(depth, k_old, k_new, cos, sin, (h, w), mode="nearest")

    gains = 1.0 + cfg.color * (2 * u[:, 4:7] - 1)
    contrast = 1.0 + cfg.color * (2 * u[:, 7] - 1)
    mean = new_rgb.mean(dim=(1, 2, 3), keepdim=True)
    new_rgb = (((new_rgb - mean) * contrast[:, None, None, None] + mean) * gains[:, :, None, None]).clamp(0, 1)

    keypoints = _map_pixels(batch["keypoints_2d_px"], k_old, k_new, cos, sin)
    inside = (keypoints[..., 0] >= 0) & (keypoints[..., 0] < w) & (keypoints[..., 1] >= 0) & (keypoints[..., 1] < h)
    out = dict(batch)
    out.update(
        rgb=new_rgb,
        depth_mm=new_depth,
        intrinsics=k_new,
        keypoints_2d_px=keypoints,
        visibility=batch["visibility"] * inside.float(),
        root_cam_mm=_rotate_z(batch["root_cam_mm"][:, None], cos, sin)[:, 0],
    )
    for key in ("joints_cam_mm", "joints_rel_mm", "vertices_rel_mm"):
        if key in batch:
            out[key] = _rotate_z(batch[key], cos, sin)
    return out
