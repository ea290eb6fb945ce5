"""The synthetic hand generator: anatomy within limits, camera geometry, reproducibility, disjoint splits."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from trainwell.tasks.hand_pose import skeleton as S
from trainwell.tasks.hand_pose.synthetic import (
    SyntheticHandsConfig,
    generate_hands,
    sample_keys,
    splitmix64,
    uniforms,
)

CFG = SyntheticHandsConfig()
NOISELESS = SyntheticHandsConfig(noise_px=0.0)


@pytest.fixture(scope="module")
def hands() -> dict[str, torch.Tensor]:
    return generate_hands(CFG, seed=0, split="train", indices=np.arange(20_000))


def test_splitmix64_matches_reference_values() -> None:
    # Reference: splitmix64 seeded with 0 yields 0xE220A8397B1DCDAF, then 0x6E789E6AA1B965F4
    # (the state advances by the golden gamma before each finalisation).
    gamma = np.uint64(0x9E3779B97F4A7C15)
    out = splitmix64(np.array([0, gamma], dtype=np.uint64))
    assert [hex(int(v)) for v in out] == ["0xe220a8397b1dcdaf", "0x6e789e6aa1b965f4"]


def test_uniforms_are_in_unit_interval_and_look_uniform() -> None:
    u = uniforms(sample_keys(0, "train", np.arange(5000)), 40)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.05  # neighbouring draws are independent


def test_shapes_dtypes_and_units(hands: dict[str, torch.Tensor]) -> None:
    n = 20_000
    expected = {
        "joints_cam_mm": (n, 21, 3),
        "joints_rel_mm": (n, 21, 3),
        "root_cam_mm": (n, 3),
        "keypoints_2d_px": (n, 21, 2),
        "visibility": (n, 21),
        "intrinsics": (n, 3, 3),
        "hand_scale": (n,),
    }
    for key, shape in expected.items():
        assert hands[key].shape == shape, key
        assert hands[key].dtype == torch.float32, key
    # Millimetres: the farthest joint is 50–260 mm from the wrist (a small fist … a big open hand).
    span = hands["joints_rel_mm"].norm(dim=-1).amax(dim=1)
    assert float(span.min()) > 50.0 and float(span.max()) < 260.0
    assert bool((hands["joints_rel_mm"][:, 0] == 0).all())
    assert torch.equal(hands["joints_cam_mm"], hands["joints_rel_mm"] + hands["root_cam_mm"][:, None])


def test_bone_lengths_follow_the_template_within_the_stated_variation(hands: dict[str, torch.Tensor]) -> None:
    joints = hands["joints_rel_mm"].double().numpy()
    lengths = np.stack([np.linalg.norm(joints[:, c] - joints[:, p], axis=-1) for p, c in S.BONES], axis=-1)
    scale = hands["hand_scale"].double().numpy()
    assert scale.min() >= 1 - CFG.hand_scale_jitter - 1e-6 and scale.max() <= 1 + CFG.hand_scale_jitter + 1e-6
    assert scale.min() < 0.87 and scale.max() > 1.13  # the whole ±15 % range is used
    factor = lengths / (np.asarray(S.TEMPLATE_BONE_LENGTHS_MM) * scale[:, None])
    jitter = CFG.bone_length_jitter
    assert factor.min() >= 1 - jitter - 1e-5 and factor.max() <= 1 + jitter + 1e-5


def test_joint_angles_stay_within_the_limits(hands: dict[str, torch.Tensor]) -> None:
    flexion, abduction = (a.numpy() for a in S.joint_angles(hands["joints_rel_mm"].double()))
    tol = 1e-4  # radians; float32 joints
    for angles, limits_deg in ((flexion, S.FLEXION_LIMITS_DEG), (abduction, S.ABDUCTION_LIMITS_DEG)):
        limits = np.deg2rad(np.asarray(limits_deg))
        assert (angles >= limits[..., 0] - tol).all() and (angles <= limits[..., 1] + tol).all()
    # The ranges are used, not just respected: fists and open hands both occur.
    pip = np.rad2deg(flexion[:, 1:, 1])
    assert pip.min() < 5.0 and pip.max() > 100.0
    # DIP ≈ 2/3 PIP within the stated tolerance.
    deviation = np.rad2deg(flexion[:, 1:, 2] - S.DIP_PIP_RATIO * flexion[:, 1:, 1])
    assert np.abs(deviation).max() <= S.DIP_COUPLING_TOLERANCE_DEG + 1e-2


def test_projection_with_the_samples_intrinsics_gives_its_keypoints() -> None:
    h = generate_hands(NOISELESS, seed=1, split="val", indices=np.arange(3000))
    joints, k = h["joints_cam_mm"].double().numpy(), h["intrinsics"].double().numpy()
    homogeneous = np.einsum("nij,nkj->nki", k, joints)  # K @ X for every joint
    expected_px = homogeneous[..., :2] / homogeneous[..., 2:]
    visible = h["visibility"].numpy() > 0
    np.testing.assert_allclose(h["keypoints_2d_px"].numpy()[visible], expected_px[visible], atol=1e-3)
    assert bool((h["keypoints_2d_px"][~torch.from_numpy(visible)] == 0).all())  # unobserved → 0
    inside = (
        (expected_px[..., 0] >= 0)
        & (expected_px[..., 0] < 256)
        & (expected_px[..., 1] >= 0)
        & (expected_px[..., 1] < 256)
    )
    assert not (visible & ~inside).any()  # nothing outside the image is visible
    occluded_inside = (inside & ~visible).sum() / inside.sum()
    assert abs(occluded_inside - NOISELESS.occlusion_prob) < 0.01


def test_camera_and_placement_ranges(hands: dict[str, torch.Tensor]) -> None:
    k = hands["intrinsics"]
    assert float(k[:, 0, 0].min()) >= 300.0 and float(k[:, 0, 0].max()) <= 600.0
    assert float((k[:, 1, 1] / k[:, 0, 0] - 1).abs().max()) <= CFG.aspect_jitter + 1e-6
    assert float((k[:, :2, 2] - 128.0).abs().max()) <= CFG.principal_point_jitter_px + 1e-4
    centroid_depth = hands["joints_cam_mm"][..., 2].double().mean(dim=1)
    assert float(centroid_depth.min()) >= 250.0 - 1e-3 and float(centroid_depth.max()) <= 800.0 + 1e-3
    assert float(hands["joints_cam_mm"][..., 2].min()) > 0.0  # every joint in front of the camera


def test_noise_has_the_configured_standard_deviation() -> None:
    indices = np.arange(5000)
    noisy = generate_hands(SyntheticHandsConfig(noise_px=2.0), 0, "train", indices)
    clean = generate_hands(NOISELESS, 0, "train", indices)
    visible = noisy["visibility"] > 0
    assert torch.equal(visible, clean["visibility"] > 0)  # noise does not change what is visible
    residual = (noisy["keypoints_2d_px"] - clean["keypoints_2d_px"])[visible]
    assert abs(float(residual.std()) - 2.0) < 0.05 and abs(float(residual.mean())) < 0.05


def test_a_sample_does_not_depend_on_which_other_samples_are_generated(hands: dict[str, torch.Tensor]) -> None:
    subset = np.array([19_999, 7, 7, 12_345, 0, 16_384])
    again = generate_hands(CFG, seed=0, split="train", indices=subset)
    for key, value in again.items():
        assert torch.equal(value, hands[key][subset]), key
    other_seed = generate_hands(CFG, seed=1, split="train", indices=subset)
    assert not torch.equal(other_seed["joints_rel_mm"], again["joints_rel_mm"])


def test_train_and_val_never_share_a_sample() -> None:
    indices = np.arange(20_000)
    assert not np.intersect1d(sample_keys(0, "train", indices), sample_keys(0, "val", indices)).size
    train = generate_hands(CFG, 0, "train", indices[:5000])["joints_rel_mm"]
    val = generate_hands(CFG, 0, "val", indices[:5000])["joints_rel_mm"]
    rows = {tuple(row) for row in train.flatten(1).numpy().tolist()}
    assert not any(tuple(row) in rows for row in val.flatten(1).numpy().tolist())


_CHILD = """
import json, sys
import numpy as np
from trainwell.tasks.hand_pose.synthetic import SyntheticHandsConfig, generate_hands
h = generate_hands(SyntheticHandsConfig(), 0, "train", np.array([12345, 3]))
print(json.dumps({k: v.double().numpy().tolist() for k, v in h.items()}))
"""


def test_another_process_generates_the_same_samples(hands: dict[str, torch.Tensor]) -> None:
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True, timeout=120)
    child = json.loads(out.stdout)
    for key, value in child.items():
        mine = hands[key][[12345, 3]].double()
        assert torch.equal(torch.tensor(value, dtype=torch.float64), mine), key


def test_front_views_keep_the_palm_or_the_back_within_the_tilt_of_the_line_of_sight() -> None:
    cfg = SyntheticHandsConfig(view_tilt_deg=40.0, back_view_prob=0.3)
    joints = generate_hands(cfg, seed=0, split="train", indices=np.arange(4000))["joints_cam_mm"].double()
    frame = S.palm_frame(joints)  # columns: distal, radial, dorsal
    dorsal_z = frame[:, 2, 2]  # the back of the hand faces +z (away from the camera) when the palm is seen
    tilt_deg = torch.rad2deg(torch.arccos(dorsal_z.abs().clamp(max=1.0)))
    assert float(tilt_deg.max()) <= 40.0 + 1e-6
    assert float(tilt_deg.max()) > 35.0  # the whole cap is used, not a corner of it
    # cos(tilt) uniform on [cos 40°, 1]: a quarter of the samples lie beyond the tilt whose cosine is at 3/4 of it
    beyond = float((torch.cos(torch.deg2rad(tilt_deg)) < 1 - 0.75 * (1 - np.cos(np.radians(40.0)))).double().mean())
    assert abs(beyond - 0.25) < 0.03
    assert abs(float((dorsal_z < 0).double().mean()) - 0.3) < 0.03  # back views
    assert torch.allclose(torch.linalg.det(frame), torch.ones(()).double(), atol=1e-9)  # no mirrored hands
    alone = generate_hands(cfg, seed=0, split="train", indices=np.array([3999, 7]))["joints_cam_mm"].double()
    assert torch.equal(alone, joints[[3999, 7]])  # a sample does not depend on its batch


def test_front_views_roll_the_fingers_within_the_configured_angle_of_upright() -> None:
    cfg = SyntheticHandsConfig(view_tilt_deg=1e-4, view_roll_deg=20.0)
    joints = generate_hands(cfg, seed=0, split="val", indices=np.arange(2000))["joints_cam_mm"].double()
    distal = S.palm_frame(joints)[:, :, 0]  # wrist → middle MCP: "up" is the image's -y
    roll_deg = torch.rad2deg(torch.atan2(distal[:, 0], -distal[:, 1]))
    assert float(roll_deg.abs().max()) <= 20.0 + 1e-3 and float(roll_deg.abs().max()) > 19.0
    assert float(distal[:, 2].abs().max()) < 1e-5  # no tilt: the palm plane is the image plane


def test_roll_and_back_views_apply_only_to_front_views_and_the_default_is_uniform() -> None:
    # view_* keys left at their defaults must not change a single hand (the lifting demo's figures depend on it).
    default = generate_hands(CFG, seed=3, split="val", indices=np.arange(64))
    explicit = generate_hands(SyntheticHandsConfig(view_roll_deg=10.0, back_view_prob=0.9), 3, "val", np.arange(64))
    assert torch.equal(default["joints_cam_mm"], explicit["joints_cam_mm"])
    directions = S.palm_frame(generate_hands(CFG, 0, "train", np.arange(20_000))["joints_cam_mm"].double())[:, :, 2]
    assert float(directions.mean(dim=0).abs().max()) < 0.03  # uniform over the sphere: no preferred side
