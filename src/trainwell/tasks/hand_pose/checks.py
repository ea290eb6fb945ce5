"""Hand-pose batch checks for the training doctor: pure functions over a batch dict.

``HandPoseTask.check_batch`` runs :func:`check_hand_batch` on the first training batches. Each check
catches one mistake that trains "fine" but wrong:

* root-relative targets that are not centred on the root (``joints_rel_mm[:, ROOT]`` must be 0);
* 3D joints in metres (or centimetres) instead of millimetres — judged from bone lengths, which do not
  depend on where the hand is;
* 2D keypoints outside the image (normalised coordinates, swapped axes, a wrong image size);
* 3D labels that do not project onto the 2D inputs — mirrored (left/right), inputs transformed by an augmentation
  that left the labels alone, or labels that belong to other samples (shuffled);
* a joint order other than this pack's (OpenPose / FreiHAND) — judged from the bones' proportions.

Batch keys (shapes, units): ``joints_rel_mm`` / ``joints_cam_mm`` ``(B, 21, 3)`` mm, ``keypoints_2d_px``
``(B, 21, 2)`` px, ``visibility`` ``(B, 21)`` in {0, 1}.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from trainwell.doctor import Finding
from trainwell.tasks.hand_pose import skeleton as S
from trainwell.tasks.hand_pose.synthetic import project_to_pixels

BONE_RANGE_MM = (10.0, 150.0)
"""Plausible mean bone length of a hand (template: 20–70 mm per bone, mean ≈ 39 mm)."""
ROOT_TOLERANCE_MM = 1.0
"""Largest |root| of root-relative targets (float32 rounding is far below this)."""
OUTSIDE_IMAGE_SHARE = 0.01
"""Share of visible keypoints allowed outside the image (a pixel of slack on each side)."""
REPROJECTION_TOLERANCE = 0.2
"""Largest median distance between the projected 3D labels and the 2D inputs, as a fraction of the hand's size in
the image (the diagonal of its visible keypoints' box). In a lifting dataset the 2D keypoints *are* the 3D joints
seen by the camera, plus annotation or detector noise of a few percent of the hand's size; a fifth of the hand is
far beyond that noise and far below what a mirrored hand or another sample's label gives (about half to several
hand sizes). Relative, so it holds for any image resolution and hand distance."""
MIN_ROTATION_DEG = 10.0
"""A per-sample 2D rotation smaller than this is not called an augmentation (annotation noise can fit a few °)."""
BONE_PROPORTION_RANGE = (0.5, 2.0)
"""Range of each bone's length relative to the template's, after dividing both by their mean bone (the hand's
scale cancels). Human hands vary by about ±20 % in proportions; a bone twice or half its template length means the
two joints it connects are not parent and child — the joints are in another order (MANO / HO3D vs OpenPose)."""


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


def _relative_reprojection(projected: torch.Tensor, keypoints: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """``(B,)`` median over visible joints of |projected − keypoints| / the hand's size in the image (NaN if none)."""
    error = torch.linalg.vector_norm(projected - keypoints, dim=-1)  # (B, J) px
    big = torch.tensor(float("inf"), dtype=keypoints.dtype)
    lo = torch.where(visible.unsqueeze(-1), keypoints, big).amin(dim=1)
    hi = torch.where(visible.unsqueeze(-1), keypoints, -big).amax(dim=1)
    size = torch.linalg.vector_norm(hi - lo, dim=-1).clamp_min(1.0)  # (B,) px
    error = torch.where(visible, error, torch.tensor(float("nan"), dtype=error.dtype))
    return error.nanmedian(dim=1).values / size


def _rotation_aligned(projected: torch.Tensor, keypoints: torch.Tensor, visible: torch.Tensor) -> tuple:
    """The 2D labels rotated (per sample, about their visible centroid, plus a shift) onto the keypoints:
    ``(aligned (B, J, 2), angle_deg (B,))``. A closed-form 2D Procrustes fit without scale."""
    w = visible.double().unsqueeze(-1)
    count = w.sum(dim=1).clamp_min(1.0)
    mp, mk = (projected * w).sum(dim=1) / count, (keypoints * w).sum(dim=1) / count
    p, k = (projected - mp.unsqueeze(1)) * w, (keypoints - mk.unsqueeze(1)) * w
    dot = (p * k).sum(dim=(1, 2))
    crs = (p[..., 0] * k[..., 1] - p[..., 1] * k[..., 0]).sum(dim=1)
    angle = torch.atan2(crs, dot)
    c, s = torch.cos(angle).view(-1, 1), torch.sin(angle).view(-1, 1)
    x, y = projected[..., 0] - mp[:, :1], projected[..., 1] - mp[:, 1:]
    aligned = torch.stack((c * x - s * y, s * x + c * y), dim=-1) + mk.unsqueeze(1)
    return aligned, torch.rad2deg(angle)


def _mirrored_error(
    rel: torch.Tensor, root: torch.Tensor, kp: torch.Tensor, vis: torch.Tensor, k: torch.Tensor
) -> float:
    """Median relative reprojection error of the labels mirrored in x about the root (the other hand): a small one
    names a left/right flip applied to only one side of the sample."""
    mirrored = rel * torch.tensor([-1.0, 1.0, 1.0], dtype=rel.dtype)
    return float(_relative_reprojection(project_to_pixels(mirrored + root.unsqueeze(1), k), kp, vis).nanmedian())


def _labels_not_projecting(evidence: str, *, mirrored_fits: bool, transformed: bool, turned_deg: float) -> Finding:
    """The finding for labels that do not land on the inputs, naming the explanation that fits: mirrored labels
    first, then inputs transformed by an augmentation, else labels that belong to other inputs."""
    if mirrored_fits:
        return Finding(
            "hand_pose.labels_mirrored",
            "error",
            "The 3D labels are mirrored (left/right) against the 2D inputs",
            evidence,
            "The labels are the other hand: a left/right flip was applied to the image/keypoints but not to the 3D "
            "joints (or the reverse), or left hands were mirrored in only one of them. Flip both together "
            "(x → −x in the camera frame and u → width − u), or neither.",
        )
    if transformed:
        return Finding(
            "hand_pose.inputs_transformed",
            "error",
            "The 2D inputs are rotated against the 3D labels: an augmentation changed the input but not the label",
            f"{evidence}; the inputs are rotated (and/or shifted) by a median {turned_deg:.0f}° per sample",
            "Apply the same transform to the labels: rotating the image/keypoints in the image plane rotates the "
            "camera-frame 3D joints about the optical axis by the same angle (and changes root_cam_mm likewise).",
        )
    return Finding(
        "hand_pose.labels_mismatch",
        "error",
        "The 3D labels do not belong to the 2D inputs",
        evidence + "; neither mirroring nor a rotation explains it",
        "Each sample's label must be the one of its input: check for a shuffle or sort applied to inputs or labels "
        "alone, an off-by-one between two index lists, or labels read for a different frame or camera.",
    )


def check_labels_project(
    joints_rel_mm: torch.Tensor,
    root_cam_mm: torch.Tensor,
    keypoints_2d_px: torch.Tensor,
    visibility: torch.Tensor,
    intrinsics: torch.Tensor,
) -> Finding | None:
    """The 3D labels ``(B, 21, 3)`` placed at their root and projected must land on the 2D inputs ``(B, 21, 2)``.

    When they do not, the candidate explanations are tried on the same batch and the one that fits is named:
    mirrored labels (x → −x about the root fits), inputs rotated by an augmentation (a per-sample 2D rotation
    fits), else labels that belong to other inputs. Bound: :data:`REPROJECTION_TOLERANCE`.
    """
    visible = visibility > 0
    keep = visible.sum(dim=1) >= 3
    if int(keep.sum()) < 2:
        return None
    rel, root = joints_rel_mm[keep].double(), root_cam_mm[keep].double()
    kp, vis, k = keypoints_2d_px[keep].double(), visible[keep], intrinsics[keep].double()
    projected = project_to_pixels(rel + root.unsqueeze(1), k)
    error = float(_relative_reprojection(projected, kp, vis).nanmedian())
    aligned, angle = _rotation_aligned(projected, kp, vis)
    error_rotated = float(_relative_reprojection(aligned, kp, vis).nanmedian())
    turned = float(angle.abs().median())
    # Within the tolerance, a transform still counts when one rotation per sample explains the inputs far better
    # than the labels as given (4× less error) and by a real angle: noise is neither systematic nor rotational.
    rotated = turned >= MIN_ROTATION_DEG and error_rotated <= error / 4
    if error <= REPROJECTION_TOLERANCE and not rotated:
        return None
    error_mirrored = _mirrored_error(rel, root, kp, vis, k)
    fits = REPROJECTION_TOLERANCE / 4  # an explanation must fit like a healthy batch does, not merely better
    evidence = (
        f"rule: median |project(joints_rel_mm + root_cam_mm) − keypoints_2d_px| over visible joints ≤ "
        f"{REPROJECTION_TOLERANCE:g} of the hand's size in the image; it is {error:.2f} in a batch of "
        f"{int(keep.sum())} samples (with the labels mirrored in x: {error_mirrored:.2f}; after the best "
        f"per-sample 2D rotation: {error_rotated:.2f})"
    )
    return _labels_not_projecting(
        evidence, mirrored_fits=error_mirrored <= fits, transformed=rotated or error_rotated <= fits, turned_deg=turned
    )


def check_joint_order(joints_rel_mm: torch.Tensor) -> Finding | None:
    """The bones' proportions ``(B, 21, 3)`` must be a hand's in this pack's joint order (OpenPose / FreiHAND)."""
    lengths = S.bone_lengths(joints_rel_mm.double())  # (B, 20)
    template = S.template_bone_lengths_mm(torch.float64)
    ratio = (lengths / lengths.mean(dim=1, keepdim=True).clamp_min(1e-9)) / (template / template.mean())
    median = ratio.median(dim=0).values  # (20,)
    low, high = BONE_PROPORTION_RANGE
    bad = [b for b in range(len(S.BONES)) if not low <= float(median[b]) <= high]
    if not bad:
        return None
    shown = ", ".join(
        f"{S.JOINT_NAMES[S.BONES[b][0]]}→{S.JOINT_NAMES[S.BONES[b][1]]} ×{float(median[b]):.2f}" for b in bad[:5]
    )
    return Finding(
        "hand_pose.joint_order",
        "error",
        "The joints are not in this pack's order (OpenPose / FreiHAND): bones connect the wrong joints",
        f"rule: each bone's length / the template's (both divided by their mean bone) within {low:g}–{high:g}; "
        f"{len(bad)} of {len(S.BONES)} bones are outside (median over {lengths.shape[0]} samples): {shown}",
        "Reorder the joints where the dataset is read (HO3D / MANO order → OpenPose order: wrist, thumb 1–4, "
        "index 5–8, middle 9–12, ring 13–16, pinky 17–20), for the 2D keypoints, visibility and 3D joints alike.",
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
    if "joints_rel_mm" in batch and not any(units):  # proportions are judged only on hand-sized bones
        found.append(check_joint_order(batch["joints_rel_mm"]))
    keys = ("joints_rel_mm", "root_cam_mm", "keypoints_2d_px", "visibility", "intrinsics")
    if all(k in batch for k in keys) and not any(found):
        # Only when every simpler check passed: a unit slip or an uncentred root also breaks the projection.
        found.append(check_labels_project(*(batch[k] for k in keys)))
    return [f for f in found if f is not None]
