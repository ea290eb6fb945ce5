"""Skeleton structure and the joint-angle definition shared by the generator and the pose prior."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from trainwell.tasks.hand_pose import skeleton as S
from trainwell.tasks.hand_pose.synthetic import SyntheticHandsConfig, generate_hands


def test_joint_order_is_freihand_openpose() -> None:
    assert len(S.JOINT_NAMES) == S.NUM_JOINTS == 21
    assert S.JOINT_NAMES[0] == "wrist"
    assert S.JOINT_NAMES[1:5] == ("thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip")
    assert S.JOINT_NAMES[5:9] == ("index_mcp", "index_pip", "index_dip", "index_tip")
    assert S.JOINT_NAMES[17:21] == ("pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip")
    # Each finger is a chain hanging off the wrist, base to tip.
    for chain in S.FINGER_JOINTS:
        assert S.PARENTS[chain[0]] == 0
        assert [S.PARENTS[j] for j in chain[1:]] == list(chain[:-1])
    assert len(S.BONES) == 20 and all(child == b + 1 for b, (_, child) in enumerate(S.BONES))
    assert len(S.TEMPLATE_BONE_LENGTHS_MM) == 20


def test_limits_are_ordered_and_hinges_have_no_abduction() -> None:
    limits = S.angle_limits_rad(torch.float64)
    assert limits.shape == (2, 5, 3, 2)
    assert bool((limits[..., 0] <= limits[..., 1]).all())
    assert bool((limits[1, 1:, 1:] == 0).all())  # PIP and DIP of the fingers are hinges
    assert bool((limits[1, 0, 2] == 0).all())  # thumb IP too


def test_bone_lengths_match_numpy() -> None:
    joints = torch.randn(7, 21, 3, dtype=torch.float64)
    expected = np.stack([np.linalg.norm(joints[:, c] - joints[:, p], axis=-1) for p, c in S.BONES], axis=-1)
    np.testing.assert_allclose(S.bone_lengths(joints).numpy(), expected, rtol=1e-12)


@pytest.fixture(scope="module")
def hands() -> dict[str, torch.Tensor]:
    return generate_hands(SyntheticHandsConfig(), seed=3, split="train", indices=np.arange(2000))


def test_angles_read_back_from_joints_equal_the_generated_ones(hands: dict[str, torch.Tensor]) -> None:
    flexion, abduction = S.joint_angles(hands["joints_rel_mm"].double())
    # float32 joints (~1e-5 mm resolution on bones of ≥ 15 mm): agreement to ~1e-6 rad.
    assert float((flexion - hands["flexion_rad"]).abs().max()) < 1e-4
    assert float((abduction - hands["abduction_rad"]).abs().max()) < 1e-4


def test_angles_are_invariant_to_rotation_translation_and_scale(hands: dict[str, torch.Tensor]) -> None:
    joints = hands["joints_cam_mm"][:200].double()
    rotation = torch.from_numpy(Rotation.random(200, random_state=0).as_matrix())
    moved = 1.7 * joints @ rotation.transpose(1, 2) + torch.tensor([10.0, -40.0, 300.0], dtype=torch.float64)
    for before, after in zip(S.joint_angles(joints), S.joint_angles(moved), strict=True):
        torch.testing.assert_close(after, before, atol=1e-9, rtol=0)


def test_hinge_flexion_is_the_angle_between_consecutive_bones(hands: dict[str, torch.Tensor]) -> None:
    """An independent reading of PIP/DIP flexion: the unsigned angle between the two bones."""
    joints = hands["joints_rel_mm"].double().numpy()
    flexion, _ = S.joint_angles(hands["joints_rel_mm"].double())
    for finger in range(1, 5):
        chain = S.FINGER_JOINTS[finger]
        for level in (1, 2):  # PIP, DIP
            a = joints[:, chain[level]] - joints[:, chain[level - 1]]
            b = joints[:, chain[level + 1]] - joints[:, chain[level]]
            cos = np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
            bend = np.arccos(np.clip(cos, -1.0, 1.0))
            np.testing.assert_allclose(bend, np.abs(flexion[:, finger, level].numpy()), atol=2e-3)


def test_direction_from_angles_is_flexion_then_abduction() -> None:
    f, a = torch.tensor(0.7, dtype=torch.float64), torch.tensor(-0.3, dtype=torch.float64)
    local = S.direction_from_angles(torch.cos(f), torch.sin(f), torch.cos(a), torch.sin(a))
    expected = Rotation.from_euler("YZ", [0.7, -0.3]).apply([1.0, 0.0, 0.0])  # intrinsic: R_y(f) @ R_z(a)
    np.testing.assert_allclose(local.numpy(), expected, atol=1e-12)
    assert float(local[2]) < 0  # positive flexion bends towards the palm (-z)
