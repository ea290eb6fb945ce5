"""Hand-pose batch checks for the training doctor: pure functions over a batch dict.

``HandPoseTask.check_batch`` runs :func:`check_hand_batch` on the first training batches. Each check
catches one mistake that trains "fine" but wrong:

* root-relative targets that are not centred on the root (``joints_rel_mm[:, ROOT]`` must be 0);
* 3D joints in metres (or centimetres) instead of millimetres — judged from bone lengths, which do not
  depend on where the hand is;
* 2D keypoints outside the image (normalised coordinates, swapped axes, a wrong image size).

Batch keys (shapes, units): ``joints_rel_mm`` / ``joints_cam_mm`` ``(B, 21, 3)`` mm, ``keypoints_2d_px``
``(B, 21, 2)`` px, ``visibility`` ``(B, 21)`` in {0, 1}.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from trainwell.doctor import Finding
from trainwell.tasks.hand_pose import skeleton as S

BONE_RANGE_MM = (10.0, 150.0)
"""Plausible mean bone length of a hand (template: 20–70 mm per bone, mean ≈ 39 mm)."""
ROOT_TOLERANCE_MM = 1.0
"""Largest |root| of root-relative targets (float32 rounding is far below this)."""
OUTSIDE_IMAGE_SHARE = 0.01
"""Share of visible keypoints allowed outside the image (a pixel of slack on each side)."""


def check_root_centred(joints_rel_mm: torch.Tensor, *, key: str = "joints_rel_mm") -> Finding | None:
    """Root-relative joints ``(B, 21, 3)`` must have the root (wrist) at the origin."""
    root = joints_rel_mm[:, S.ROOT].double()
    offset = root.norm(dim=-1)
    worst = float(offset.max())
    if worst <= ROOT_TOLERANCE_MM:
        return None
    mean = root.mean(dim=0).tolist()
    off_share = float((offset > ROOT_TOLERANCE_MM).double().mean())
    return Finding(
        "hand_pose.not_root_centred",
        "error",
        "Root-relative targets are not centred on the root joint",
        f"'{key}'[:, {S.ROOT}] (the wrist) is up to {worst:.1f} mm from the origin in {off_share:.0%} of the "
        f"samples; mean position ({mean[0]:.1f}, {mean[1]:.1f}, {mean[2]:.1f}) mm (tolerance {ROOT_TOLERANCE_MM} mm)",
        f"Subtract the root: {key} = joints_cam_mm - joints_cam_mm[:, {S.ROOT}:{S.ROOT + 1}]. Centring on the "
        "centroid or another joint, or forgetting to centre after augmentation, makes MPJPE and the loss "
        "measure the wrong thing.",
    )


def check_units_mm(joints_mm: torch.Tensor, *, key: str) -> Finding | None:
    """Joints ``(B, 21, 3)`` claimed in millimetres must have hand-sized bones (a few cm each)."""
    lengths = S.bone_lengths(joints_mm.double())  # (B, 20)
    mean_mm = float(lengths.mean())
    low, high = BONE_RANGE_MM
    if low <= mean_mm <= high:
        return None
    if 0.0 < mean_mm < 0.5:
        guess = "metres (×1000 to get mm)"
    elif 0.5 <= mean_mm < low:
        guess = "centimetres (×10 to get mm)"
    else:
        guess = "a unit or scale that is not millimetres"
    return Finding(
        "hand_pose.units_not_mm",
        "error",
        f"'{key}' does not look like millimetres",
        f"mean bone length {mean_mm:.4g} (expected {low:g}–{high:g} mm for a hand; the template's mean is "
        f"{float(S.template_bone_lengths_mm().mean()):.0f} mm); the values look like {guess}",
        "Convert the 3D annotations to millimetres where the dataset is read (FreiHAND and HO3D store metres), "
        "together with root_cam_mm; the *_mm keys, the losses and MPJPE all assume mm.",
    )


def check_keypoints_in_image(
    keypoints_2d_px: torch.Tensor, visibility: torch.Tensor | None, image_size_px: tuple[int, int]
) -> Finding | None:
    """Visible 2D keypoints ``(B, 21, 2)`` must lie inside the ``(width, height)`` image."""
    width, height = image_size_px
    visible = torch.ones(keypoints_2d_px.shape[:2], dtype=torch.bool) if visibility is None else visibility > 0
    points = keypoints_2d_px.double()[visible]
    if points.numel() == 0:
        return None
    u, v = points[:, 0], points[:, 1]
    outside = (u < -1) | (u > width + 1) | (v < -1) | (v > height + 1)
    share = float(outside.double().mean())
    normalised = float(points.abs().max()) <= 1.5 and max(width, height) > 8
    if share <= OUTSIDE_IMAGE_SHARE and not normalised:
        return None
    hint = (
        "the keypoints look normalised to [0, 1] or [-1, 1]: multiply by the image size"
        if normalised
        else "check the image size, the axis order (u = column, v = row) and crop/resize transforms"
    )
    return Finding(
        "hand_pose.keypoints_outside_image",
        "warning",
        "Visible 2D keypoints lie outside the image",
        f"{share:.1%} of {points.shape[0]} visible keypoints fall outside the {width}×{height} px image "
        f"(u in [{float(u.min()):.4g}, {float(u.max()):.4g}], v in [{float(v.min()):.4g}, {float(v.max()):.4g}])",
        f"2D keypoints must be in pixels of the input image; {hint}. Mark keypoints outside the image as not visible.",
    )


def check_hand_batch(batch: Mapping[str, torch.Tensor], image_size_px: tuple[int, int]) -> list[Finding]:
    """Every hand-pose check that applies to the keys present in ``batch``."""
    found: list[Finding | None] = []
    if "joints_rel_mm" in batch:
        found.append(check_root_centred(batch["joints_rel_mm"]))
    units = [check_units_mm(batch[k], key=k) for k in ("joints_rel_mm", "joints_cam_mm") if k in batch]
    found.append(next((f for f in units if f is not None), None))  # one units finding, naming the first key
    if "keypoints_2d_px" in batch:
        found.append(check_keypoints_in_image(batch["keypoints_2d_px"], batch.get("visibility"), image_size_px))
    return [f for f in found if f is not None]
