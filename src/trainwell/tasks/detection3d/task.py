"""The 3D detection task: PointPillars on synthetic LiDAR scenes (or a KITTI object directory), KITTI AP_R40.

OpenPCDet's ``model_func(model, batch) -> (loss, tb_dict, disp_dict)`` maps onto trainwell's loss contract in one
line (:meth:`Detection3DTask.compute_losses`): the weighted parts of ``tb_dict`` are the optimised components (their
sum is ``loss``), ``disp_dict`` is the progress line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from trainwell.doctor import Finding
from trainwell.engine.checkpoint.weights import ForeignWeights
from trainwell.engine.task import DataConfig, LossOutput, MetricSpec, Task, TaskCapabilityError, TaskConfig
from trainwell.tasks.detection3d import kitti
from trainwell.tasks.detection3d.ap import CLASSES, recall_at_iou
from trainwell.tasks.detection3d.augment import AugmentConfig
from trainwell.tasks.detection3d.checks import check_detection_batch, check_head_not_background
from trainwell.tasks.detection3d.datasets import (
    FrameDataset,
    collate_frames,
    frame_to_sample,
    in_range,
    synthetic_dataset,
)
from trainwell.tasks.detection3d.model import PillarsConfig, PointPillars
from trainwell.tasks.detection3d.openpcdet_format import read_openpcdet
from trainwell.tasks.detection3d.scenes import CLASS_NAMES, SceneConfig
from trainwell.tasks.detection3d.table import kitti_eval, metric_names, result_string


@dataclass
class Detection3DTaskConfig(TaskConfig):
    """``task:`` section of the 3D detection task."""

    class_path: str = "trainwell.tasks.detection3d:Detection3DTask"
    model: PillarsConfig = field(default_factory=PillarsConfig)
    """The detector (OpenPCDet's ``MODEL`` section: range, pillars, backbone, anchors, losses, post-processing)."""
    eval_gt_in_range_only: bool = False
    """Score only the labels whose centre lies in ``model.point_range_m`` (trainwell's old behaviour, optimistic).
    Off (the default): every label of the frame is scored, as KITTI's devkit and OpenPCDet do; an object the
    detector cannot see is a miss. When on, the evaluation output says so."""


@dataclass
class Detection3DDataConfig(DataConfig):
    """``data:`` section: synthetic scenes (default) or a KITTI object directory (``root``)."""

    root: str | None = None
    """A KITTI object directory (``training/{velodyne,label_2,calib}``, ``ImageSets/{train,val}.txt``); null =
    synthetic scenes."""
    train_size: int = 2000
    """Synthetic training frames (ignored with ``root``)."""
    val_size: int = 200
    test_size: int = 200
    """Synthetic test frames (``trainwell test``; a stream of their own). KITTI's testing split has no labels."""
    seed: int = 0
    """Scene and augmentation seed: with the split and the index it determines every frame."""
    scene: SceneConfig = field(default_factory=SceneConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    min_points: int = 5
    """KITTI frames: labels with fewer points are ignored as training targets."""
    cache: bool = True
    """Synthetic frames: keep each generated frame in memory (about 0.3 MB a frame) instead of regenerating it."""


def frame_id(index: int) -> str:
    """KITTI-style six-digit frame id of a synthetic frame."""
    return f"{index:06d}"


class KittiDataset(FrameDataset):
    """Frames of a KITTI object directory listed in ``ImageSets/<split>.txt``."""

    def __init__(
        self, cfg: Detection3DDataConfig, split: str, point_range_m: list[float], augment: AugmentConfig | None
    ) -> None:
        assert cfg.root is not None
        root = Path(cfg.root)
        self.ids = kitti.read_image_set(root, split)

        def load(index: int) -> dict[str, Any]:
            return kitti.load_kitti_frame(root, self.ids[index], cfg.min_points)

        # No cache: a KITTI split is gigabytes of points, and reading a frame's files is fast.
        super().__init__(load, len(self.ids), point_range_m, augment=augment, seed=cfg.seed, cache=False)


IN_RANGE_NOTE = (
    "NOTE task.eval_gt_in_range_only=true: labels outside model.point_range_m are left out of the KITTI "
    "evaluation; these APs are higher than KITTI's devkit would report."
)


class Detection3DEvaluator:
    """Ragged per-frame detections keyed by dataset index; the KITTI table and recall computed once (rank 0).

    Args:
        dataset: the validation frames (their raw, uncropped labels are the ground truth).
        class_names: the detector's classes (label ``k`` is ``class_names[k - 1]``).
        gt_in_range_only: score only labels inside the dataset's point range (``task.eval_gt_in_range_only``).
    """

    def __init__(
        self, dataset: FrameDataset, class_names: tuple[str, ...] = CLASS_NAMES, gt_in_range_only: bool = False
    ) -> None:
        self.dataset = dataset
        self.class_names = class_names
        self.gt_in_range_only = gt_in_range_only
        self.result_text = ""
        self.reset()

    def reset(self) -> None:
        self.indices: list[int] = []
        self.boxes: list[torch.Tensor] = []
        self.scores: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def add(self, indices: torch.Tensor, detections: list[dict[str, torch.Tensor]]) -> None:
        """Hold the detections of a batch: ``boxes (K, 7)``, ``scores (K,)``, ``labels (K,)`` per frame."""
        for i, det in zip(indices.tolist(), detections, strict=True):
            self.indices.append(i)
            self.boxes.append(det["boxes"].detach().float().cpu())
            self.scores.append(det["scores"].detach().float().cpu())
            self.labels.append(det["labels"].detach().long().cpu())

    def local_results(self) -> tuple[torch.Tensor, dict[str, Any]]:
        return torch.tensor(self.indices, dtype=torch.int64), {
            "boxes": self.boxes,
            "scores": self.scores,
            "labels": self.labels,
        }

    def load_results(self, indices: torch.Tensor, results: dict[str, Any]) -> None:
        self.indices = indices.tolist()
        self.boxes, self.scores, self.labels = list(results["boxes"]), list(results["scores"]), list(results["labels"])

    def _calib(self, index: int) -> kitti.Calib:
        return self.dataset.raw(index).get("calib") or kitti.synthetic_calib()

    def _objects(self, k: int) -> list[kitti.KittiObject]:
        """The ``k``-th held frame's detections as KITTI result lines (full precision; the files round them)."""
        names = [self.class_names[c - 1] for c in self.labels[k].tolist()]
        boxes = self.boxes[k].double().numpy().reshape(-1, 7)
        return kitti.result_objects(boxes, self.scores[k].double().numpy(), names, self._calib(self.indices[k]))

    def ground_truth(self, index: int) -> kitti.FrameLabels:
        """Frame ``index``'s labels as scored: all of them, or those in the point range with the option on."""
        frame = self.dataset.raw(index)
        keep = None
        if self.gt_in_range_only:
            rng = self.dataset.point_range_m
            boxes = np.asarray(frame["gt_boxes"], dtype=np.float64).reshape(-1, 7)
            keep = in_range(boxes[:, :3], [rng[0], rng[1], -np.inf, rng[3], rng[4], np.inf])
        return kitti.frame_labels(frame, self._calib(index), keep)

    def compute(self) -> dict[str, float]:
        if not self.indices:
            raise RuntimeError("Detection3DEvaluator.compute: no detections were added (was eval_step called?).")
        labels = [self.ground_truth(i) for i in self.indices]
        dets = [kitti.frame_detections(self._objects(k)) for k in range(len(self.indices))]
        classes = [c for c in CLASSES if c in self.class_names]
        metrics = kitti_eval(labels, dets, classes=classes)
        self.result_text = (IN_RANGE_NOTE + "\n" if self.gt_in_range_only else "") + result_string(metrics, classes)
        print(self.result_text, end="", flush=True)  # OpenPCDet logs the same table after each evaluation
        if self.gt_in_range_only:
            metrics["kitti/eval_gt_in_range_only"] = 1.0
        # Recall over every labelled box of the learned classes (as OpenPCDet counts), in the evaluation's frame.
        gts = [lab.boxes[[n in self.class_names for n in lab.names]] for lab in labels]
        metrics.update(recall_at_iou(gts, [d.boxes for d in dets]))
        return metrics

    def save_outputs(self, out_dir: Path) -> list[Path]:
        """KITTI result files ``out_dir/final_result/data/<frame>.txt`` (with scores), as OpenPCDet's test.py, and
        the printed table as ``out_dir/result.txt``."""
        data_dir = Path(out_dir) / "final_result" / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        ids = getattr(self.dataset, "ids", None)
        paths = []
        for k, i in enumerate(self.indices):
            path = data_dir / f"{ids[i] if ids else frame_id(i)}.txt"
            kitti.write_label(path, self._objects(k))
            paths.append(path)
        if self.result_text:
            (Path(out_dir) / "result.txt").write_text(self.result_text, encoding="utf-8")
            paths.append(Path(out_dir) / "result.txt")
        return paths


class Detection3DTask(Task):
    """PointPillars on LiDAR frames; KITTI AP_R40 (BEV, 3D) per class and difficulty."""

    Config = Detection3DTaskConfig
    DataConfig = Detection3DDataConfig

    def __init__(self, cfg: Detection3DTaskConfig, data_cfg: Detection3DDataConfig) -> None:
        super().__init__(cfg, data_cfg)
        self.train_set: FrameDataset | None = None
        self.val_set: FrameDataset | None = None
        self._augmentation_enabled = True  # the engine's data.disable_augmentation_last_epochs switch

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        d, rng = self.data_cfg, self.cfg.model.point_range_m
        if d.root:
            self.train_set = KittiDataset(d, "train", rng, d.augment)
            self.val_set = KittiDataset(d, "val", rng, None)
        else:
            self.train_set = synthetic_dataset(d.scene, d.seed, "train", d.train_size, rng, d.augment, d.cache)
            self.val_set = synthetic_dataset(d.scene, d.seed, "val", d.val_size, rng, None, d.cache)
        return self.train_set, self.val_set

    def build_model(self) -> nn.Module:
        return PointPillars(self.cfg.model)

    def foreign_weights(self, payload: dict[str, Any]) -> ForeignWeights | None:
        """``--init-from`` OpenPCDet's ``checkpoint_epoch_N.pth`` (its ``model_state``; same key names)."""
        return read_openpcdet(payload)

    def collate_fn(self) -> Any:
        return collate_frames

    def set_augmentation(self, enabled: bool) -> None:
        """``data.disable_augmentation_last_epochs`` (OpenPCDet's ``NUM_LAST_EPOCHS``): the engine's switch, applied
        by :meth:`on_epoch_start` together with ``augment.disable_from_epoch``."""
        self._augmentation_enabled = enabled

    def on_epoch_start(self, epoch: int) -> None:
        """Set the augmentation epoch; switch augmentation off from ``augment.disable_from_epoch`` on (and where the
        engine switched it off)."""
        if self.train_set is not None:
            stop = self.data_cfg.augment.disable_from_epoch
            on = self._augmentation_enabled and (stop is None or epoch < stop)
            self.train_set.set_epoch(epoch, augment_on=on)

    def compute_losses(self, model: nn.Module, batch: dict[str, Any]) -> LossOutput:
        loss, tb_dict, disp_dict = model(batch)
        # OpenPCDet's tb_dict parts (weighted) are the components; their sum is `loss`.
        return LossOutput(
            losses={"cls": tb_dict["rpn_loss_cls"], "loc": tb_dict["rpn_loss_loc"], "dir": tb_dict["rpn_loss_dir"]},
            logs={"rpn_loss": loss.detach()},
            progress=disp_dict,
        )

    def build_test_dataset(self) -> Dataset:
        d = self.data_cfg
        if d.root:
            raise TaskCapabilityError(
                "KITTI's testing split has no labels, so trainwell cannot score it: submit the result files of "
                "`trainwell predict` to the KITTI server, or hold out labelled frames as the val split."
            )
        return synthetic_dataset(d.scene, d.seed, "test", d.test_size, self.cfg.model.point_range_m, None, d.cache)

    def build_test_evaluator(self, dataset: Any) -> Detection3DEvaluator:
        return Detection3DEvaluator(dataset, gt_in_range_only=self.cfg.eval_gt_in_range_only)

    def build_evaluator(self) -> Detection3DEvaluator:
        if self.val_set is None:
            raise RuntimeError("build_evaluator() before build_datasets().")
        return Detection3DEvaluator(self.val_set, gt_in_range_only=self.cfg.eval_gt_in_range_only)

    def eval_step(self, model: nn.Module, batch: dict[str, Any], indices: torch.Tensor, evaluator: Any) -> None:
        evaluator.add(indices, model(batch))

    def metric_names(self) -> set[str]:
        return set(self.metric_specs())  # the specs enumerate kitti_eval's keys and the recalls, one by one

    def metric_specs(self) -> dict[str, MetricSpec]:
        ap = MetricSpec(unit="", higher_is_better=True, plausible=(0.0, 100.0))
        specs = {n: ap for n in metric_names()}
        specs.update({f"recall_3d_{t}": MetricSpec(higher_is_better=True, plausible=(0.0, 1.0)) for t in (30, 50, 70)})
        return specs

    def check_batch(self, batch: dict[str, Any]) -> list[Finding]:
        return check_detection_batch(batch)

    def debug_losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, float]:
        finding = check_head_not_background(model, batch, self.cfg.model.score_thresh)
        return {"head_only_background": float(finding is not None)}

    def predict(self, model: nn.Module, input_path: Path, out_dir: Path | None) -> Any:
        """Detect in one ``.bin`` point cloud; write ``out_dir/<frame>.txt`` (KITTI result lines) and return JSON.

        The calibration is ``<kitti>/calib/<frame>.txt`` beside ``<kitti>/velodyne/<frame>.bin`` when it exists
        (with the size of ``<kitti>/image_2/<frame>.png`` when that exists), else the synthetic scenes' camera.
        """
        path = Path(input_path)
        points = kitti.read_velodyne(path)
        calib_path = path.parent.parent / "calib" / f"{path.stem}.txt"
        image_path = path.parent.parent / "image_2" / f"{path.stem}.png"
        calib = kitti.frame_calib(calib_path, image_path) if calib_path.is_file() else kitti.synthetic_calib()
        empty = np.zeros((0, 7), np.float32)
        frame = {
            "points": points,
            "gt_boxes": empty,
            "gt_names": [],
            "ignored": np.zeros(0, bool),
            "height_px": np.zeros(0),
            "truncation": np.zeros(0),
            "occlusion": np.zeros(0, np.int64),
        }
        batch = collate_frames([frame_to_sample(frame, self.cfg.model.point_range_m)])
        device = next(model.parameters()).device
        batch["points"] = batch["points"].to(device)
        det = model(batch)[0]
        boxes, scores = det["boxes"].double().cpu().numpy(), det["scores"].cpu().numpy()
        names = [CLASS_NAMES[c - 1] for c in det["labels"].tolist()]
        objects = kitti.result_objects(boxes, scores, names, calib)
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            kitti.write_label(Path(out_dir) / f"{path.stem}.txt", objects)
        return {
            "frame": path.stem,
            "num_points": int(points.shape[0]),
            "detections": [
                {
                    "name": n,
                    "score": round(float(s), 4),
                    "box_lidar": [round(float(v), 4) for v in b],
                    "kitti": kitti.format_object(o),
                }
                for n, s, b, o in zip(names, scores, boxes, objects, strict=True)
            ],
        }
