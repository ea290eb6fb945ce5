"""Dataset-level reductions of per-point errors: FreiHAND's per-keypoint PCK/AUC and MMPose's pooled mean.

The per-sample functions of :mod:`.pose` give ``(B, N)`` distances in mm; these reduce them over a whole
dataset. Imports nothing of trainwell beyond :mod:`.pose`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from trainwell.metrics.pose import Unit, joint_errors, n_joint_errors, pa_joint_errors

# -- MMPose's pooled convention ---------------------------------------------------------------------
Alignment = Literal["none", "procrustes", "scale"]


def pooled_mean(errors: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``(B, N)`` values over every visible (sample, point) pair → a 0-d tensor (MMPose's averaging).

    Samples with more visible points weigh more, unlike :func:`masked_mean` followed by a mean over samples.
    """
    if mask is None:
        return errors.to(torch.float64).mean()
    if not bool(mask.any()):  # host sync: a mean of nothing is an error, not a number
        raise ValueError("pooled_mean: the mask hides every point; there is nothing to average")
    return errors.to(torch.float64)[mask].mean()


def pooled_mpjpe(
    pred: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    alignment: Alignment = "none",
    unit: Unit = "mm",
) -> Tensor:
    """MMPose's ``keypoint_mpjpe(pred, gt, mask, alignment)``: one pooled value (0-d tensor) in mm.

    Unlike the per-sample functions here, the alignment is fitted on **all** points, masked ones included
    (they must hold valid coordinates), and the distances are averaged over every visible (sample, point)
    pair. ``'none'``: absolute positions (no root subtraction); ``'procrustes'``: the similarity with a proper
    rotation (:func:`pa_joint_errors`); ``'scale'``: the least-squares scale about the origin
    (:func:`n_joint_errors` with ``root_index=None``).
    """
    if alignment == "none":
        errors = joint_errors(pred, target, root_index=None, unit=unit)
    elif alignment == "procrustes":
        errors = pa_joint_errors(pred, target, unit=unit)
    elif alignment == "scale":
        errors = n_joint_errors(pred, target, root_index=None, unit=unit)
    else:
        raise ValueError(f"alignment must be 'none', 'procrustes' or 'scale' (as in MMPose), not {alignment!r}")
    if mask is not None and mask.shape != pred.shape[:2]:
        raise ValueError(f"mask must be a bool tensor of shape {tuple(pred.shape[:2])}, got {tuple(mask.shape)}")
    return pooled_mean(errors, mask)


# -- dataset-level PCK / AUC ------------------------------------------------------------------------
def per_joint_mean(errors: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``(B, N)`` errors over the samples where each joint is visible → ``(N,)``; NaN if never."""
    if mask is None:
        return errors.to(torch.float64).mean(dim=0)
    count = mask.sum(dim=0)
    total = torch.where(mask, errors.to(torch.float64), 0.0).sum(dim=0)
    return torch.where(count > 0, total / count.clamp_min(1), torch.nan)


def auc_thresholds(min_mm: float = 0.0, max_mm: float = 50.0, num: int = 100) -> Tensor:
    """The FreiHAND threshold grid ``np.linspace(min_mm, max_mm, num)`` as a float64 tensor (mm)."""
    if num < 2 or not max_mm > min_mm:
        raise ValueError(f"an AUC needs num >= 2 thresholds and max_mm > min_mm, got {num}, [{min_mm}, {max_mm}]")
    return torch.from_numpy(np.linspace(min_mm, max_mm, num))


def per_joint_pck_curves(
    errors_mm: Tensor, thresholds_mm: Tensor | Sequence[float], mask: Tensor | None = None
) -> Tensor:
    """Share of visible samples with error ``<= threshold``, per joint: ``(N, T)``; NaN rows for unseen joints.

    ``errors_mm`` is ``(B, N)`` over the whole dataset. Sorting each joint's errors once and counting with
    ``searchsorted`` keeps memory at ``O(B N)`` for any number of thresholds.
    """
    errors = errors_mm.detach().to(torch.float64)
    if mask is not None:
        errors = torch.where(mask, errors, torch.inf)  # never counted as correct
        count = mask.sum(dim=0).to(torch.float64)
    else:
        count = torch.full((errors.shape[1],), float(errors.shape[0]), dtype=torch.float64, device=errors.device)
    thr = torch.as_tensor(thresholds_mm, dtype=torch.float64, device=errors.device).reshape(1, -1)
    ordered = errors.T.contiguous().sort(dim=1).values  # (N, B)
    correct = torch.searchsorted(ordered, thr.expand(ordered.shape[0], -1).contiguous(), right=True)
    return correct.to(torch.float64) / count.unsqueeze(1)  # 0 / 0 = NaN for joints never visible


def pck(errors_mm: Tensor, threshold_mm: float, mask: Tensor | None = None) -> float:
    """Percentage of correct keypoints in [0, 1]: per-joint share within ``threshold_mm``, mean over joints."""
    return float(per_joint_pck_curves(errors_mm, [threshold_mm], mask).nanmean())


def pck_curve(errors_mm: Tensor, thresholds_mm: Tensor | Sequence[float], mask: Tensor | None = None) -> Tensor:
    """FreiHAND PCK curve ``(T,)``: the per-joint curves averaged over joints seen at least once."""
    return per_joint_pck_curves(errors_mm, thresholds_mm, mask).nanmean(dim=0)


def pck_auc(
    errors_mm: Tensor, mask: Tensor | None = None, *, min_mm: float = 0.0, max_mm: float = 50.0, num: int = 100
) -> float:
    """Normalised area under the PCK curve on ``np.linspace(min_mm, max_mm, num)`` (FreiHAND/HO3D).

    Per joint: trapezoid area over the thresholds divided by that of a constant 1 curve; then the mean
    over joints seen at least once. Perfect predictions give exactly 1.0; errors above ``max_mm`` give 0.
    """
    thr = auc_thresholds(min_mm, max_mm, num).to(errors_mm.device)
    curves = per_joint_pck_curves(errors_mm, thr, mask)
    area = torch.trapezoid(curves, thr, dim=1) / torch.trapezoid(torch.ones_like(thr), thr)
    return float(area.nanmean())
