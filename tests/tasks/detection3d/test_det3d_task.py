"""The task glue: evaluator on ragged detections, KITTI result files, predict, and training through the engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainwell.tasks.detection3d import kitti
from trainwell.tasks.detection3d.datasets import collate_frames
from trainwell.tasks.detection3d.scenes import SceneConfig
from trainwell.tasks.detection3d.task import Detection3DDataConfig, Detection3DTask, Detection3DTaskConfig

TINY = Path(__file__).parents[3] / "configs" / "detection3d" / "tiny.yaml"


def _task(val_size: int = 6) -> Detection3DTask:
    scene = SceneConfig(num_channels=16, azimuth_step_deg=0.5)
    task = Detection3DTask(Detection3DTaskConfig(), Detection3DDataConfig(train_size=4, val_size=val_size, scene=scene))
    task.build_datasets()
    return task


def _perfect(task: Detection3DTask, index: int) -> dict[str, torch.Tensor]:
    sample = task.val_set[index]
    keep = sample["gt_labels"] > 0
    n = int(keep.sum())
    return {
        "boxes": sample["gt_boxes"][keep],
        "scores": torch.linspace(0.9, 0.5, n),
        "labels": sample["gt_labels"][keep],
    }


def test_evaluator_scores_ragged_detections_by_index(tmp_path: Path) -> None:
    task = _task()
    ev = task.build_evaluator()
    # Fed out of order and in two halves, as two processes would; the engine hands them back sorted by index.
    ev.add(torch.tensor([4, 1, 5]), [_perfect(task, i) for i in (4, 1, 5)])
    other = task.build_evaluator()
    other.add(torch.tensor([0, 3, 2]), [_perfect(task, i) for i in (0, 3, 2)])
    i1, r1 = ev.local_results()
    i2, r2 = other.local_results()
    indices = torch.cat([i1, i2])
    order = torch.argsort(indices)
    merged = {k: [(r1[k] + r2[k])[j] for j in order.tolist()] for k in r1}
    ev.load_results(indices[order], merged)
    metrics = ev.compute()
    assert metrics["recall_3d_70"] == pytest.approx(1.0)
    # KITTI's thresholds advance one recall position (1/40) per true positive, so with n ≤ 40 counted cars and no
    # false positives, AP_R40 is exactly (n - 1) / 40 (position 0 is not summed).
    n = 0
    for i in range(6):
        s = task.val_set[i]
        car = np.array([name == "Car" for name in s["gt_names"]], dtype=bool)
        moderate = (s["height_px"].numpy() > 25) & (s["occlusion"].numpy() <= 1) & (s["truncation"].numpy() <= 0.3)
        n += int((car & moderate).sum())
    assert 2 <= n <= 40
    assert metrics["Car_bev_moderate_R40_50"] == pytest.approx((n - 1) / 40 * 100)
    assert metrics["Car_3d_moderate_R40_70"] == pytest.approx((n - 1) / 40 * 100)
    assert set(metrics) >= set(task.metric_specs())
    # Without detections, nothing is found.
    empty = task.build_evaluator()
    empty.add(
        torch.arange(6),
        [
            {"boxes": torch.zeros(0, 7), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
            for _ in range(6)
        ],
    )
    assert empty.compute()["Car_bev_moderate_R40_50"] == 0.0
    # KITTI result files: one per frame, boxes back in the LiDAR frame to the printed precision.
    paths = ev.save_outputs(tmp_path)
    assert sorted(p.name for p in paths) == [f"{i:06d}.txt" for i in range(6)]
    objs = kitti.read_label(tmp_path / "final_result" / "data" / "000001.txt")
    want = _perfect(task, 1)
    assert len(objs) == len(want["boxes"]) and all(o.score is not None for o in objs)
    back = kitti.camera_to_lidar_boxes(
        np.array([o.location for o in objs]),
        np.array([o.dimensions_hwl for o in objs]),
        np.array([o.rotation_y for o in objs]),
        kitti.synthetic_calib(),
    )
    np.testing.assert_allclose(back[:, :6], want["boxes"][:, :6].numpy(), atol=2e-4)
    heading_err = np.angle(np.exp(1j * (back[:, 6] - want["boxes"][:, 6].numpy())))
    assert np.abs(heading_err).max() < 2e-4


def test_predict_writes_kitti_text_and_returns_json(tmp_path: Path) -> None:
    task = _task(val_size=1)
    model = task.build_model().eval()
    head = model.dense_head
    torch.nn.init.constant_(head.conv_cls.bias, 0.0)  # an untrained head that scores 0.5 everywhere: detections
    points = task.val_set.raw(0)["points"]
    bin_path = tmp_path / "velodyne" / "000042.bin"
    bin_path.parent.mkdir()
    kitti.write_velodyne(bin_path, points)
    with torch.no_grad():
        result = task.predict(model, bin_path, tmp_path / "out")
    json.dumps(result)
    assert result["frame"] == "000042" and result["num_points"] == len(points)
    lines = kitti.read_label(tmp_path / "out" / "000042.txt")
    assert len(lines) == len(result["detections"]) > 0


def test_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    from trainwell.config.loader import load_config

    cfg = load_config(TINY)
    task = Detection3DTask(cfg.task, cfg.data)
    train, _ = task.build_datasets()
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = collate_frames([train[i] for i in range(4)])
    losses = []
    for _ in range(8):
        total = sum(task.compute_losses(model, batch).losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(total.detach()))
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.slow
def test_tiny_config_trains_through_the_engine(tmp_path: Path) -> None:
    from trainwell import Trainer
    from trainwell.config.loader import load_config

    # 16 frames, 3 epochs of 4 steps, one evaluation at the end.
    overrides = ["data.train_size=16", "train.epochs=3", "eval.every_epochs=3", "checkpoint.every_epochs=3"]
    cfg = load_config(TINY, [*overrides, f"run.dir={tmp_path}"])
    result = Trainer(cfg, Detection3DTask(cfg.task, cfg.data)).fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in rows if r["kind"] == "train" and "loss" in r]
    assert train_losses[-1] < train_losses[0]
    assert "Car_bev_moderate_R40_50" in result.metrics
    assert (tmp_path / "checkpoints").is_dir()
