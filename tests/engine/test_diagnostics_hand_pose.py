"""Hand-pose batch checks (trainwell.tasks.hand_pose.checks) on generated synthetic batches."""

import numpy as np
import pytest
import torch

from trainwell.tasks.hand_pose import HandPoseDataConfig, HandPoseTask, HandPoseTaskConfig
from trainwell.tasks.hand_pose.checks import (
    check_hand_batch,
    check_keypoints_in_image,
    check_root_centred,
    check_units_mm,
)
from trainwell.tasks.hand_pose.datasets import SyntheticHandPoseDataset
from trainwell.tasks.hand_pose.skeleton import PARENTS

IMAGE = (256, 256)


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    cfg = HandPoseDataConfig(train_size=64, val_size=8)
    dataset = SyntheticHandPoseDataset(cfg, seed=0, split="train", size=64)
    return dataset.__getitems__(list(range(64)))


def mean_bone_length(joints: torch.Tensor) -> float:
    """Independent reference: mean parent→child distance with NumPy."""
    j = joints.double().numpy()
    children = np.arange(1, 21)
    parents = np.array(PARENTS[1:])
    return float(np.linalg.norm(j[:, children] - j[:, parents], axis=-1).mean())


def test_a_healthy_batch_raises_nothing(batch) -> None:
    assert 20 < mean_bone_length(batch["joints_rel_mm"]) < 60  # the generator's hands are hand-sized
    assert check_hand_batch(batch, IMAGE) == []
    task = HandPoseTask(HandPoseTaskConfig(), HandPoseDataConfig())
    assert task.check_batch(batch) == []


@pytest.mark.parametrize(("scale", "guess"), [(1e-3, "metres"), (0.1, "centimetres"), (1e3, "not millimetres")])
def test_wrong_units_are_named(batch, scale: float, guess: str) -> None:
    wrong = {**batch, "joints_rel_mm": batch["joints_rel_mm"] * scale, "joints_cam_mm": batch["joints_cam_mm"] * scale}
    findings = check_hand_batch(wrong, IMAGE)
    assert [f.id for f in findings] == ["hand_pose.units_not_mm"]
    assert guess in findings[0].evidence
    expected = mean_bone_length(batch["joints_rel_mm"]) * scale
    assert f"{expected:.4g}" in findings[0].evidence


def test_units_are_judged_on_each_3d_key(batch) -> None:
    only_cam = check_units_mm(batch["joints_cam_mm"] / 1000, key="joints_cam_mm")
    assert only_cam is not None and "'joints_cam_mm'" in only_cam.title


def test_targets_centred_on_the_centroid_are_not_root_relative(batch) -> None:
    joints = batch["joints_cam_mm"]
    wrong = {**batch, "joints_rel_mm": joints - joints.mean(dim=1, keepdim=True)}
    findings = check_hand_batch(wrong, IMAGE)
    assert [f.id for f in findings] == ["hand_pose.not_root_centred"]
    worst = float((joints[:, 0] - joints.mean(dim=1)).norm(dim=-1).max())
    assert f"{worst:.1f} mm" in findings[0].evidence
    # Camera-frame joints passed as "relative" are caught too; a float32-rounding offset is not.
    assert check_root_centred(joints) is not None
    assert check_root_centred(batch["joints_rel_mm"] + 1e-3) is None


def test_keypoints_outside_the_image(batch) -> None:
    kp, vis = batch["keypoints_2d_px"], batch["visibility"]
    assert check_keypoints_in_image(kp, vis, IMAGE) is None
    shifted = check_keypoints_in_image(kp + 300.0, vis, IMAGE)
    assert shifted is not None and shifted.id == "hand_pose.keypoints_outside_image"
    normalised = check_keypoints_in_image(kp / 256.0, vis, IMAGE)
    assert normalised is not None and "normalised" in normalised.fix
    # Invisible keypoints (stored as 0) do not count, wherever they are.
    far = torch.where(vis.bool().unsqueeze(-1), kp, torch.full_like(kp, -1e4))
    assert check_keypoints_in_image(far, vis, IMAGE) is None
