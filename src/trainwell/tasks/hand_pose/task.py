"""The hand-pose task: lift synthetic 2D hand keypoints to root-relative 3D joints (mm)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainwell.engine.task import DataConfig, Evaluator, MetricSpec, Task, TaskConfig
from trainwell.metrics import PoseAccumulator
from trainwell.tasks.hand_pose.datasets import SyntheticHandPoseDataset, collate_hand_batch
from trainwell.tasks.hand_pose.losses import (
    LossWeights,
    bone_prior_loss,
    bone_tolerance,
    hand_pose_losses,
    joint_3d_loss,
    keypoint_2d_loss,
    per_joint_error_mm,
    pose_prior_loss,
    reprojection_errors,
)
from trainwell.tasks.hand_pose.model import HandLiftingNet, LiftingNetConfig, lifting_features
from trainwell.tasks.hand_pose.server_metrics import (
    SERVER_METRIC_NAMES,
    SERVER_PROTOCOLS,
    server_metric_specs,
    server_metrics,
    server_result_keys,
    server_sample_results,
)
from trainwell.tasks.hand_pose.skeleton import JOINT_NAMES, ROOT
from trainwell.tasks.hand_pose.synthetic import SyntheticHandsConfig

Batch = Mapping[str, torch.Tensor]


@dataclass
class HandPoseTaskConfig(TaskConfig):
    """``task:`` section of the hand-pose task."""

    class_path: str = "trainwell.tasks.hand_pose:HandPoseTask"
    """Import path of the task class."""
    model: LiftingNetConfig = field(default_factory=LiftingNetConfig)
    """The lifting network's size."""
    loss_weights: LossWeights = field(default_factory=LossWeights)
    """Weight of each named loss component (0 drops it): joint_3d, keypoint_2d, bone_prior, pose_prior, aux."""
    pose_prior_margin_deg: float = 2.0
    """The pose prior tolerates angles this far (degrees) beyond the anatomical limits before penalising."""


@dataclass
class HandPoseDataConfig(SyntheticHandsConfig, DataConfig):
    """``data:`` section: dataset sizes and seed, the generator's parameters, and the DataLoader's."""

    train_size: int = 80_000
    """Training samples (indices 0 … train_size-1 of the train stream)."""
    val_size: int = 5_000
    """Validation samples (a disjoint stream)."""
    test_size: int = 5_000
    """Test samples (``trainwell test``; a third disjoint stream)."""
    seed: int = 0
    """Data seed: with the split and the index it determines every sample."""


# HO3D's align_sc_tr scales by the wrist -> middle-MCP bone; in the FreiHAND/OpenPose order used here that is
# joints (0, 9) (HO3D's own (0, 4) indexes the MANO order).
SCALE_BONE = (ROOT, 9)


class HandPoseEvaluator(PoseAccumulator):
    """The pose accumulator, plus the root-aligned error of every joint as ``mpjpe_joint/<name>`` (mm).

    The per-joint values feed TensorBoard, ``metrics.jsonl`` and the per-joint bars of ``trainwell report``;
    log lines leave ``group/item`` metrics out.
    """

    def metric_names(self) -> set[str]:
        """The accumulator's names and ``mpjpe_joint/<name>`` of every joint but the root."""
        per_joint = {f"mpjpe_joint/{name}" for joint, name in enumerate(JOINT_NAMES) if joint != ROOT}
        return super().metric_names() | per_joint

    def compute(self) -> dict[str, float]:
        metrics = super().compute()
        per_joint = self.per_joint_mpjpe().tolist()
        for joint, error_mm in enumerate(per_joint):
            if joint != ROOT:  # the root is the alignment point: its error is 0 by construction
                metrics[f"mpjpe_joint/{JOINT_NAMES[joint]}"] = error_mm
        return metrics


class LiftingEvaluator(HandPoseEvaluator):
    """:class:`HandPoseEvaluator` plus the servers' translation-free metrics (:mod:`.server_metrics`).

    The lifting network predicts root-relative joints only, so of the FreiHAND / HO3D protocols it gets the
    Procrustes-aligned (``freihand/pa_mpjpe_mm``, ``freihand/pa_auc_0_50``, the same under ``ho3d/``) and HO3D's
    scale-and-translation aligned errors (``ho3d/sc_tr_mpjpe_mm``, ``ho3d/sc_tr_auc_0_50``); unaligned errors and
    meshes need an absolute prediction it does not make.

    It keeps each sample's predicted joints, so that :meth:`save_outputs` writes them
    (``predictions/joints_rel_mm.json`` in the run directory, as the other packs write theirs).
    """

    PREDICTIONS_FILE = "joints_rel_mm.json"

    def __init__(self, **options: Any) -> None:
        super().__init__(save_predictions=True, **options)

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        indices: torch.Tensor,
        mask: torch.Tensor | None = None,
        **vertices: torch.Tensor | None,
    ) -> None:
        """Score a batch (see :meth:`PoseAccumulator.update`) and store the servers' per-sample results."""
        super().update(pred, target, indices, mask, **vertices)
        for name, value in server_sample_results(pred, target, absolute=False, scale_bone=SCALE_BONE).items():
            self._results.setdefault(name, []).append(value.detach().cpu())  # device-to-host, as update() does

    def _expected_keys(self) -> set[str]:
        return super()._expected_keys() | server_result_keys(absolute=False, vertices=False)

    def metric_names(self) -> set[str]:
        """The hand-pose names and the servers' translation-free ones (Procrustes- and scale/translation-aligned)."""
        free = {
            n for n in SERVER_METRIC_NAMES if ("/pa_" in n or "/sc_tr_" in n) and "mpvpe" not in n and "_f_" not in n
        }
        return super().metric_names() | free

    def compute(self) -> dict[str, float]:
        metrics = super().compute()
        metrics.update(server_metrics(self._sorted()[1]))
        return metrics

    def save_outputs(self, out_dir: Path) -> list[Path]:
        """``out_dir/joints_rel_mm.json``: ``[{"index": i, "joints_rel_mm": 21×3}, …]`` in dataset-index order,
        root-relative camera axes in mm (what ``trainwell predict`` returns for one input)."""
        indices, joints = self.predictions()
        rows = [{"index": int(i), "joints_rel_mm": j.tolist()} for i, j in zip(indices, joints.float(), strict=True)]
        path = Path(out_dir) / self.PREDICTIONS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows), encoding="utf-8")
        return [path]


class HandPoseTask(Task):
    """2D→3D hand lifting on synthetic hands, scored with MPJPE / PA-MPJPE in mm.

    Batches are dicts (see :data:`trainwell.tasks.hand_pose.datasets.SAMPLE_KEYS`); the model maps
    ``(keypoints_2d_px, visibility, intrinsics)`` to root-relative joints in mm.
    """

    Config = HandPoseTaskConfig
    DataConfig = HandPoseDataConfig
    cfg: HandPoseTaskConfig
    data_cfg: HandPoseDataConfig

    @property
    def _bone_tolerance(self) -> float:
        return bone_tolerance(self.data_cfg.bone_length_jitter)

    @property
    def _pose_margin_rad(self) -> float:
        return math.radians(self.cfg.pose_prior_margin_deg)

    # -- construction -------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        return HandLiftingNet(self.cfg.model)

    def build_datasets(self) -> tuple[SyntheticHandPoseDataset, SyntheticHandPoseDataset]:
        d = self.data_cfg
        return (
            SyntheticHandPoseDataset(d, d.seed, "train", d.train_size),
            SyntheticHandPoseDataset(d, d.seed, "val", d.val_size),
        )

    def build_test_dataset(self) -> SyntheticHandPoseDataset:
        d = self.data_cfg
        return SyntheticHandPoseDataset(d, d.seed, "test", d.test_size)

    def build_evaluator(self) -> LiftingEvaluator:
        return LiftingEvaluator(root_index=ROOT, scale_bone=SCALE_BONE)

    # -- per batch ----------------------------------------------------------------------------
    @staticmethod
    def _predict(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        return model(batch["keypoints_2d_px"], batch["visibility"], batch["intrinsics"])

    def compute_losses(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        return hand_pose_losses(
            self._predict(model, batch),
            batch,
            self.cfg.loss_weights,
            bone_tolerance=self._bone_tolerance,
            pose_margin_rad=self._pose_margin_rad,
        )

    def eval_step(self, model: nn.Module, batch: Batch, indices: torch.Tensor, evaluator: Evaluator) -> None:
        pred = self._predict(model, batch)["joints_mm"]
        evaluator.update(pred, batch["joints_rel_mm"], indices)  # type: ignore[attr-defined]

    # -- optional -----------------------------------------------------------------------------
    def predict(self, model: nn.Module, input_path: Path, out_dir: Path | None) -> list[dict[str, Any]]:
        """Root-relative 3D joints (camera axes, mm) for each object of a JSON file (:mod:`.lifting_inputs`):
        ``[{"joints_rel_mm": 21×3}, …]``. The lifting model sees no depth, so it predicts no absolute root."""
        from trainwell.tasks.hand_pose.lifting_inputs import read_lifting_inputs

        inputs = read_lifting_inputs(input_path)
        device = next(model.parameters()).device
        joints = self._predict(model, {k: v.to(device) for k, v in inputs.items()})["joints_mm"]
        return [{"joints_rel_mm": j.tolist()} for j in joints.float().cpu()]

    def collate_fn(self) -> Callable[[Any], dict[str, Any]]:
        return collate_hand_batch

    def metric_names(self) -> set[str]:
        return self.build_evaluator().metric_names()  # an evaluator holds no data until updated: cheap to build

    def metric_units(self) -> dict[str, str]:
        # PoseAccumulator's errors are in mm; its PCK / AUC values are fractions (no unit).
        return {name: "mm" for name in ("mpjpe", "pa_mpjpe", "mpjpe_sc_tr", "n_mpjpe")}

    def metric_specs(self) -> dict[str, MetricSpec]:
        """Errors in mm, lower is better, plausible below 1 m; PCK / AUC fractions in [0, 1], higher is better.

        Why 1 000 mm: a hand is about 200 mm long, and predicting every joint at the wrist already scores an MPJPE
        of ~100 mm; an error of a metre is ten times that trivial guess — no model predicting a hand gets there
        unless its outputs have left the hand's scale (a diverged run, a unit slip).
        """
        specs = {name: MetricSpec(unit, plausible=(0.0, 1000.0)) for name, unit in self.metric_units().items()}
        for name in ("pck@20mm", "auc_0_50mm", "pa_pck@20mm", "pa_auc_0_50mm"):
            specs[name] = MetricSpec("", higher_is_better=True, plausible=(0.0, 1.0))
        specs.update(server_metric_specs({n for n in self.metric_names() if n.split("/")[0] in SERVER_PROTOCOLS}))
        return specs

    def check_batch(self, batch: Batch) -> list[Any]:
        """Root-centred targets, millimetre units, keypoints inside the image (:mod:`.checks`)."""
        from trainwell.tasks.hand_pose.checks import check_hand_batch

        return check_hand_batch(batch, (self.data_cfg.image_width_px, self.data_cfg.image_height_px))

    @torch.no_grad()
    def debug_losses(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        """Prediction/target statistics before and after root-centring, per-joint errors, raw components.

        Every value is a host sync; this runs only under the debug switch.
        """
        outputs = self._predict(model, batch)
        pred_rel, target_rel = outputs["joints_mm"], batch["joints_rel_mm"]
        root, visibility = batch["root_cam_mm"], batch["visibility"]
        pred_cam, target_cam = pred_rel + root.unsqueeze(1), batch["joints_cam_mm"]
        errors = per_joint_error_mm(pred_rel, target_rel)  # (B, 21)
        reprojection_px = reprojection_errors(pred_rel, root, batch["intrinsics"], batch["keypoints_2d_px"]) * (
            batch["intrinsics"][:, 0, 0].unsqueeze(1)
        )
        visible_px = reprojection_px[visibility > 0]
        features, _ = lifting_features(batch["keypoints_2d_px"], visibility, batch["intrinsics"])
        stats = {
            # before root-centring (camera frame; the prediction placed at the true root)
            "pred_cam_mean_mm": pred_cam.mean(),
            "target_cam_mean_mm": target_cam.mean(),
            "pred_cam_abs_max_mm": pred_cam.abs().max(),
            "target_cam_abs_max_mm": target_cam.abs().max(),
            "target_root_depth_mean_mm": root[:, 2].mean(),
            # after root-centring
            "pred_rel_mean_mm": pred_rel.mean(),
            "target_rel_mean_mm": target_rel.mean(),
            "pred_rel_std_mm": pred_rel.std(),
            "target_rel_std_mm": target_rel.std(),
            "pred_rel_abs_max_mm": pred_rel.abs().max(),
            "target_rel_abs_max_mm": target_rel.abs().max(),
            "pred_root_abs_max_mm": pred_rel[:, ROOT].abs().max(),
            # per-element loss statistics
            "joint_error_mean_mm": errors.mean(),
            "joint_error_max_mm": errors.max(),
            "joint_error_worst_joint": errors.mean(dim=0).argmax().float(),
            "aux_joint_error_mean_mm": per_joint_error_mm(outputs["aux_joints_mm"], target_rel).mean(),
            "reprojection_error_mean_px": visible_px.mean() if visible_px.numel() else torch.zeros(()),
            "reprojection_error_max_px": visible_px.max() if visible_px.numel() else torch.zeros(()),
            "visible_fraction": visibility.mean(),
            "input_feature_abs_max": features.abs().max(),
            # unweighted components
            "joint_3d": joint_3d_loss(pred_rel, target_rel),
            "keypoint_2d": keypoint_2d_loss(pred_rel, root, batch["intrinsics"], batch["keypoints_2d_px"], visibility),
            "bone_prior": bone_prior_loss(pred_rel, self._bone_tolerance),
            "pose_prior": pose_prior_loss(pred_rel, self._pose_margin_rad),
            "aux": joint_3d_loss(outputs["aux_joints_mm"], target_rel),
        }
        return {name: float(value) for name, value in stats.items()}
