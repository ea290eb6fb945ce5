"""The FreiHAND and HO3D servers' scores, computed in the run and logged as ``freihand/…`` and ``ho3d/…``.

The official ``eval.py`` of both benchmarks (``lmb-freiburg/freihand``, ``shreyashampali/ho3d``) scores absolute,
camera-frame joints and vertices in metres. Per sample they compute:

* the **unaligned** joint error (no root subtraction: the absolute position counts);
* the **Procrustes-aligned** joint error: ``align_w_scale``, a similarity whose "rotation" may be a mirror, with the
  1e-8 norm guard (:data:`~trainwell.metrics.SERVER_NORM_GUARD_M`);
* HO3D only: the **scale-and-translation aligned** error (``align_sc_tr``: the prediction scaled by the ratio of the
  wrist → middle-MCP bones and moved onto the true wrist);
* when the prediction has as many vertices as the ground truth (the scripts compare the two counts, on the first
  sample; not with 778): the unaligned and aligned (fitted on the vertices) mesh errors, and F-scores at 5 and 15 mm
  of the unaligned and the aligned mesh.

They reduce each joint's errors over the samples (mean; PCK on ``linspace(0, 50 mm, 100)``, ``<=``; the trapezoid
AUC) and average over joints; mesh errors likewise over vertices, F-scores over samples. The root-relative,
proper-rotation numbers the pack logs without a prefix (``mpjpe``, ``pa_mpjpe``) are a different protocol.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from trainwell.engine.task import MetricSpec
from trainwell.metrics import (
    SERVER_NORM_GUARD_M,
    f_score,
    joint_errors,
    masked_mean,
    pa_joint_errors,
    pck_auc,
    per_joint_mean,
    sc_tr_joint_errors,
    similarity_align,
)

F_SCORE_THRESHOLDS_MM = (5.0, 15.0)
"""The servers' F-score thresholds (``f_threshs = [0.005, 0.015]`` metres)."""

SERVER_METRIC_NAMES: tuple[str, ...] = tuple(
    f"{server}/{name}"
    for server in ("freihand", "ho3d")
    for name in (
        *("mpjpe_mm", "auc_0_50", "pa_mpjpe_mm", "pa_auc_0_50"),
        *(("sc_tr_mpjpe_mm", "sc_tr_auc_0_50") if server == "ho3d" else ()),
        *("mpvpe_mm", "pa_mpvpe_mm", "f_5mm", "f_15mm", "pa_f_5mm", "pa_f_15mm"),
    )
)
"""Every name :func:`server_metrics` can log (errors end in ``_mm``; the rest are fractions in [0, 1])."""

SERVER_PROTOCOLS = {
    "freihand": (
        "FreiHAND's eval.py on absolute camera-frame joints and mesh: unprefixed = unaligned (the wrist's error "
        "included), pa_ = similarity alignment with scale and mirrors allowed; not the root-relative mpjpe / pa_mpjpe "
        "(proper rotations)"
    ),
    "ho3d": (
        "HO3D's eval.py: FreiHAND's protocol plus sc_tr_ (scaled by the wrist-to-middle-MCP bone, moved onto the true "
        "wrist); not the root-relative mpjpe / pa_mpjpe (proper rotations)"
    ),
}
"""One line per server on its protocol, the :class:`~trainwell.engine.task.MetricSpec` description of its metrics."""

_JOINT_KEYS = {"srv_joint_err": "", "srv_pa_joint_err": "pa_", "srv_sc_tr_joint_err": "sc_tr_"}


def server_metric_specs(names: tuple[str, ...] | set[str] = SERVER_METRIC_NAMES) -> dict[str, MetricSpec]:
    """Specs of server metrics: errors (``_mm``) lower is better below 1 m, AUCs and F-scores fractions, each with
    its server's protocol as the description (what ``trainwell report`` prints beside the group)."""
    specs = {}
    for name in sorted(names):
        error = name.endswith("_mm")
        specs[name] = MetricSpec(
            unit="mm" if error else "",
            higher_is_better=not error,
            plausible=(0.0, 1000.0 if error else 1.0),
            description=SERVER_PROTOCOLS[name.split("/", 1)[0]],
        )
    return specs


def server_sample_results(
    pred_joints_mm: Tensor,
    target_joints_mm: Tensor,
    pred_vertices_mm: Tensor | None = None,
    target_vertices_mm: Tensor | None = None,
    *,
    absolute: bool = True,
    scale_bone: tuple[int, int] = (0, 9),
) -> dict[str, Tensor]:
    """Per-sample results of the servers' protocols, to be stored by index and reduced by :func:`server_metrics`.

    Args:
        pred_joints_mm, target_joints_mm: ``(B, 21, 3)`` joints, mm; camera frame when ``absolute``, else any common
            origin (root-relative predictions: only the translation-free protocols are computed).
        pred_vertices_mm, target_vertices_mm: ``(B, V, 3)`` meshes in the same frame, or ``None``.
        absolute: the joints (and vertices) are absolute positions, so the unaligned errors mean something.
        scale_bone: the wrist → middle-MCP bone in the joints' order (HO3D's ``(0, 4)`` in its own MANO order).

    Returns ``srv_*`` tensors: per-joint errors ``(B, 21)`` mm, mesh errors ``(B,)`` mm, F-scores ``(B, 2)``.
    """
    reflect, guard = True, SERVER_NORM_GUARD_M
    out = {
        "srv_pa_joint_err": pa_joint_errors(
            pred_joints_mm, target_joints_mm, allow_reflection=reflect, norm_guard_m=guard
        ),
        "srv_sc_tr_joint_err": sc_tr_joint_errors(
            pred_joints_mm, target_joints_mm, root_index=0, scale_bone=scale_bone
        ),
    }
    if absolute:
        out["srv_joint_err"] = joint_errors(pred_joints_mm, target_joints_mm, root_index=None)
    if pred_vertices_mm is None or target_vertices_mm is None:
        return out
    if pred_vertices_mm.shape != target_vertices_mm.shape:
        raise ValueError(
            f"predicted mesh {tuple(pred_vertices_mm.shape)} and true mesh {tuple(target_vertices_mm.shape)} differ: "
            "the servers then skip the mesh errors; pass no vertices to score the joints only"
        )
    aligned = similarity_align(pred_vertices_mm, target_vertices_mm, allow_reflection=reflect, norm_guard_m=guard)
    target = target_vertices_mm.to(torch.float64)
    out["srv_pa_mesh_err"] = masked_mean(torch.linalg.vector_norm(aligned - target, dim=-1))
    out["srv_pa_f"] = f_score(aligned, target, F_SCORE_THRESHOLDS_MM)
    if absolute:
        out["srv_mesh_err"] = masked_mean(joint_errors(pred_vertices_mm, target_vertices_mm, root_index=None))
        out["srv_f"] = f_score(pred_vertices_mm, target_vertices_mm, F_SCORE_THRESHOLDS_MM)
    return out


def server_result_keys(*, absolute: bool, vertices: bool) -> set[str]:
    """The keys :func:`server_sample_results` returns for these options."""
    keys = {"srv_pa_joint_err", "srv_sc_tr_joint_err"}
    if absolute:
        keys.add("srv_joint_err")
    if vertices:
        keys |= {"srv_pa_mesh_err", "srv_pa_f"} | ({"srv_mesh_err", "srv_f"} if absolute else set())
    return keys


def server_metrics(results: Mapping[str, Tensor]) -> dict[str, float]:
    """``freihand/…`` and ``ho3d/…`` metrics from the stored per-sample results of the whole dataset.

    Errors are in mm (``_mm``), AUCs and F-scores in [0, 1]. FreiHAND reports the unaligned and Procrustes-aligned
    joints, the meshes and the F-scores; HO3D reports the same and the scale-and-translation aligned joints.
    Papers' FreiHAND tables quote ``pa_mpjpe_mm``, ``pa_mpvpe_mm``, ``pa_f_5mm`` and ``pa_f_15mm``.
    """
    table: dict[str, float] = {}
    for key, prefix in _JOINT_KEYS.items():
        if key in results:
            errors = results[key].to(torch.float64)
            table[f"{prefix}mpjpe_mm"] = float(per_joint_mean(errors).mean())  # per joint, then over joints
            table[f"{prefix}auc_0_50"] = pck_auc(errors, min_mm=0.0, max_mm=50.0, num=100)
    for key, prefix in (("srv_mesh_err", ""), ("srv_pa_mesh_err", "pa_")):
        if key in results:
            table[f"{prefix}mpvpe_mm"] = float(results[key].to(torch.float64).mean())
    for key, prefix in (("srv_f", ""), ("srv_pa_f", "pa_")):
        if key in results:
            for k, t in enumerate(F_SCORE_THRESHOLDS_MM):
                table[f"{prefix}f_{t:g}mm"] = float(results[key][:, k].to(torch.float64).mean())
    metrics = {f"freihand/{name}": value for name, value in table.items() if not name.startswith("sc_tr_")}
    metrics.update({f"ho3d/{name}": value for name, value in table.items()})
    return metrics
