"""The RGB-D hand-pose task (UTNet-style): rendered RGB-D crops in, 21 root-relative joints (mm) and a mesh out.

``task.class_path: trainwell.tasks.hand_pose:RGBDHandPoseTask``. Batches are dicts with the keys of
:data:`~trainwell.tasks.hand_pose.rgbd_data.RGBD_SAMPLE_KEYS` (``rgb`` in [0, 1], ``depth_mm`` in mm, 0 = no
return), so the doctor's first-batch report names the image and depth ranges plainly.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainwell.engine.task import DataConfig, Evaluator, MetricSpec, Task, TaskConfig
from trainwell.tasks.hand_pose.augment import AugmentConfig
from trainwell.tasks.hand_pose.datasets import collate_hand_batch
from trainwell.tasks.hand_pose.image_model import RGBDHandNet, RGBDNetConfig
from trainwell.tasks.hand_pose.losses import bone_tolerance
from trainwell.tasks.hand_pose.render import RenderConfig
from trainwell.tasks.hand_pose.rgbd_data import RenderedHandDataset
from trainwell.tasks.hand_pose.rgbd_losses import RGBDLossWeights, rgbd_losses
from trainwell.tasks.hand_pose.server_metrics import (
    SERVER_METRIC_NAMES,
    server_metric_specs,
    server_metrics,
    server_result_keys,
    server_sample_results,
)
from trainwell.tasks.hand_pose.skeleton import ROOT, palm_view_angle_deg
from trainwell.tasks.hand_pose.submit import absolute_predictions, write_freihand_pred, write_ho3d_pred
from trainwell.tasks.hand_pose.synthetic import SyntheticHandsConfig
from trainwell.tasks.hand_pose.task import SCALE_BONE, HandPoseEvaluator

Batch = dict[str, torch.Tensor]


@dataclass
class RGBDTaskConfig(TaskConfig):
    """``task:`` section of the RGB-D hand-pose task."""

    class_path: str = "trainwell.tasks.hand_pose:RGBDHandPoseTask"
    """Import path of the task class."""
    model: RGBDNetConfig = field(default_factory=RGBDNetConfig)
    """The RGB-D network's size."""
    loss_weights: RGBDLossWeights = field(default_factory=RGBDLossWeights)
    """Weight of each UTNet part (0 drops it): keypoint_2d, joint_3d, vertex, shape_prior, pose_prior, aux."""
    pose_prior_margin_deg: float = 2.0
    """The pose prior tolerates angles this far (degrees) beyond the anatomical limits."""


@dataclass
class RGBDDataConfig(SyntheticHandsConfig, RenderConfig, DataConfig):
    """``data:`` section: the hand generator's keys, the renderer's, the dataset sizes and the augmentation."""

    num_unique: int = 4096
    """Distinct rendered training hands."""
    repeats: int = 8
    """Augmented showings of each training hand (the training set has ``num_unique × repeats`` indices)."""
    val_size: int = 512
    """Rendered validation hands (a disjoint stream, no augmentation)."""
    test_size: int = 512
    """Rendered test hands (``trainwell test``; a third disjoint stream)."""
    seed: int = 0
    """Data seed: with the split and the index it determines every sample."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Training augmentation (in-plane rotation, scale, crop jitter, colour)."""


VIEW_BINS_DEG = (0, 30, 60, 90, 120, 150, 180)
"""Edges of the view-angle bins (:func:`~.skeleton.palm_view_angle_deg`: 0° palm to the camera, 180° the back)."""


class RGBDHandEvaluator(HandPoseEvaluator):
    """Root-relative MPJPE / PA-MPJPE (mm), per-joint errors, MPVPE / PA-MPVPE / F-scores on the pack's mesh; the
    absolute wrist (``root_error``, ``mpjpe_cam``); the FreiHAND / HO3D servers' metrics (``freihand/…``, ``ho3d/…``,
    :mod:`.server_metrics`); and the root-relative errors per view-angle bin (``pa_mpjpe_by_view/0_30deg``, …).

    It also keeps each sample's absolute (camera-frame) predicted joints and vertices, gathered by index with the
    errors, so that :meth:`save_outputs` writes the benchmark files (FreiHAND and HO3D ``pred.json``).
    """

    def __init__(self) -> None:
        super().__init__(root_index=ROOT, scale_bone=SCALE_BONE, evaluate_vertices=True)

    def update_with_outputs(self, outputs: dict[str, torch.Tensor], batch: Batch, indices: torch.Tensor) -> None:
        """Score a batch of model outputs and keep the absolute predictions for :meth:`save_outputs`."""
        self.update(
            outputs["joints_mm"],
            batch["joints_rel_mm"],
            indices,
            pred_vertices=outputs["vertices_mm"],
            target_vertices=batch["vertices_rel_mm"],
        )
        absolute = absolute_predictions(outputs)
        absolute = {name: value.detach().float() for name, value in absolute.items()}  # what the files will hold
        target_vertices = batch["vertices_rel_mm"] + batch["root_cam_mm"][:, None]
        row = server_sample_results(
            absolute["joints_cam_mm"],
            batch["joints_cam_mm"],
            absolute["vertices_cam_mm"],
            target_vertices,
            scale_bone=SCALE_BONE,
        )
        row.update(absolute)
        row["root_error"] = torch.linalg.vector_norm(outputs["root_cam_mm"].float() - batch["root_cam_mm"], dim=-1)
        row["view_angle_deg"] = palm_view_angle_deg(batch["joints_cam_mm"].double())
        for name, value in row.items():  # device-to-host copies, as update() does
            self._results.setdefault(name, []).append(value.detach().cpu())

    def _expected_keys(self) -> set[str]:
        extra = {"joints_cam_mm", "vertices_cam_mm", "root_error", "view_angle_deg"}
        return super()._expected_keys() | extra | server_result_keys(absolute=True, vertices=True)

    def metric_names(self) -> set[str]:
        """The keys :meth:`compute` can return: a view bin appears only when the validation set has views in it."""
        bins = {
            f"{name}_by_view/{lo}_{hi}deg"
            for lo, hi in itertools.pairwise(VIEW_BINS_DEG)
            for name in ("mpjpe", "pa_mpjpe", "root_error")
        }
        return super().metric_names() | {"root_error", "mpjpe_cam"} | set(SERVER_METRIC_NAMES) | bins

    def compute(self) -> dict[str, float]:
        """The root-relative metrics, ``root_error`` and ``mpjpe_cam`` (mm), the servers' metrics, the view bins."""
        metrics = super().compute()
        _, res = self._sorted()
        metrics["root_error"] = float(res["root_error"].double().mean())
        metrics["mpjpe_cam"] = float(res["srv_joint_err"].double().mean())
        metrics.update(server_metrics(res))
        angle = res["view_angle_deg"]
        for lo, hi in itertools.pairwise(VIEW_BINS_DEG):
            inside = (angle >= lo) & ((angle < hi) if hi < VIEW_BINS_DEG[-1] else (angle <= hi))
            if bool(inside.any()):  # an empty bin has no error; it is left out rather than logged as NaN
                for name in ("mpjpe", "pa_mpjpe", "root_error"):
                    metrics[f"{name}_by_view/{lo}_{hi}deg"] = float(res[name][inside].double().mean())
        return metrics

    def save_outputs(self, out_dir: Path) -> list[Path]:
        """``out_dir/freihand/pred.json`` and ``out_dir/ho3d/pred.json`` in dataset-index order."""
        _, results = self._sorted()
        if "joints_cam_mm" not in results:
            return []
        joints, verts = results["joints_cam_mm"].numpy(), results["vertices_cam_mm"].numpy()
        return [
            write_freihand_pred(Path(out_dir) / "freihand" / "pred.json", joints, verts),
            write_ho3d_pred(Path(out_dir) / "ho3d" / "pred.json", joints, verts, check_frame=False),
        ]


class RGBDHandPoseTask(Task):
    """Hand pose from RGB-D crops: :class:`~.image_model.RGBDHandNet` on rendered synthetic hands."""

    Config = RGBDTaskConfig
    DataConfig = RGBDDataConfig
    cfg: RGBDTaskConfig
    data_cfg: RGBDDataConfig

    # -- construction -------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        return RGBDHandNet(self.cfg.model)

    def build_datasets(self) -> tuple[RenderedHandDataset, RenderedHandDataset]:
        d = self.data_cfg
        return (
            RenderedHandDataset(d, d, d.seed, "train", d.num_unique, repeats=d.repeats, augment=d.augment),
            RenderedHandDataset(d, d, d.seed, "val", d.val_size),
        )

    def build_test_dataset(self) -> RenderedHandDataset:
        d = self.data_cfg
        return RenderedHandDataset(d, d, d.seed, "test", d.test_size)

    def build_evaluator(self) -> RGBDHandEvaluator:
        return RGBDHandEvaluator()

    # -- per batch ----------------------------------------------------------------------------
    @staticmethod
    def _predict(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        return model(batch["rgb"], batch["depth_mm"], batch["intrinsics"])

    def compute_losses(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        return rgbd_losses(
            self._predict(model, batch),
            batch,
            self.cfg.loss_weights,
            bone_tolerance=bone_tolerance(self.data_cfg.bone_length_jitter),
            pose_margin_rad=math.radians(self.cfg.pose_prior_margin_deg),
        )

    def eval_step(self, model: nn.Module, batch: Batch, indices: torch.Tensor, evaluator: Evaluator) -> None:
        evaluator.update_with_outputs(self._predict(model, batch), batch, indices)  # type: ignore[attr-defined]

    # -- optional -----------------------------------------------------------------------------
    def collate_fn(self) -> Any:
        return collate_hand_batch

    def metric_names(self) -> set[str]:
        return RGBDHandEvaluator().metric_names()  # an evaluator holds no data until updated: cheap to build

    def metric_specs(self) -> dict[str, MetricSpec]:
        errors = ("mpjpe", "pa_mpjpe", "mpjpe_sc_tr", "n_mpjpe", "mpvpe", "pa_mpvpe", "root_error", "mpjpe_cam")
        # A hand is ~200 mm long: a mean error beyond 1 m means wrong units or a broken prediction.
        specs = {name: MetricSpec(unit="mm", higher_is_better=False, plausible=(0.0, 1000.0)) for name in errors}
        for name in ("pck@20mm", "pa_pck@20mm", "auc_0_50mm", "pa_auc_0_50mm", "f@5mm", "f@15mm", "pa_f@5mm"):
            specs[name] = MetricSpec(unit="", higher_is_better=True, plausible=(0.0, 1.0))
        specs["pa_f@15mm"] = MetricSpec(unit="", higher_is_better=True, plausible=(0.0, 1.0))
        views = (
            "by the angle between the palm's normal and the direction to the camera (0-30deg: the palm faces it, "
            "150-180deg: the back); root-relative, root_error_by_view the absolute wrist"
        )
        for name in ("mpjpe_by_view", "pa_mpjpe_by_view", "root_error_by_view"):  # groups: the report's bar charts
            specs[name] = MetricSpec(unit="mm", higher_is_better=False, plausible=(0.0, 1000.0), description=views)
        specs.update(server_metric_specs())  # freihand/…, ho3d/…, with their protocols for the report
        return specs

    def metric_units(self) -> dict[str, str]:
        return {name: spec.unit for name, spec in self.metric_specs().items() if spec.unit}

    def check_batch(self, batch: Batch) -> list[Any]:
        """The pose checks (root-centred, mm, keypoints inside the crop) and the image checks (:mod:`.checks`)."""
        from trainwell.tasks.hand_pose.checks import check_hand_batch
        from trainwell.tasks.hand_pose.image_checks import check_image_batch

        size = self.data_cfg.crop_size_px
        return check_hand_batch(batch, (size, size)) + check_image_batch(batch)

    def predict(self, model: nn.Module, input_path: Path, out_dir: Path | None) -> Any:
        """Joints (and vertices) for an image (+ depth), a ``.npz`` of crops, or an HO3D evaluation root (its
        ``pred.json`` in ``evaluation.txt`` order); see :func:`.submit.predict_file`, :func:`.submit.predict_dataset`.
        """
        from trainwell.tasks.hand_pose.submit import predict_file

        return predict_file(model, input_path, out_dir, crop_size_px=self.data_cfg.crop_size_px)
