"""The RGB-D hand loss by UTNet's part names, each a weighted scalar that is exactly 0 for a perfect prediction.

=============== ==================== =====================================================================
part            UTNet's name         here
=============== ==================== =====================================================================
``keypoint_2d`` ``loss_2d``          mean distance, crop pixels, between soft-argmax and labelled keypoints
``joint_3d``    ``loss_3d_joint``    mean distance, mm, of the 20 non-root root-relative joints (MPJPE)
``vertex``      ``loss_3d_vert``     mean distance, mm, of the root-relative mesh vertices
``shape_prior`` ``shape_prior``      MANO's β prior has no counterpart without MANO: the scale-free bone-
                                     proportion prior of :func:`.losses.bone_prior_loss` (the hand's *shape*)
``pose_prior``  ``pose_prior``       joint angles beyond the anatomical limits (:func:`.losses.pose_prior_loss`)
``aux``         ``loss_aux``         ``joint_3d`` of the directly regressed auxiliary head (deep supervision)
``root``        (not in UTNet)       distance, mm, between the predicted and the true wrist in camera coordinates
                                     (the absolute position the benchmark files and unaligned errors use)
``heatmap``     (not in UTNet)       KL divergence of each joint's heatmap from a Gaussian (σ = 1 cell) at the
                                     labelled keypoint: a dense signal that lets soft-argmax learn from scratch
=============== ==================== =====================================================================

A part with weight 0 is not computed. Nothing leaves the device (no ``.item()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from trainwell.tasks.hand_pose.losses import bone_prior_loss, joint_3d_loss, pose_prior_loss

RGBD_LOSS_NAMES = ("keypoint_2d", "joint_3d", "vertex", "shape_prior", "pose_prior", "aux", "heatmap", "root")


@dataclass
class RGBDLossWeights:
    """``task.loss_weights`` of the RGB-D task; 0 drops a part. Defaults: ``configs/hand_pose/synthetic_rgbd.yaml``."""

    keypoint_2d: float = 1.0
    """2D keypoint error, crop pixels (1 px ≈ 3 mm at the demo's crop scale)."""
    joint_3d: float = 1.0
    """Root-relative 3D joint error, mm."""
    vertex: float = 0.5
    """Root-relative mesh vertex error, mm."""
    shape_prior: float = 1.0
    """Bone proportions beyond the generator's variation (dimensionless log-ratio)."""
    pose_prior: float = 1.0
    """Joint angles beyond the anatomical limits, radians."""
    aux: float = 0.2
    """``joint_3d`` of the auxiliary head, mm."""
    heatmap: float = 30.0
    """KL divergence (nats) of the heatmaps from Gaussians at the labelled keypoints."""
    root: float = 0.2
    """Distance, mm, of the predicted wrist from the true one in camera coordinates (absolute position)."""


def heatmap_targets(keypoints_px: torch.Tensor, shape: tuple[int, int], stride: float, sigma_cells: float = 1.0):
    """``(B, J, h, w)`` normalised Gaussians centred on ``keypoints_px`` ``(B, J, 2)`` (cell centres ``s (j + ½)``)."""
    h, w = shape
    xs = (torch.arange(w, dtype=keypoints_px.dtype, device=keypoints_px.device) + 0.5) * stride
    ys = (torch.arange(h, dtype=keypoints_px.dtype, device=keypoints_px.device) + 0.5) * stride
    dx = (xs[None, None, None, :] - keypoints_px[..., 0, None, None]) / (sigma_cells * stride)
    dy = (ys[None, None, :, None] - keypoints_px[..., 1, None, None]) / (sigma_cells * stride)
    logits = -0.5 * (dx * dx + dy * dy)
    return torch.softmax(logits.flatten(2), dim=-1).view(*keypoints_px.shape[:2], h, w)


def heatmap_loss(logits: torch.Tensor, keypoints_px: torch.Tensor, stride: float) -> torch.Tensor:
    """Mean over joints of ``KL(target ‖ softmax(logits))``, nats; 0 when the heatmap is the target."""
    target = heatmap_targets(keypoints_px, logits.shape[-2:], stride).flatten(2)
    log_pred = torch.log_softmax(logits.float().flatten(2), dim=-1)
    # 0 · log 0 = 0 (cells the target gives no mass, even where the prediction's log-probability is -inf)
    terms = torch.where(target > 0, target * (torch.log(target.clamp_min(1e-30)) - log_pred), torch.zeros_like(target))
    return terms.sum(dim=-1).mean()


def keypoint_2d_px_loss(
    pred_px: torch.Tensor, target_px: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean Euclidean distance ``(B, J, 2)`` → scalar, pixels, over ``mask`` ``(B, J)`` (all joints when ``None``)."""
    dist = torch.linalg.vector_norm(pred_px - target_px, dim=-1)
    if mask is None:
        return dist.mean()
    return (dist * mask).sum() / mask.sum().clamp_min(1.0)


def vertex_loss(pred_mm: torch.Tensor, target_mm: torch.Tensor) -> torch.Tensor:
    """Mean vertex distance, mm, between ``(B, V, 3)`` root-relative meshes."""
    return torch.linalg.vector_norm(pred_mm - target_mm, dim=-1).mean()


def root_position_loss(pred_root_mm: torch.Tensor, target_root_mm: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance, mm, between ``(B, 3)`` camera-frame wrists; 0 for a perfect prediction."""
    return torch.linalg.vector_norm(pred_root_mm - target_root_mm, dim=-1).mean()


def rgbd_losses(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    weights: RGBDLossWeights,
    *,
    bone_tolerance: float,
    pose_margin_rad: float,
) -> dict[str, torch.Tensor]:
    """The weighted parts for a batch (``outputs``: :class:`~.image_model.RGBDHandNet`'s; ``batch``: the dataset's).

    ``batch["keypoint_mask"]`` ``(B, 21)``, when present, restricts the 2D loss (real datasets with unlabelled
    joints); the synthetic crops label every joint, hidden or not, so all enter.
    """
    pred, target = outputs["joints_mm"], batch["joints_rel_mm"]
    losses: dict[str, torch.Tensor] = {}
    if weights.keypoint_2d:
        losses["keypoint_2d"] = weights.keypoint_2d * keypoint_2d_px_loss(
            outputs["keypoints_2d_px"], batch["keypoints_2d_px"], batch.get("keypoint_mask")
        )
    if weights.joint_3d:
        losses["joint_3d"] = weights.joint_3d * joint_3d_loss(pred, target)
    if weights.vertex:
        losses["vertex"] = weights.vertex * vertex_loss(outputs["vertices_mm"], batch["vertices_rel_mm"])
    if weights.shape_prior:
        losses["shape_prior"] = weights.shape_prior * bone_prior_loss(pred, bone_tolerance)
    if weights.pose_prior:
        losses["pose_prior"] = weights.pose_prior * pose_prior_loss(pred, pose_margin_rad)
    if weights.aux:
        losses["aux"] = weights.aux * joint_3d_loss(outputs["aux_joints_mm"], target)
    if weights.heatmap:
        stride = batch["rgb"].shape[-1] / outputs["heatmap_logits"].shape[-1]
        losses["heatmap"] = weights.heatmap * heatmap_loss(outputs["heatmap_logits"], batch["keypoints_2d_px"], stride)
    if weights.root:
        losses["root"] = weights.root * root_position_loss(outputs["root_cam_mm"], batch["root_cam_mm"])
    return losses
