"""The hand-pose loss: named components, each exactly 0 for a perfect prediction.

Components (all means over the batch; none leaves the device — no ``.item()``, no host sync):

* ``joint_3d``: mean Euclidean distance, in mm, between predicted and true root-relative joints
  (the 20 non-root joints; the root is 0 in both by construction). An L2 *distance*, not squared:
  it is the MPJPE itself, so its value reads as an error in millimetres.
* ``keypoint_2d``: the predicted joints, placed at the true camera-space root, projected with the
  sample's intrinsics and compared with the observed keypoints at visible joints; Euclidean distance
  in *normalised image units* (pixels / focal length), so it is the same for any camera. A 1 px error
  at f = 500 px is 0.002; multiply by the depth in mm for an approximate lateral error in mm.
* ``bone_prior``: scale-free bone proportions. Each predicted bone length is divided by the sum of all
  20, and its log-ratio to the template proportion may deviate by up to ``log((1 + δ) / (1 − δ))``
  (δ = the generator's per-bone variation, so every generated hand scores 0); the mean excess is
  the penalty (dimensionless).
* ``pose_prior``: joint angles of the predicted hand (:func:`skeleton.joint_angles`) outside the
  anatomical limits widened by a margin, plus DIP flexion straying from 2/3 of PIP flexion by more than
  the generator's tolerance plus the margin; mean excess in radians.
* ``aux``: ``joint_3d`` of the auxiliary (intermediate) head — deep supervision.

The priors need no labels; they are 0 for any plausible hand, and positive only for implausible ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from trainwell.tasks.hand_pose import skeleton as S
from trainwell.tasks.hand_pose.synthetic import project_to_pixels

LOSS_NAMES = ("joint_3d", "keypoint_2d", "bone_prior", "pose_prior", "aux")


@dataclass
class LossWeights:
    """``task.loss_weights``: the weight of each named component; 0 drops the component.

    The defaults are the demo's (``configs/hand_pose/synthetic_lifting.yaml``).
    """

    joint_3d: float = 1.0
    """Root-relative 3D joint error (mm)."""
    keypoint_2d: float = 100.0
    """Reprojection error in normalised image units (px / focal): 100 turns 0.01 (~5 px) into 1, like 1 mm."""
    bone_prior: float = 1.0
    """Excess deviation of bone proportions from the template (dimensionless log-ratio)."""
    pose_prior: float = 1.0
    """Excess of joint angles beyond the anatomical limits (radians)."""
    aux: float = 0.5
    """``joint_3d`` of the intermediate head (mm)."""


def _non_root(joints: torch.Tensor) -> torch.Tensor:
    keep = [j for j in range(S.NUM_JOINTS) if j != S.ROOT]
    return joints[:, keep]


def per_joint_error_mm(pred_rel_mm: torch.Tensor, target_rel_mm: torch.Tensor) -> torch.Tensor:
    """``(B, 21)`` Euclidean distance between predicted and true joints, mm."""
    return torch.linalg.vector_norm(pred_rel_mm - target_rel_mm, dim=-1)  # gradient 0 (not NaN) at 0


def joint_3d_loss(pred_rel_mm: torch.Tensor, target_rel_mm: torch.Tensor) -> torch.Tensor:
    """Mean per-joint distance (mm) over the non-root joints; inputs ``(B, 21, 3)`` root-relative."""
    return _non_root(per_joint_error_mm(pred_rel_mm, target_rel_mm)).mean()


def reprojection_errors(
    pred_rel_mm: torch.Tensor, root_cam_mm: torch.Tensor, intrinsics: torch.Tensor, keypoints_2d_px: torch.Tensor
) -> torch.Tensor:
    """``(B, 21)`` distance between projected predictions and observations, in px / focal length.

    Args:
        pred_rel_mm: ``(B, 21, 3)`` predicted root-relative joints, mm.
        root_cam_mm: ``(B, 3)`` true root in the camera frame, mm (where the prediction is placed).
        intrinsics: ``(B, 3, 3)`` camera matrices, px.
        keypoints_2d_px: ``(B, 21, 2)`` observed keypoints, px.
    """
    # pred + root in this order and the same projection as the generator: a perfect prediction of a
    # noise-free sample reproduces the stored keypoints bit for bit.
    projected = project_to_pixels(pred_rel_mm + root_cam_mm.unsqueeze(1), intrinsics)
    focal = torch.stack((intrinsics[:, 0, 0], intrinsics[:, 1, 1]), dim=-1).unsqueeze(1)  # (B, 1, 2)
    return torch.linalg.vector_norm((projected - keypoints_2d_px) / focal, dim=-1)


def keypoint_2d_loss(
    pred_rel_mm: torch.Tensor,
    root_cam_mm: torch.Tensor,
    intrinsics: torch.Tensor,
    keypoints_2d_px: torch.Tensor,
    visibility: torch.Tensor,
) -> torch.Tensor:
    """Mean reprojection error over the visible joints, px / focal length (see :func:`reprojection_errors`)."""
    errors = reprojection_errors(pred_rel_mm, root_cam_mm, intrinsics, keypoints_2d_px)
    return (errors * visibility).sum() / visibility.sum().clamp_min(1.0)


def bone_tolerance(bone_length_jitter: float) -> float:
    """Largest |log(proportion / template proportion)| of a hand whose bones vary by ``± bone_length_jitter``."""
    return math.log((1.0 + bone_length_jitter) / (1.0 - bone_length_jitter))


def bone_prior_loss(joints_mm: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Mean excess of ``|log(bone / Σ bones) − log(template / Σ template)|`` over ``tolerance``.

    Args:
        joints_mm: ``(B, 21, 3)`` predicted joints (any origin; the ratio makes the unit irrelevant).
        tolerance: allowed log-ratio deviation (:func:`bone_tolerance`).
    """
    lengths = S.bone_lengths(joints_mm).clamp_min(1e-6)  # (B, 20)
    template = S.template_bone_lengths_mm(joints_mm.dtype, joints_mm.device)
    log_ratio = torch.log(lengths / lengths.sum(dim=-1, keepdim=True)) - torch.log(template / template.sum())
    return torch.relu(log_ratio.abs() - tolerance).mean()


def pose_violations(joints_mm: torch.Tensor, margin_rad: float) -> torch.Tensor:
    """``(B, 34)`` radians by which each angle leaves its range (30 limits + 4 DIP–PIP couplings), ≥ 0."""
    flexion, abduction = S.joint_angles(joints_mm)  # (B, 5, 3) each
    limits = S.angle_limits_rad(joints_mm.dtype, joints_mm.device)  # (2, 5, 3, 2)
    angles = torch.stack((flexion, abduction), dim=1)  # (B, 2, 5, 3)
    below = torch.relu(limits[..., 0] - margin_rad - angles)
    above = torch.relu(angles - limits[..., 1] - margin_rad)
    coupling = flexion[:, 1:, 2] - S.DIP_PIP_RATIO * flexion[:, 1:, 1]  # fingers only, (B, 4)
    coupling_excess = torch.relu(coupling.abs() - math.radians(S.DIP_COUPLING_TOLERANCE_DEG) - margin_rad)
    return torch.cat(((below + above).flatten(1), coupling_excess), dim=1)


def pose_prior_loss(joints_mm: torch.Tensor, margin_rad: float) -> torch.Tensor:
    """Mean of :func:`pose_violations`, radians."""
    return pose_violations(joints_mm, margin_rad).mean()


def hand_pose_losses(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    weights: LossWeights,
    *,
    bone_tolerance: float,
    pose_margin_rad: float,
) -> dict[str, torch.Tensor]:
    """The weighted components for a batch; components with weight 0 are not computed.

    Args:
        outputs: the model's ``{"joints_mm", "aux_joints_mm"}``, each ``(B, 21, 3)`` root-relative mm.
        batch: a batch of :class:`~trainwell.tasks.hand_pose.datasets.SyntheticHandPoseDataset` samples.
        weights: the component weights.
        bone_tolerance: see :func:`bone_prior_loss`.
        pose_margin_rad: see :func:`pose_prior_loss`.
    """
    pred, target = outputs["joints_mm"], batch["joints_rel_mm"]
    losses: dict[str, torch.Tensor] = {}
    if weights.joint_3d:
        losses["joint_3d"] = weights.joint_3d * joint_3d_loss(pred, target)
    if weights.keypoint_2d:
        losses["keypoint_2d"] = weights.keypoint_2d * keypoint_2d_loss(
            pred, batch["root_cam_mm"], batch["intrinsics"], batch["keypoints_2d_px"], batch["visibility"]
        )
    if weights.bone_prior:
        losses["bone_prior"] = weights.bone_prior * bone_prior_loss(pred, bone_tolerance)
    if weights.pose_prior:
        losses["pose_prior"] = weights.pose_prior * pose_prior_loss(pred, pose_margin_rad)
    if weights.aux:
        losses["aux"] = weights.aux * joint_3d_loss(outputs["aux_joints_mm"], target)
    return losses
