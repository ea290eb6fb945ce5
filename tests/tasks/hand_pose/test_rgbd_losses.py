"""UTNet's loss parts by name: zero for a perfect prediction, zero weight drops a part, values in their units."""

import numpy as np
import pytest
import torch

from trainwell.tasks.hand_pose.render import RenderConfig, render_rgbd
from trainwell.tasks.hand_pose.rgbd_losses import RGBD_LOSS_NAMES, RGBDLossWeights, heatmap_targets, rgbd_losses
from trainwell.tasks.hand_pose.synthetic import SyntheticHandsConfig


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    return render_rgbd(SyntheticHandsConfig(), RenderConfig(crop_size_px=16), 0, "train", np.arange(6))


def perfect(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        "joints_mm": batch["joints_rel_mm"].clone(),
        "aux_joints_mm": batch["joints_rel_mm"].clone(),
        "keypoints_2d_px": batch["keypoints_2d_px"].clone(),
        "vertices_mm": batch["vertices_rel_mm"].clone(),
        "heatmap_logits": torch.log(heatmap_targets(batch["keypoints_2d_px"], (4, 4), stride=4.0)),
        "root_cam_mm": batch["root_cam_mm"].clone(),
    }


def test_names_and_perfect_prediction(batch) -> None:
    losses = rgbd_losses(perfect(batch), batch, RGBDLossWeights(), bone_tolerance=0.11, pose_margin_rad=0.035)
    assert tuple(losses) == RGBD_LOSS_NAMES
    for name, value in losses.items():
        assert float(value) == pytest.approx(0.0, abs=1e-4), name


def test_units_and_weights(batch) -> None:
    out = perfect(batch)
    out["keypoints_2d_px"] = out["keypoints_2d_px"] + torch.tensor([3.0, 4.0])  # 5 px everywhere
    out["vertices_mm"] = out["vertices_mm"] + torch.tensor([0.0, 0.0, 7.0])
    shifted = out["joints_mm"].clone()
    shifted[:, 1:] += torch.tensor([2.0, 0.0, 0.0])
    out["joints_mm"] = shifted
    out["root_cam_mm"] = out["root_cam_mm"] + torch.tensor([6.0, 0.0, 8.0])  # the wrist 10 mm off
    weights = RGBDLossWeights(
        keypoint_2d=2.0, joint_3d=1.0, vertex=0.5, shape_prior=0, pose_prior=0, aux=0, heatmap=0, root=3.0
    )
    losses = rgbd_losses(out, batch, weights, bone_tolerance=0.11, pose_margin_rad=0.035)
    assert set(losses) == {"keypoint_2d", "joint_3d", "vertex", "root"}  # zero weight drops the part
    assert float(losses["root"]) == pytest.approx(30.0, rel=1e-5)
    assert float(losses["keypoint_2d"]) == pytest.approx(10.0, rel=1e-5)
    assert float(losses["joint_3d"]) == pytest.approx(2.0, rel=1e-5)
    assert float(losses["vertex"]) == pytest.approx(3.5, rel=1e-5)


def test_priors_flag_an_implausible_hand(batch) -> None:
    out = perfect(batch)
    out["joints_mm"] = out["joints_mm"] * torch.linspace(0.2, 3.0, 21)[None, :, None]  # distorted proportions
    losses = rgbd_losses(out, batch, RGBDLossWeights(), bone_tolerance=0.11, pose_margin_rad=0.035)
    assert float(losses["shape_prior"]) > 0.01


def test_heatmap_target_peaks_at_the_keypoint_and_loss_grows_away_from_it() -> None:
    kp = torch.tensor([[[14.0, 42.0]]])  # cell (row 10, column 3) of a stride-4 map
    target = heatmap_targets(kp, (16, 16), stride=4.0)
    assert int(target.flatten().argmax()) == 10 * 16 + 3 and float(target.sum()) == pytest.approx(1.0)
    from trainwell.tasks.hand_pose.rgbd_losses import heatmap_loss

    logits = torch.log(target)
    near, far = heatmap_loss(logits, kp + 2.0, 4.0), heatmap_loss(logits, kp + 12.0, 4.0)
    assert float(heatmap_loss(logits, kp, 4.0)) == pytest.approx(0.0, abs=1e-5) and 0 < float(near) < float(far)
