"""Rendered RGB-D crops: determinism, and labels consistent with the images to the pixel."""

import numpy as np
import pytest
import torch

from trainwell.tasks.hand_pose.render import RenderConfig, cast_capsules, render_rgbd, surface_tolerance_mm
from trainwell.tasks.hand_pose.surface import NUM_VERTICES, hand_capsules
from trainwell.tasks.hand_pose.synthetic import SyntheticHandsConfig

HANDS, CFG = SyntheticHandsConfig(), RenderConfig(crop_size_px=32)


@pytest.fixture(scope="module")
def crops() -> dict[str, torch.Tensor]:
    return render_rgbd(HANDS, CFG, 3, "train", np.arange(12))


def test_pure_function_of_seed_split_index(crops: dict[str, torch.Tensor]) -> None:
    again = render_rgbd(HANDS, CFG, 3, "train", np.array([11, 4, 7]))  # other batch, other order
    for key, value in again.items():
        assert torch.equal(value, crops[key][[11, 4, 7]]), key
    other_split = render_rgbd(HANDS, CFG, 3, "val", np.array([4]))
    assert not torch.equal(other_split["rgb"][0], crops["rgb"][4])


def test_shapes_and_ranges(crops: dict[str, torch.Tensor]) -> None:
    assert crops["rgb"].shape == (12, 3, 32, 32) and crops["depth_mm"].shape == (12, 1, 32, 32)
    assert crops["vertices_rel_mm"].shape == (12, NUM_VERTICES, 3)
    assert float(crops["rgb"].min()) >= 0.0 and float(crops["rgb"].max()) <= 1.0
    valid = crops["depth_mm"][crops["depth_mm"] > 0]
    assert 200 < float(valid.median()) < 1500  # millimetres
    assert torch.equal(valid, valid.round())  # the sensor's 1 mm quantisation
    assert 0.2 < float(crops["visibility"].mean()) < 1.0


def test_projected_joints_are_the_2d_labels(crops: dict[str, torch.Tensor]) -> None:
    # Independent pinhole projection in float64 with the crop's intrinsics.
    joints, k = crops["joints_cam_mm"].double(), crops["intrinsics"].double()
    uvw = torch.einsum("bij,bnj->bni", k, joints)
    projected = uvw[..., :2] / uvw[..., 2:]
    assert torch.allclose(projected, crops["keypoints_2d_px"].double(), atol=1e-3)
    # The crop frames the hand: every joint inside it.
    assert float(projected.min()) >= 0 and float(projected.max()) < 32


def test_depth_under_visible_keypoints_is_the_joint_depth(crops: dict[str, torch.Tensor]) -> None:
    kp, depth, joints = crops["keypoints_2d_px"], crops["depth_mm"][:, 0], crops["joints_cam_mm"]
    row, col = kp[..., 1].floor().long(), kp[..., 0].floor().long()
    under = depth[torch.arange(12)[:, None], row, col]
    tolerance = surface_tolerance_mm(joints[..., 2], crops["hand_scale"], CFG)
    visible, returned = crops["visibility"] > 0, under > 0
    gap = joints[..., 2] - under  # the surface is in front of the joint, by up to a radius
    ok = (gap >= -4 * CFG.depth_noise_mm * 4) & (gap <= tolerance)
    assert bool(ok[visible & returned].all())
    assert float((visible & returned).float().sum()) > 0.8 * float(visible.float().sum())  # few dropouts


def test_ray_cast_matches_a_brute_force_march() -> None:
    # One capsule, rays through a few pixels: the analytic first hit equals a dense march along each ray.
    start, end = torch.tensor([[[-20.0, 5.0, 400.0]]]), torch.tensor([[[30.0, -5.0, 420.0]]])
    radius = torch.tensor([[10.0]])
    rays = torch.tensor([[[0.0, 0.0, 1.0], [0.06, -0.01, 1.0], [-0.05, 0.0, 1.0], [0.3, 0.3, 1.0]]])
    depth, _, normal = cast_capsules(rays, start, end, radius)
    z = torch.linspace(300, 500, 200001, dtype=torch.float64)
    for p in range(4):
        points = rays[0, p].double()[None] * z[:, None]
        ab = (end - start)[0, 0].double()
        s = ((points - start[0, 0].double()) @ ab / ab.dot(ab)).clamp(0, 1)
        dist = (points - (start[0, 0].double() + s[:, None] * ab)).norm(dim=1)
        inside = torch.nonzero(dist <= 10.0)
        if inside.numel() == 0:
            assert torch.isinf(depth[0, p])
        else:
            assert float(depth[0, p]) == pytest.approx(float(z[inside[0, 0]]), abs=2e-3)
            assert float(normal[0, p].norm()) == pytest.approx(1.0, abs=1e-5)


def test_capsules_scale_with_the_hand() -> None:
    joints = torch.randn(2, 21, 3) * 50
    _, _, r1 = hand_capsules(joints, torch.tensor([1.0, 1.0]))
    _, _, r2 = hand_capsules(joints, torch.tensor([1.0, 1.2]))
    assert torch.allclose(r2[1], 1.2 * r1[1]) and torch.equal(r2[0], r1[0])


@pytest.mark.parametrize("back_view_prob", [0.0, 1.0])
def test_palm_tone_lightens_the_palm_side_only(back_view_prob: float) -> None:
    # Hands held flat towards the camera: with back_view_prob 0 the camera sees palms, with 1 the backs.
    hands = SyntheticHandsConfig(view_tilt_deg=10.0, back_view_prob=back_view_prob)
    plain = render_rgbd(hands, RenderConfig(crop_size_px=32, color_jitter=0.0, rgb_noise=0.0), 0, "val", np.arange(8))
    toned = render_rgbd(
        hands, RenderConfig(crop_size_px=32, color_jitter=0.0, rgb_noise=0.0, palm_tone=1.0), 0, "val", np.arange(8)
    )
    assert torch.equal(plain["depth_mm"], toned["depth_mm"])  # a colour, not a shape
    changed = (toned["rgb"] - plain["rgb"]).abs().amax(dim=1) > 0.02  # (B, H, W)
    hand_px = plain["depth_mm"][:, 0] > 0  # a superset of the hand (also the background plane), for a ratio
    share = float(changed.sum()) / float(hand_px.sum())
    if back_view_prob == 0.0:
        assert share > 0.2  # palms fill a good part of each crop (measured: 0.31)
    else:
        assert share < 0.03  # from behind, at most the rims of the fingers show any palm (measured: 0.0015)
