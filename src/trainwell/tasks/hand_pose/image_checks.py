"""Doctor checks for RGB-D batches: RGB in [0, 1], depth in millimetres, depth that agrees with the 3D labels.

Each catches a mistake that trains "fine" but wrong:

* RGB left in 0–255 (not normalised; the network's fixed normalisation assumes [0, 1]) or already standardised
  (mean/std applied twice);
* depth in metres (valid values below 10) or in another scale (a raw sensor's 0.1 mm or 1/8 mm units, valid
  values far beyond 5 m), or in a different frame than the joints: the median gap between the depth under the
  visible keypoints and their joints' depth exceeds a hand's thickness.

Batch keys: ``rgb (B, 3, H, W)``, ``depth_mm (B, 1, H, W)`` (0 = no return), ``keypoints_2d_px (B, 21, 2)``,
``visibility (B, 21)``, ``joints_cam_mm (B, 21, 3)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from trainwell.doctor import Finding

DEPTH_RANGE_MM = (50.0, 5000.0)
"""Median valid depth of a hand crop from a hand-held or desk camera, mm."""
DEPTH_AGREEMENT_MM = 60.0
"""Largest median |depth under a visible keypoint − its joint's depth| (a hand is ~30 mm thick; noise)."""


def check_rgb_range(rgb: torch.Tensor) -> Finding | None:
    """``rgb`` ``(B, 3, H, W)`` must be floats in [0, 1]."""
    lo, hi = float(rgb.min()), float(rgb.max())
    if lo >= -0.01 and hi <= 1.01:
        return None
    if hi > 1.5 and lo >= 0:
        what, fix = "looks like 0–255 pixel values (not normalised)", "divide by 255 where the image is read"
    else:
        what = "has negative values: it looks standardised already (mean/std)"
        fix = "pass RGB in [0, 1]; the network applies its own normalisation"
    return Finding(
        "hand_pose.rgb_range",
        "error",
        "RGB input is not in [0, 1]",
        f"'rgb' spans [{lo:.4g}, {hi:.4g}]; it {what}",
        f"{fix.capitalize()}. A wrong input range trains, but every filter is off by that factor.",
    )


def check_depth_scale(depth_mm: torch.Tensor) -> Finding | None:
    """Valid (non-zero) ``depth_mm`` values must look like millimetres."""
    valid = depth_mm[depth_mm > 0]
    if valid.numel() == 0:
        return Finding(
            "hand_pose.depth_empty",
            "error",
            "The depth crops have no valid pixel",
            f"all {depth_mm.numel()} depth values are 0 (no return)",
            "Check the depth decoding (HO3D's two-channel PNG) and that the crop lies on the depth image.",
        )
    median = float(valid.double().median())
    lo, hi = DEPTH_RANGE_MM
    if lo <= median <= hi:
        return None
    guess = "metres (×1000 to get mm)" if median < 10 else "a unit that is not millimetres"
    return Finding(
        "hand_pose.depth_not_mm",
        "error",
        "'depth_mm' does not look like millimetres",
        f"median valid depth {median:.4g} (expected {lo:g}–{hi:g} mm for a hand); the values look like {guess}",
        "Convert depth to millimetres where it is read (HO3D decodes to metres; many sensors store 0.1 mm or "
        "1/8 mm units); 0 must mean 'no return'.",
    )


def check_depth_matches_joints(batch: Mapping[str, torch.Tensor]) -> Finding | None:
    """The depth under visible keypoints must agree with the joints' depth (same frame, same unit, same crop)."""
    depth, keypoints, joints = batch["depth_mm"], batch["keypoints_2d_px"], batch["joints_cam_mm"]
    vis = batch.get("visibility", torch.ones(keypoints.shape[:2]))
    b, _, h, w = depth.shape
    col, row = keypoints[..., 0].floor().long(), keypoints[..., 1].floor().long()
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h) & (vis > 0)
    flat = depth.reshape(b, -1)
    under = torch.gather(flat, 1, (row.clamp(0, h - 1) * w + col.clamp(0, w - 1)))
    use = inside & (under > 0)
    if int(use.sum()) < 10:
        return None
    gap = (under - joints[..., 2]).abs()[use].double()
    median = float(gap.median())
    if median <= DEPTH_AGREEMENT_MM:
        return None
    return Finding(
        "hand_pose.depth_joint_mismatch",
        "warning",
        "Depth under the visible keypoints disagrees with the joints' depth",
        f"median |depth − joint z| = {median:.1f} mm over {int(use.sum())} visible keypoints (expected ≤ "
        f"{DEPTH_AGREEMENT_MM:g} mm: a hand's thickness plus noise)",
        "Check that depth and joints share the camera frame and unit (mm), that the depth crop uses the same box "
        "as the keypoints, and that augmentation warped the depth with the image.",
    )


def check_image_batch(batch: Mapping[str, torch.Tensor]) -> list[Finding]:
    """Every image check that applies to the keys present in ``batch``."""
    found: list[Finding | None] = []
    if "rgb" in batch:
        found.append(check_rgb_range(batch["rgb"]))
    if "depth_mm" in batch:
        depth = check_depth_scale(batch["depth_mm"])
        found.append(depth)
        if depth is None and {"keypoints_2d_px", "joints_cam_mm"} <= batch.keys():
            found.append(check_depth_matches_joints(batch))
    return [f for f in found if f is not None]
