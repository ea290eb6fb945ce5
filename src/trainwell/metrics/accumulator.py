"""``PoseAccumulator``: per-sample pose errors keyed by dataset index, reduced once over the whole dataset.

The engine drives it duck-typed (``reset / update / local_results / load_results / compute``, see
``trainwell.engine.task.Evaluator``): every process scores its shard with :meth:`PoseAccumulator.update`,
the engine gathers :meth:`PoseAccumulator.local_results` from all processes, checks that each index
appears once, hands them back through :meth:`PoseAccumulator.load_results`, and calls
:meth:`PoseAccumulator.compute`. Means are taken in index order, so the numbers do not depend on how the
samples were sharded or batched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from trainwell.metrics.pose import (
    HO3D_SCALE_BONE,
    Unit,
    f_score,
    joint_errors,
    masked_mean,
    mm_per_unit,
    mpvpe,
    n_joint_errors,
    pa_joint_errors,
    sc_tr_joint_errors,
    similarity_align,
)
from trainwell.metrics.reduce import auc_thresholds, pck, pck_auc, pck_curve, per_joint_mean


class PoseAccumulator:
    """Scores ``(B, J, 3)`` joint predictions (and optionally ``(B, V, 3)`` meshes), exactly once per sample.

    Args:
        root_index: joint subtracted from both skeletons for MPJPE, N-MPJPE, the scale-and-translation
            error and the vertex errors; ``None`` compares absolute positions (FreiHAND/HO3D "unaligned").
        keypoint_indices: evaluate only these joints (indices into the full skeleton; alignment
            anchors ``root_index`` and ``scale_bone`` still index the full skeleton). ``None``: all joints.
        allow_reflection: let the Procrustes fit use mirrors, as the FreiHAND/HO3D servers do.
        unit: unit of the inputs, ``"mm"`` or ``"m"``; every reported error is in millimetres.
        scale_bone: ``(b0, b1)`` joints whose distance sets the scale of ``mpjpe_sc_tr``: HO3D's literal
            ``(0, 4)`` (wrist → middle MCP in MANO order); use ``(0, 9)`` for the FreiHAND/OpenPose order.
        pck_thresholds_mm: thresholds reported as ``pck@{t}mm`` and ``pa_pck@{t}mm``.
        auc_range_mm: ``(min, max)`` of the PCK-AUC threshold grid (FreiHAND: 0 to 50 mm).
        auc_num_thresholds: points of that grid (FreiHAND: 100).
        evaluate_vertices: expect ``pred_vertices`` / ``target_vertices`` in :meth:`update` and report
            MPVPE, PA-MPVPE and F-scores.
        f_score_thresholds_mm: thresholds of ``f@{t}mm`` / ``pa_f@{t}mm`` (FreiHAND: 5 and 15 mm).
        save_predictions: keep every predicted skeleton (input units, float64) for :meth:`predictions`.
        norm_guard_m: ``SERVER_NORM_GUARD_M`` (1e-8) reproduces the FreiHAND/HO3D servers' Procrustes scale
            exactly (joints and vertices); 0 (default) is the least-squares optimum.
        mask_convention: ``"per_sample"`` (default): masked joints stay out of every fit and each sample's
            mean, and samples weigh equally. ``"mmpose"``: as MMPose's ``keypoint_mpjpe(..., mask)``, the
            Procrustes and N-MPJPE fits use every evaluated joint, masked ones included (they must hold valid
            coordinates), and ``mpjpe``/``pa_mpjpe``/``n_mpjpe``/``mpjpe_sc_tr`` average over all visible
            (sample, joint) pairs. With ``root_index=None`` these equal MMPose's ``'none'``,
            ``'procrustes'`` and ``'scale'`` values.
    """

    def __init__(
        self,
        *,
        root_index: int | None = 0,
        keypoint_indices: Sequence[int] | None = None,
        allow_reflection: bool = False,
        unit: Unit = "mm",
        scale_bone: tuple[int, int] = HO3D_SCALE_BONE,
        pck_thresholds_mm: Sequence[float] = (20.0,),
        auc_range_mm: tuple[float, float] = (0.0, 50.0),
        auc_num_thresholds: int = 100,
        evaluate_vertices: bool = False,
        f_score_thresholds_mm: Sequence[float] = (5.0, 15.0),
        save_predictions: bool = False,
        norm_guard_m: float = 0.0,
        mask_convention: Literal["per_sample", "mmpose"] = "per_sample",
    ) -> None:
        mm_per_unit(unit)  # fail at construction, not at the first batch
        if mask_convention not in ("per_sample", "mmpose"):
            raise ValueError(f"mask_convention must be 'per_sample' or 'mmpose', not {mask_convention!r}")
        if not norm_guard_m >= 0.0:
            raise ValueError(f"norm_guard_m must be >= 0 metres (1e-8 reproduces the servers), got {norm_guard_m}")
        self.norm_guard_m = float(norm_guard_m)
        self.mask_convention = mask_convention
        self.root_index = root_index
        self.keypoint_indices = None if keypoint_indices is None else [int(i) for i in keypoint_indices]
        self.allow_reflection = allow_reflection
        self.unit: Unit = unit
        self.scale_bone = scale_bone
        self.pck_thresholds_mm = tuple(float(t) for t in pck_thresholds_mm)
        self.auc_range_mm = (float(auc_range_mm[0]), float(auc_range_mm[1]))
        self.auc_num_thresholds = auc_num_thresholds
        self.evaluate_vertices = evaluate_vertices
        self.f_score_thresholds_mm = tuple(float(t) for t in f_score_thresholds_mm)
        self.save_predictions = save_predictions
        self.reset()

    # -- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every stored sample."""
        self._indices: list[Tensor] = []
        self._results: dict[str, list[Tensor]] = {}

    def update(
        self,
        pred: Tensor,
        target: Tensor,
        indices: Tensor,
        mask: Tensor | None = None,
        *,
        pred_vertices: Tensor | None = None,
        target_vertices: Tensor | None = None,
    ) -> None:
        """Score one batch and store the per-sample results under their dataset ``indices``.

        Args:
            pred, target: ``(B, J, 3)`` joints in ``unit``.
            indices: ``(B,)`` integer dataset indices of the samples.
            mask: ``(B, J)`` bool, True where the target joint is annotated.
            pred_vertices, target_vertices: ``(B, V, 3)`` meshes, required when ``evaluate_vertices``.
        """
        if indices.shape != pred.shape[:1]:
            raise ValueError(f"indices must be (B,) = ({pred.shape[0]},) dataset indices, got {tuple(indices.shape)}")
        if self.evaluate_vertices and (pred_vertices is None or target_vertices is None):
            raise ValueError(
                "PoseAccumulator(evaluate_vertices=True) needs pred_vertices and target_vertices in update()"
            )
        keep = self._subset_mask(pred, mask)
        # The points the alignments are fitted on: the visible ones, or (MMPose) every evaluated joint.
        fit = keep if self.mask_convention == "per_sample" else self._subset_mask(pred, None)
        err = joint_errors(pred, target, mask=keep, root_index=self.root_index, unit=self.unit)
        reflect, guard = self.allow_reflection, self.norm_guard_m
        pa_err = pa_joint_errors(pred, target, mask=fit, allow_reflection=reflect, norm_guard_m=guard, unit=self.unit)
        n_err = n_joint_errors(pred, target, mask=fit, root_index=self.root_index, unit=self.unit)
        if keep is not None and fit is not keep:
            pa_err, n_err = pa_err.masked_fill(~keep, 0.0), n_err.masked_fill(~keep, 0.0)
        sc_tr_root = 0 if self.root_index is None else self.root_index  # HO3D anchors on the wrist, joint 0
        sc_tr = sc_tr_joint_errors(pred, target, root_index=sc_tr_root, scale_bone=self.scale_bone, unit=self.unit)
        row: dict[str, Tensor] = {
            "mpjpe": masked_mean(err, keep),
            "pa_mpjpe": masked_mean(pa_err, keep),
            "mpjpe_sc_tr": masked_mean(sc_tr, keep),
            "n_mpjpe": masked_mean(n_err, keep),
        }
        # Per-joint errors (B, K) over the evaluated joints feed PCK/AUC and the per-joint means.
        visible = torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device) if keep is None else keep
        if self.keypoint_indices is not None:
            cols = self.keypoint_indices
            err, pa_err, visible = err[:, cols], pa_err[:, cols], visible[:, cols]
        row.update(joint_err=err, pa_joint_err=pa_err, joint_visible=visible)
        if self.evaluate_vertices:
            assert pred_vertices is not None and target_vertices is not None
            row.update(self._vertex_results(pred, target, pred_vertices, target_vertices))
        if self.save_predictions:
            row["pred"] = pred.detach().to(torch.float64)
        # Device-to-host copies (each one a sync on GPU): results live on the CPU until compute().
        self._indices.append(indices.detach().to("cpu", torch.int64))
        for name, value in row.items():
            self._results.setdefault(name, []).append(value.detach().cpu())

    def _subset_mask(self, pred: Tensor, mask: Tensor | None) -> Tensor | None:
        """The visibility mask with joints outside ``keypoint_indices`` switched off (``None`` = all visible)."""
        if self.keypoint_indices is None:
            return mask
        keep = torch.zeros(pred.shape[:2], dtype=torch.bool, device=pred.device)
        keep[:, self.keypoint_indices] = True
        return keep if mask is None else keep & mask

    def _vertex_results(self, pred: Tensor, target: Tensor, pred_v: Tensor, target_v: Tensor) -> dict[str, Tensor]:
        """MPVPE (moved by the skeletons' roots), PA-MPVPE (fitted on the vertices) and F-scores ``(B, T)``."""
        roots: dict[str, Tensor] = {}
        if self.root_index is not None:
            roots = {
                name: x[:, self.root_index].to(torch.float64)
                for name, x in (("pred_root", pred), ("target_root", target))
            }
        # F-scores compare the same point sets MPVPE compares: both meshes moved by their roots.
        offset = (roots["pred_root"] - roots["target_root"]).unsqueeze(1) if roots else 0.0
        # PA-MPVPE fits the similarity on the vertices themselves (FreiHAND/HO3D with a MANO-sized mesh).
        aligned = similarity_align(
            pred_v, target_v, allow_reflection=self.allow_reflection, norm_guard_m=self.norm_guard_m, unit=self.unit
        )
        thresholds = self.f_score_thresholds_mm
        return {
            "mpvpe": mpvpe(pred_v, target_v, unit=self.unit, **roots),
            "pa_mpvpe": mpvpe(aligned, target_v, unit=self.unit),
            "f_score": f_score(pred_v.to(torch.float64) - offset, target_v, thresholds, unit=self.unit),
            "pa_f_score": f_score(aligned, target_v, thresholds, unit=self.unit),
        }

    # -- distributed hand-off ------------------------------------------------------------------
    def local_results(self) -> tuple[Tensor, dict[str, Tensor]]:
        """``(indices (N,), {name: (N, ...)})`` held by this process, CPU tensors in update order."""
        if not self._indices:
            return torch.zeros(0, dtype=torch.int64), {}
        # Concatenate once and keep the result, so repeated calls do not copy again.
        self._indices = [torch.cat(self._indices)]
        self._results = {name: [torch.cat(parts)] for name, parts in self._results.items()}
        return self._indices[0], {name: parts[0] for name, parts in self._results.items()}

    def load_results(self, indices: Tensor, results: dict[str, Tensor]) -> None:
        """Replace the stored samples by ``results`` (e.g. gathered from every process)."""
        for name, value in results.items():
            if value.shape[:1] != indices.shape:
                raise ValueError(f"result '{name}' has {tuple(value.shape)} rows for {tuple(indices.shape)} indices")
        self._indices = [indices.to("cpu", torch.int64)] if indices.numel() else []
        self._results = {name: [value.cpu()] for name, value in results.items()} if indices.numel() else {}

    # -- reduction -----------------------------------------------------------------------------
    def _sorted(self) -> tuple[Tensor, dict[str, Tensor]]:
        """All stored results ordered by dataset index (the fixed order every mean is taken in)."""
        indices, results = self.local_results()
        if indices.numel() == 0:
            raise ValueError(
                "PoseAccumulator has no samples to reduce: call update() on at least one batch "
                "(or load_results() with a non-empty set) after reset()."
            )
        order = torch.argsort(indices, stable=True)
        indices = indices[order]
        repeated = indices[1:][indices[1:] == indices[:-1]]
        if repeated.numel():
            raise ValueError(
                f"PoseAccumulator holds {repeated.numel()} repeated dataset indices (e.g. {repeated[:5].tolist()}): "
                "each sample must be scored once; call reset() before scoring the dataset again."
            )
        missing = sorted(self._expected_keys() - results.keys())
        if missing:
            raise ValueError(
                f"PoseAccumulator results lack {missing}: load_results() must get every key local_results() "
                "returned, from accumulators constructed with the same options."
            )
        return indices, {name: value[order] for name, value in results.items()}

    def _expected_keys(self) -> set[str]:
        """The per-sample results ``update`` stores under this accumulator's options."""
        keys = {"mpjpe", "pa_mpjpe", "mpjpe_sc_tr", "n_mpjpe", "joint_err", "pa_joint_err", "joint_visible"}
        if self.evaluate_vertices:
            keys |= {"mpvpe", "pa_mpvpe", "f_score", "pa_f_score"}
        if self.save_predictions:
            keys.add("pred")
        return keys

    def compute(self) -> dict[str, float]:
        """Dataset metrics, errors in mm and PCK/AUC/F in [0, 1]; means in dataset-index order.

        Keys: ``mpjpe``, ``pa_mpjpe``, ``mpjpe_sc_tr``, ``n_mpjpe``, ``pck@{t}mm``, ``pa_pck@{t}mm``,
        ``auc_{a}_{b}mm``, ``pa_auc_{a}_{b}mm``; with vertices also ``mpvpe``, ``pa_mpvpe``, ``f@{t}mm``,
        ``pa_f@{t}mm``. Samples without a visible joint do not enter the joint means. With
        ``mask_convention="mmpose"`` the four joint means weigh each sample by its number of visible joints.
        """
        _, res = self._sorted()
        visible = res["joint_visible"]
        names = ("mpjpe", "pa_mpjpe", "mpjpe_sc_tr", "n_mpjpe")
        if self.mask_convention == "mmpose":
            count = visible.sum(dim=1).to(torch.float64)  # sample mean × count = the sample's sum of distances
            total = count.sum()
            metrics = {name: float(torch.where(count > 0, res[name] * count, 0.0).sum() / total) for name in names}
        else:
            metrics = {name: float(res[name].nanmean()) for name in names}
        for prefix, errors in (("", res["joint_err"]), ("pa_", res["pa_joint_err"])):
            for t in self.pck_thresholds_mm:
                metrics[f"{prefix}pck@{t:g}mm"] = pck(errors, t, visible)
            lo, hi = self.auc_range_mm
            metrics[f"{prefix}auc_{lo:g}_{hi:g}mm"] = pck_auc(
                errors, visible, min_mm=lo, max_mm=hi, num=self.auc_num_thresholds
            )
        if "mpvpe" in res:
            metrics["mpvpe"] = float(res["mpvpe"].mean())
            metrics["pa_mpvpe"] = float(res["pa_mpvpe"].mean())
            for k, t in enumerate(self.f_score_thresholds_mm):
                metrics[f"f@{t:g}mm"] = float(res["f_score"][:, k].mean())
                metrics[f"pa_f@{t:g}mm"] = float(res["pa_f_score"][:, k].mean())
        return metrics

    def metric_names(self) -> set[str]:
        """The keys :meth:`compute` returns with this configuration (known before any sample is seen)."""
        names = {"mpjpe", "pa_mpjpe", "mpjpe_sc_tr", "n_mpjpe"}
        lo, hi = self.auc_range_mm
        for prefix in ("", "pa_"):
            names |= {f"{prefix}pck@{t:g}mm" for t in self.pck_thresholds_mm} | {f"{prefix}auc_{lo:g}_{hi:g}mm"}
        if self.evaluate_vertices:
            names |= {"mpvpe", "pa_mpvpe"}
            names |= {f"{prefix}f@{t:g}mm" for t in self.f_score_thresholds_mm for prefix in ("", "pa_")}
        return names

    def per_joint_mpjpe(self) -> Tensor:
        """Mean root-aligned error of each evaluated joint ``(K,)`` in mm, over the samples where it is visible."""
        _, res = self._sorted()
        return per_joint_mean(res["joint_err"], res["joint_visible"])

    def per_joint_pa_mpjpe(self) -> Tensor:
        """Mean Procrustes-aligned error of each evaluated joint ``(K,)`` in mm."""
        _, res = self._sorted()
        return per_joint_mean(res["pa_joint_err"], res["joint_visible"])

    def pck_curve(self, *, aligned: bool = False) -> tuple[Tensor, Tensor]:
        """``(thresholds_mm (T,), pck (T,))`` on the AUC grid, root-aligned or Procrustes-aligned errors."""
        _, res = self._sorted()
        thr = auc_thresholds(*self.auc_range_mm, self.auc_num_thresholds)
        return thr, pck_curve(res["pa_joint_err" if aligned else "joint_err"], thr, res["joint_visible"])

    def predictions(self) -> tuple[Tensor, Tensor]:
        """``(indices (N,), pred (N, J, 3))`` sorted by index, in input units (needs ``save_predictions``)."""
        if not self.save_predictions:
            raise ValueError("PoseAccumulator(save_predictions=False) keeps no predictions; construct it with True")
        indices, res = self._sorted()
        return indices, res["pred"]
