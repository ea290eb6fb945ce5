"""Doctor checks on RGB-D batches: each fires on its mistake and stays quiet on a healthy batch."""

import numpy as np
import pytest
import torch

from trainwell.tasks.hand_pose.image_checks import check_image_batch
from trainwell.tasks.hand_pose.render import RenderConfig, render_rgbd
from trainwell.tasks.hand_pose.synthetic import SyntheticHandsConfig


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    return render_rgbd(SyntheticHandsConfig(), RenderConfig(crop_size_px=32), 0, "train", np.arange(8))


def ids(batch: dict[str, torch.Tensor]) -> set[str]:
    return {f.id for f in check_image_batch(batch)}


def test_healthy_batch_is_quiet(batch) -> None:
    assert ids(batch) == set()


def test_rgb_not_normalised(batch) -> None:
    assert "hand_pose.rgb_range" in ids({**batch, "rgb": batch["rgb"] * 255})
    assert "hand_pose.rgb_range" in ids({**batch, "rgb": (batch["rgb"] - 0.5) / 0.25})


def test_depth_in_metres_or_wrong_frame(batch) -> None:
    assert "hand_pose.depth_not_mm" in ids({**batch, "depth_mm": batch["depth_mm"] / 1000})
    assert "hand_pose.depth_not_mm" in ids({**batch, "depth_mm": batch["depth_mm"] * 8})
    flipped = {**batch, "depth_mm": batch["depth_mm"].flip(-1).flip(-2) + 300 * (batch["depth_mm"] > 0)}
    assert "hand_pose.depth_joint_mismatch" in ids(flipped)
