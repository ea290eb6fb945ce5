"""Augmentation keeps image, depth, 2D/3D labels and intrinsics consistent, and is a pure function of its key."""

import numpy as np
import pytest
import torch

from trainwell.tasks.hand_pose.augment import AugmentConfig, augment_batch, augment_keys
from trainwell.tasks.hand_pose.render import RenderConfig, render_rgbd, surface_tolerance_mm
from trainwell.tasks.hand_pose.synthetic import SyntheticHandsConfig

CFG = RenderConfig(crop_size_px=48, edge_dropout=0.0)
AUG = AugmentConfig(rotation_deg=180.0, scale=0.15, shift=0.1, color=0.2)


@pytest.fixture(scope="module")
def pair() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    crops = render_rgbd(SyntheticHandsConfig(), CFG, 1, "train", np.arange(16))
    return crops, augment_batch(crops, AUG, augment_keys(1, 5, np.arange(16)))


def test_projected_joints_land_on_augmented_labels(pair) -> None:
    _, aug = pair
    joints, k = aug["joints_cam_mm"].double(), aug["intrinsics"].double()
    uvw = torch.einsum("bij,bnj->bni", k, joints)
    error = (uvw[..., :2] / uvw[..., 2:] - aug["keypoints_2d_px"].double()).norm(dim=-1)
    assert float(error.max()) < 0.5
    # Rotation about the optical axis keeps depth; root-relative joints stay root-relative.
    assert torch.allclose(aug["joints_cam_mm"][..., 2], pair[0]["joints_cam_mm"][..., 2])
    assert float(aug["joints_rel_mm"][:, 0].abs().max()) == 0.0


def test_depth_under_visible_augmented_keypoints_matches_joint_depth(pair) -> None:
    crops, aug = pair
    size = CFG.crop_size_px
    kp, depth, joints = aug["keypoints_2d_px"], aug["depth_mm"][:, 0], aug["joints_cam_mm"]
    row, col = kp[..., 1].floor().long().clamp(0, size - 1), kp[..., 0].floor().long().clamp(0, size - 1)
    under = depth[torch.arange(16)[:, None], row, col]
    visible = (aug["visibility"] > 0) & (under > 0)
    tolerance = surface_tolerance_mm(joints[..., 2], aug["hand_scale"], CFG)
    gap = joints[..., 2] - under
    # Nearest resampling can pick the neighbouring pixel at a silhouette: allow a few per cent there.
    ok = (gap > -10.0) & (gap <= tolerance)
    assert float(ok[visible].float().mean()) > 0.95
    assert int(visible.sum()) > 0.5 * int((crops["visibility"] > 0).sum())
    # The augmentation changed the geometry (rotation) and the colours.
    assert float((aug["keypoints_2d_px"] - crops["keypoints_2d_px"]).abs().max()) > 5.0


def test_keys_are_pure_and_epoch_dependent() -> None:
    assert augment_keys(0, 3, np.array([5, 6])) == augment_keys(0, 3, np.array([5, 6]))
    assert augment_keys(0, 3, np.array([5]))[0] != augment_keys(0, 4, np.array([5]))[0]
    assert augment_keys(0, np.array([3, 4]), np.array([5, 5])) == [
        augment_keys(0, 3, np.array([5]))[0],
        augment_keys(0, 4, np.array([5]))[0],
    ]


def test_identity_augmentation_changes_nothing_geometric(pair) -> None:
    crops, _ = pair
    same = augment_batch(crops, AugmentConfig(0.0, 0.0, 0.0, 0.0), augment_keys(0, 0, np.arange(16)))
    assert torch.allclose(same["keypoints_2d_px"], crops["keypoints_2d_px"], atol=1e-4)
    assert torch.equal(same["depth_mm"], crops["depth_mm"])  # nearest sampling at the same pixel centres
    assert torch.allclose(same["rgb"], crops["rgb"], atol=1e-5)
