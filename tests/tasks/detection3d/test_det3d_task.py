"""The task glue: evaluator on ragged detections, KITTI result files, predict, and training through the engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainwell.records.metrics import read_metrics
from trainwell.tasks.detection3d import kitti
from trainwell.tasks.detection3d.datasets import collate_frames
from trainwell.tasks.detection3d.scenes import CLASS_NAMES, SceneConfig
from trainwell.tasks.detection3d.table import kitti_eval
from trainwell.tasks.detection3d.task import Detection3DDataConfig, Detection3DTask, Detection3DTaskConfig

TINY = Path(__file__).parents[3] / "configs" / "detection3d" / "tiny.yaml"


def _task(val_size: int = 6) -> Detection3DTask:
    scene = SceneConfig(num_channels=16, azimuth_step_deg=0.5)
    task = Detection3DTask(Detection3DTaskConfig(), Detection3DDataConfig(train_size=4, val_size=val_size, scene=scene))
    task.build_datasets()
    return task


def _perfect(task: Detection3DTask, index: int, in_range_only: bool = False) -> dict[str, torch.Tensor]:
    """Every label of a learned class detected exactly (or only those the cropped sample keeps)."""
    frame = task.val_set.raw(index) if not in_range_only else task.val_set[index]
    names = list(frame["gt_names"])
    keep = np.array([n in CLASS_NAMES for n in names], dtype=bool)
    n = int(keep.sum())
    return {
        "boxes": torch.as_tensor(np.asarray(frame["gt_boxes"], dtype=np.float32)[keep]),
        "scores": torch.linspace(0.9, 0.5, n),
        "labels": torch.tensor([CLASS_NAMES.index(c) + 1 for c, k in zip(names, keep, strict=True) if k]),
    }


def _counted_cars(frames: list[dict]) -> int:
    """Cars KITTI's moderate difficulty counts (2D height > 25 px, occlusion <= 1, truncation <= 0.3)."""
    n = 0
    for s in frames:
        car = np.array([name == "Car" for name in s["gt_names"]], dtype=bool)
        moderate = (np.asarray(s["height_px"]) > 25) & (np.asarray(s["occlusion"]) <= 1)
        n += int((car & moderate & (np.asarray(s["truncation"]) <= 0.3)).sum())
    return n


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
    n = _counted_cars([task.val_set.raw(i) for i in range(6)])
    assert 2 <= n <= 40
    assert metrics["Car_bev_moderate_R40_50"] == pytest.approx((n - 1) / 40 * 100)
    assert metrics["Car_3d_moderate_R40_70"] == pytest.approx((n - 1) / 40 * 100)
    assert metrics["Car_3d/moderate_R40"] == metrics["Car_3d_moderate_R40_70"]  # OpenPCDet's name
    assert set(metrics) >= set(task.metric_specs())
    assert "Car AP_R40@0.70, 0.70, 0.70:" in ev.result_text
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
    # KITTI result files: one per frame, boxes back in the LiDAR frame to the printed precision, and the table.
    paths = ev.save_outputs(tmp_path)
    assert sorted(p.name for p in paths) == [f"{i:06d}.txt" for i in range(6)] + ["result.txt"]
    assert (tmp_path / "result.txt").read_text() == ev.result_text
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
    np.testing.assert_array_equal([o.score for o in objs], want["scores"].numpy())  # scores written exactly


def test_labels_out_of_range_are_misses_unless_the_option_says_otherwise() -> None:
    task = _task()
    # Detections of exactly the labels inside the point range: the frames also hold cars beyond x = 40 m.
    dets = [_perfect(task, i, in_range_only=True) for i in range(6)]
    total = sum(sum(n in CLASS_NAMES for n in task.val_set.raw(i)["gt_names"]) for i in range(6))
    seen = sum(len(d["boxes"]) for d in dets)
    assert seen < total
    full = task.build_evaluator()
    full.add(torch.arange(6), dets)
    assert full.compute()["recall_3d_70"] == pytest.approx(seen / total)  # the unseen ones are misses
    assert "eval_gt_in_range_only" not in full.result_text
    old = Detection3DTask(Detection3DTaskConfig(eval_gt_in_range_only=True), task.data_cfg)
    old.val_set = task.val_set
    cropped = old.build_evaluator()
    cropped.add(torch.arange(6), dets)
    metrics = cropped.compute()
    assert metrics["recall_3d_70"] == pytest.approx(1.0)
    assert metrics["kitti/eval_gt_in_range_only"] == 1.0
    assert cropped.result_text.startswith("NOTE task.eval_gt_in_range_only=true")


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
    from trainwell.experiment import load_config

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
    from trainwell import Trainer, build_run
    from trainwell.experiment import load_config

    # 16 frames, 3 epochs of 4 steps, one evaluation at the end.
    overrides = ["data.train_size=16", "train.epochs=3", "eval.every_epochs=3", "checkpoint.every_epochs=3"]
    cfg = load_config(TINY, [*overrides, f"run.dir={tmp_path}"])
    result = Trainer(build_run(cfg, Detection3DTask(cfg.task, cfg.data))).fit()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    train_losses = [r["loss"] for r in rows if r["kind"] == "train" and "loss" in r]
    assert train_losses[-1] < train_losses[0]
    assert "Car_bev_moderate_R40_50" in result.metrics
    assert (tmp_path / "checkpoints").is_dir()


def _noisy(task: Detection3DTask, index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Jittered copies of most labels plus false positives; float32 scores crowded into 0.5 … 0.5004, where 4-decimal
    rounding would tie them."""
    frame = task.val_set.raw(index)
    boxes = np.asarray(frame["gt_boxes"], dtype=np.float64)
    labels = np.array([CLASS_NAMES.index(n) + 1 if n in CLASS_NAMES else 0 for n in frame["gt_names"]])
    keep = (labels > 0) & (rng.random(len(labels)) < 0.8)
    found = boxes[keep] + rng.normal(0, [0.3, 0.3, 0.1, 0.2, 0.1, 0.1, 0.1], (int(keep.sum()), 7))
    fps = np.concatenate(
        [rng.uniform([5, -15, -1.5], [35, 15, -0.5], (4, 3)), np.tile([3.9, 1.6, 1.5, 0.0], (4, 1))], 1
    )
    all_boxes = np.concatenate([found, fps])
    return {
        "boxes": torch.as_tensor(all_boxes, dtype=torch.float32),
        "scores": torch.as_tensor(0.5 + rng.uniform(0, 4e-4, len(all_boxes)), dtype=torch.float32),
        "labels": torch.as_tensor(np.concatenate([labels[keep], rng.integers(1, 4, 4)]), dtype=torch.int64),
    }


def test_exported_result_files_score_the_same_as_the_run(tmp_path: Path) -> None:
    task = _task(val_size=12)
    rng = np.random.default_rng(5)
    ev = task.build_evaluator()
    ev.add(torch.arange(12), [_noisy(task, i, rng) for i in range(12)])
    in_run = ev.compute()
    ev.save_outputs(tmp_path)
    labels = [ev.ground_truth(i) for i in range(12)]
    read = [kitti.read_label(tmp_path / "final_result" / "data" / f"{i:06d}.txt") for i in range(12)]
    again = kitti_eval(labels, [kitti.frame_detections(objs) for objs in read])
    names = [k for k in again if k.startswith("kitti/")]
    assert max(abs(again[k] - in_run[k]) for k in names) <= 0.01
    assert max(in_run[k] for k in names) > 10  # a table with substance
    # Scores rounded to 4 decimals (as OpenPCDet writes them) tie and reorder: the same check would fail.
    for objs in read:
        for o in objs:
            o.score = round(float(o.score), 4)
    rounded = kitti_eval(labels, [kitti.frame_detections(objs) for objs in read])
    assert max(abs(rounded[k] - in_run[k]) for k in names) > 0.01


@pytest.mark.slow
def test_the_table_is_printed_logged_and_in_eval_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Training logs the whole table (metrics.jsonl); ``trainwell eval --export --out`` prints OpenPCDet's result
    string, writes it as result.txt beside the KITTI result files, and puts every AP in eval.json — the same values."""
    from trainwell.cli import main
    from trainwell.tasks.detection3d.table import metric_names, result_string

    small = ["data.train_size=8", "data.val_size=4", "train.epochs=1", "eval.every_epochs=1", f"run.dir={tmp_path}"]
    assert main(["train", str(TINY), *small]) == 0
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in logged if r["kind"] == "val"][-1]
    capsys.readouterr()
    checkpoint = str(tmp_path / "checkpoints" / "last.pt")
    out, export = tmp_path / "eval.json", tmp_path / "export"
    assert main(["eval", str(TINY), *small, f"--checkpoint={checkpoint}", f"--export={export}", f"--out={out}"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads(out.read_text())["metrics"]
    assert set(metric_names()) <= set(metrics) and set(metric_names()) <= set(val)
    table = [n for n in metric_names() if n.startswith("kitti/")]
    # 3 classes × (bbox 1 IoU, bev 2, 3d 2, aos 1: the devkit's two sets share the 2D threshold) × 3 difficulties × 2
    assert len(table) == 3 * (1 + 2 + 2 + 1) * 3 * 2
    assert all(metrics[n] == pytest.approx(val[n], abs=1e-9) for n in table)  # the run's last evaluation, again
    text = result_string(metrics)
    assert text in printed and (export / "result.txt").read_text() == text
    assert len(list((export / "final_result" / "data").glob("*.txt"))) == 4
