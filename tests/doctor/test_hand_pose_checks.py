"""The hand-pose label checks on real synthetic batches: a healthy batch (also with detector-like noise on its 2D
inputs) raises nothing; each planted label fault raises its own finding, named by the explanation that fits."""

from __future__ import annotations

import math

import pytest
import torch
from doctor_faults import (
    MANOOrderHandPoseTask,
    MirroredHandPoseTask,
    RotatedInputHandPoseTask,
    ShuffledLabelsHandPoseTask,
)

from trainwell.tasks.hand_pose import HandPoseTask
from trainwell.tasks.hand_pose.checks import check_hand_batch
from trainwell.tasks.hand_pose.task import HandPoseDataConfig, HandPoseTaskConfig

IMAGE = (256, 256)


@pytest.fixture(scope="module")
def items() -> dict[str, torch.Tensor]:
    task = HandPoseTask(HandPoseTaskConfig(), HandPoseDataConfig(train_size=64, val_size=8))
    train, _ = task.build_datasets()
    return train.__getitems__(list(range(64)))


def faulty(task_class: type[HandPoseTask], items: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    task = task_class(HandPoseTaskConfig(), HandPoseDataConfig(train_size=64, val_size=8))
    return task.collate_fn()({k: v.clone() for k, v in items.items()})


def ids(batch: dict[str, torch.Tensor]) -> list[str]:
    return [f.id for f in check_hand_batch(batch, IMAGE)]


def test_a_healthy_batch_raises_nothing(items: dict[str, torch.Tensor]) -> None:
    assert ids(dict(items)) == []


def test_detector_noise_on_the_inputs_is_not_a_label_fault(items: dict[str, torch.Tensor]) -> None:
    # 2D keypoints from a detector instead of the projection: 6 px of noise per coordinate (hands ~60–200 px).
    noisy = dict(items)
    noise = torch.randn(noisy["keypoints_2d_px"].shape, generator=torch.Generator().manual_seed(0)) * 6.0
    noisy["keypoints_2d_px"] = noisy["keypoints_2d_px"] + noise * (noisy["visibility"] > 0).unsqueeze(-1)
    assert ids(noisy) == []
    # A small in-plane rotation (±5°) is within annotation error too.
    turned = dict(items)
    kp = turned["keypoints_2d_px"] - 128.0
    angle = torch.full((64, 1), math.radians(5.0))
    turned["keypoints_2d_px"] = (
        torch.stack((torch.cos(angle) * kp[..., 0] - torch.sin(angle) * kp[..., 1],
                     torch.sin(angle) * kp[..., 0] + torch.cos(angle) * kp[..., 1]), -1) + 128.0
    )  # fmt: skip
    assert ids(turned) == []


@pytest.mark.parametrize(
    ("task_class", "expected"),
    [
        (MirroredHandPoseTask, "hand_pose.labels_mirrored"),
        (RotatedInputHandPoseTask, "hand_pose.inputs_transformed"),
        (ShuffledLabelsHandPoseTask, "hand_pose.labels_mismatch"),
        (MANOOrderHandPoseTask, "hand_pose.joint_order"),
    ],
)
def test_each_label_fault_is_named(task_class: type[HandPoseTask], expected: str, items: dict) -> None:
    found = check_hand_batch(faulty(task_class, items), IMAGE)
    assert [f.id for f in found] == [expected], [(f.id, f.evidence) for f in found]
    assert found[0].severity == "error" and "rule:" in found[0].evidence


def test_the_projection_check_measures_what_it_says(items: dict[str, torch.Tensor]) -> None:
    # Independent reference: project with the pinhole formula written out here, error relative to the box diagonal.
    batch = faulty(MirroredHandPoseTask, items)
    cam = batch["joints_rel_mm"].double() + batch["root_cam_mm"].double().unsqueeze(1)
    k = batch["intrinsics"].double()
    u = cam[..., 0] / cam[..., 2] * k[:, 0, 0, None] + k[:, 0, 2, None]
    v = cam[..., 1] / cam[..., 2] * k[:, 1, 1, None] + k[:, 1, 2, None]
    vis = batch["visibility"] > 0
    kp = batch["keypoints_2d_px"].double()
    rel = []
    for i in range(kp.shape[0]):
        pts = kp[i][vis[i]]
        err = torch.stack((u[i] - kp[i, :, 0], v[i] - kp[i, :, 1]), -1).norm(dim=-1)[vis[i]]
        rel.append(float(err.median()) / float((pts.max(0).values - pts.min(0).values).norm()))
    expected = float(torch.tensor(rel).median())
    evidence = check_hand_batch(batch, IMAGE)[0].evidence
    assert f"it is {expected:.2f}" in evidence
