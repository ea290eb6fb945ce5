"""Every loss component is exactly 0 for a perfect prediction and positive for a wrong one."""

import math

import numpy as np
import pytest
import torch

from trainwell.tasks.hand_pose import losses as L
from trainwell.tasks.hand_pose.datasets import SyntheticHandPoseDataset
from trainwell.tasks.hand_pose.synthetic import SyntheticHandsConfig

ALL_ON = L.LossWeights(joint_3d=1.0, keypoint_2d=1.0, bone_prior=1.0, pose_prior=1.0, aux=1.0)
TOLERANCE = L.bone_tolerance(0.05)
MARGIN = math.radians(2.0)


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    # Noise-free observations: only then can a perfect prediction reproject exactly onto them.
    dataset = SyntheticHandPoseDataset(SyntheticHandsConfig(noise_px=0.0), seed=0, split="train", size=2048)
    return dataset.__getitems__(list(range(len(dataset))))


def _perfect(batch: dict[str, torch.Tensor], grad: bool = False) -> dict[str, torch.Tensor]:
    target = batch["joints_rel_mm"]
    return {"joints_mm": target.clone().requires_grad_(grad), "aux_joints_mm": target.clone().requires_grad_(grad)}


def _losses(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], weights=ALL_ON) -> dict:
    return L.hand_pose_losses(outputs, batch, weights, bone_tolerance=TOLERANCE, pose_margin_rad=MARGIN)


def test_all_components_are_exactly_zero_for_a_perfect_prediction(batch: dict[str, torch.Tensor]) -> None:
    outputs = _perfect(batch, grad=True)
    losses = _losses(outputs, batch)
    assert set(losses) == set(L.LOSS_NAMES)
    for name, value in losses.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0, name
        assert float(value.detach()) == 0.0, name
    # ... and their gradient there is finite (no NaN from a norm or a square root at 0).
    sum(losses.values()).backward()
    assert all(bool(torch.isfinite(t.grad).all()) for t in outputs.values())


def test_joint_3d_is_the_mean_joint_distance_in_mm(batch: dict[str, torch.Tensor]) -> None:
    outputs = _perfect(batch)
    outputs["joints_mm"][:, 8] += torch.tensor([3.0, 0.0, 4.0])  # 5 mm on 1 of the 20 non-root joints
    losses = _losses(outputs, batch)
    assert float(losses["joint_3d"]) == pytest.approx(5.0 / 20, rel=1e-5)
    assert float(losses["aux"]) == 0.0  # the aux head was perfect


def test_aux_supervises_the_intermediate_head(batch: dict[str, torch.Tensor]) -> None:
    outputs = _perfect(batch)
    outputs["aux_joints_mm"] = outputs["aux_joints_mm"] + 1.0
    losses = _losses(outputs, batch)
    assert float(losses["aux"]) == pytest.approx(math.sqrt(3.0), rel=1e-5)
    assert float(losses["joint_3d"]) == 0.0


def test_keypoint_2d_matches_a_numpy_reprojection_and_ignores_invisible_joints(batch: dict[str, torch.Tensor]) -> None:
    pred = batch["joints_rel_mm"] + torch.tensor([2.0, -1.0, 5.0])  # wrong by a few mm everywhere
    got = L.keypoint_2d_loss(
        pred, batch["root_cam_mm"], batch["intrinsics"], batch["keypoints_2d_px"], batch["visibility"]
    )
    cam = (pred + batch["root_cam_mm"][:, None]).double().numpy()
    k = batch["intrinsics"].double().numpy()
    f = np.stack((k[:, 0, 0], k[:, 1, 1]), -1)[:, None]
    c = np.stack((k[:, 0, 2], k[:, 1, 2]), -1)[:, None]
    projected = cam[..., :2] / cam[..., 2:] * f + c
    err = np.linalg.norm((projected - batch["keypoints_2d_px"].double().numpy()) / f, axis=-1)
    visible = batch["visibility"].numpy() > 0
    assert float(got) == pytest.approx(err[visible].mean(), rel=1e-4)
    assert float(got) > 0

    hidden_only = batch["joints_rel_mm"].clone()
    hidden_only[batch["visibility"] == 0] += 50.0  # moving unobserved joints costs nothing
    zero = L.keypoint_2d_loss(
        hidden_only, batch["root_cam_mm"], batch["intrinsics"], batch["keypoints_2d_px"], batch["visibility"]
    )
    assert float(zero) == 0.0


def test_bone_prior_is_scale_free_and_penalises_wrong_proportions(batch: dict[str, torch.Tensor]) -> None:
    joints = batch["joints_rel_mm"]
    assert float(L.bone_prior_loss(1.4 * joints, TOLERANCE)) == 0.0  # a bigger hand is still plausible
    stretched = joints.clone()
    index_tip_bone = stretched[:, 8] - stretched[:, 7]
    stretched[:, 8] = stretched[:, 7] + 1.5 * index_tip_bone  # distal phalanx 50 % too long
    assert float(L.bone_prior_loss(stretched, TOLERANCE)) > 0.0


def _bend_index_dip(joints: torch.Tensor, flexion_deg: float, sideways_deg: float = 0.0) -> torch.Tensor:
    """Re-place the index tip so the DIP has the given flexion (negative = hyperextension) / side bend."""
    pip, dip, tip = joints[:, 6], joints[:, 7], joints[:, 8]
    d2 = torch.nn.functional.normalize(dip - pip, dim=-1)
    d3 = tip - dip
    length = d3.norm(dim=-1, keepdim=True)
    d3 = d3 / length
    cos = (d3 * d2).sum(-1, keepdim=True)
    z2 = torch.nn.functional.normalize(-(d3 - cos * d2), dim=-1)  # dorsal axis of the middle phalanx
    y2 = torch.cross(z2, d2, dim=-1)
    f, a = math.radians(flexion_deg), math.radians(sideways_deg)
    direction = math.cos(f) * math.cos(a) * d2 - math.sin(f) * math.cos(a) * z2 + math.sin(a) * y2
    out = joints.clone()
    out[:, 8] = dip + length * direction
    return out


def test_pose_prior_penalises_hyperextension_and_sideways_bending(batch: dict[str, torch.Tensor]) -> None:
    from trainwell.tasks.hand_pose.skeleton import joint_angles

    joints = batch["joints_rel_mm"].double()
    flexed = joint_angles(joints)[0][:, 1, 2] > math.radians(20)  # index DIP clearly flexed: z2 well defined
    joints = joints[flexed]
    assert float(L.pose_prior_loss(joints, MARGIN)) == 0.0
    # Our own construction agrees with the skeleton's angle convention:
    rebent = _bend_index_dip(joints, 30.0)
    torch.testing.assert_close(
        joint_angles(rebent)[0][:, 1, 2], torch.full((len(joints),), math.radians(30.0)).double()
    )
    assert float(L.pose_prior_loss(_bend_index_dip(joints, -40.0), MARGIN)) > 0.0  # DIP bent backwards
    assert float(L.pose_prior_loss(_bend_index_dip(joints, 20.0, sideways_deg=30.0), MARGIN)) > 0.0  # DIP is a hinge
    # 40° of hyperextension: 40° - 0° (limit) - 2° (margin) beyond the DIP range, plus the DIP–PIP coupling.
    violations = L.pose_violations(_bend_index_dip(joints, -40.0), MARGIN)
    assert violations.shape == (len(joints), 2 * 5 * 3 + 4)
    dip_index = 1 * 3 + 2  # [flexion, finger 1 (index), joint 2 (DIP)] in the flattened (2, 5, 3) block
    torch.testing.assert_close(
        violations[:, dip_index], torch.full((len(joints),), math.radians(38.0)).double(), rtol=0, atol=1e-6
    )


def test_zero_weights_are_omitted_and_weights_multiply(batch: dict[str, torch.Tensor]) -> None:
    outputs = _perfect(batch)
    outputs["joints_mm"] = outputs["joints_mm"] + 1.0
    off = {name: 0.0 for name in L.LOSS_NAMES}
    only_3d = _losses(outputs, batch, L.LossWeights(**{**off, "joint_3d": 1.0}))
    assert set(only_3d) == {"joint_3d"}
    doubled = _losses(outputs, batch, L.LossWeights(**{**off, "joint_3d": 2.0}))
    assert float(doubled["joint_3d"]) == pytest.approx(2 * float(only_3d["joint_3d"]))
    no_3d = _losses(outputs, batch, L.LossWeights(**{**off, "bone_prior": 0.5}))
    assert set(no_3d) == {"bone_prior"}
