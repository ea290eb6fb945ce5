"""Pose metrics as pure functions of batched tensors: MPJPE and its aligned variants, PCK/AUC, F-score.

Dataset-level reductions (PCK/AUC, MMPose's pooled mean) are in :mod:`.reduce`.

Conventions shared by every function here (see ``docs/metrics.md`` for the formulas and protocols):

* ``pred`` and ``target`` are ``(B, N, 3)`` point sets (joints or mesh vertices) of any floating dtype,
  on any device. Everything is computed in float64 under ``torch.no_grad()`` with autocast off, so
  float32 / bfloat16 inputs far from the origin (camera space, ~500 mm) lose nothing beyond their own
  rounding.
* ``mask`` is an optional ``(B, N)`` bool tensor, True where the target point is annotated. Masked points
  are left out of every mean and of every alignment fit; NaN/inf stored at masked points is ignored.
* ``unit`` is the unit of the *inputs*: ``"mm"`` or ``"m"``. Results are always millimetres.
* Per-sample results are ``(B,)`` float64: the mean over that sample's visible points. A sample with no
  visible point has no defined error and gets NaN. Geometrically degenerate input (all-zero or constant
  prediction, a single visible point) always gives the finite, optimal value instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch import Tensor

from trainwell.metrics.procrustes import best_rotation

Unit = Literal["mm", "m"]
_TO_MM: dict[str, float] = {"mm": 1.0, "m": 1000.0}

# HO3D's eval.py scales by the bone between joints 0 and 4 of the submitted array. HO3D annotations use
# the MANO joint order, where that is wrist -> middle MCP; in the FreiHAND/OpenPose order the same bone
# is (0, 9) and (0, 4) would be wrist -> thumb tip. Pass the pair that matches your joint order.
HO3D_SCALE_BONE: tuple[int, int] = (0, 4)

# The FreiHAND and HO3D servers' ``align_w_scale`` divides each centred set by its norm plus 1e-8 (in the
# submission's unit, metres), which scales the aligned prediction by |p_c|² / (|p_c| + 1e-8)² rather than by
# the least-squares optimum: a relative bias of ~2e-8 m / |p_c|, about 1e-7 for a hand. Pass this as
# ``norm_guard_m`` to reproduce the servers' numbers to round-off.
SERVER_NORM_GUARD_M: float = 1e-8


# -- plumbing ---------------------------------------------------------------------------------------
def mm_per_unit(unit: str) -> float:
    """Millimetres per input unit: 1 for ``"mm"``, 1000 for ``"m"``."""
    if unit not in _TO_MM:
        raise ValueError(f"unit must be 'mm' or 'm' (the unit of the input coordinates), not {unit!r}")
    return _TO_MM[unit]


@contextlib.contextmanager
def _exact(device: torch.device) -> Iterator[None]:
    # Evaluation runs inside the engine's autocast region; matmuls must stay float64 here.
    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
        yield


def _check(pred: Tensor, target: Tensor, mask: Tensor | None) -> None:
    if pred.ndim != 3 or pred.shape[-1] != 3 or pred.shape != target.shape:
        raise ValueError(
            f"pred and target must both be (B, N, 3) point sets, got pred {tuple(pred.shape)} and "
            f"target {tuple(target.shape)}"
        )
    if pred.shape[1] == 0:
        raise ValueError("pred and target hold no points (N = 0)")
    if mask is not None and (mask.dtype != torch.bool or mask.shape != pred.shape[:2]):
        raise ValueError(
            f"mask must be a bool tensor of shape {tuple(pred.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
        )


def _coords_first(x: Tensor, mask: Tensor | None) -> Tensor:
    """``(B, N, 3)`` → a fresh ``(B, 3, N)`` float64 tensor, zero at masked points (safe to edit in place).

    Coordinates-first makes every reduction over points run along contiguous memory, which is what
    makes the batched Procrustes fit cheap; the dtype cast and the transpose are one copy.
    """
    out = torch.empty((x.shape[0], 3, x.shape[1]), dtype=torch.float64, device=x.device)
    out.copy_(x.detach().transpose(1, 2))
    if mask is not None:
        out.masked_fill_(~mask.unsqueeze(1), 0.0)
    return out


def _relative(x: Tensor, root_index: int | None) -> Tensor:
    """Float64 copy of ``(B, N, 3)`` points, minus the ``root_index`` point when one is given."""
    x = x.detach().to(torch.float64, copy=True)
    if root_index is not None:
        x -= x[:, root_index : root_index + 1].clone()
    return x


def _norms(diff: Tensor, mask: Tensor | None, factor: float) -> Tensor:
    """Point-wise lengths ``(B, N)`` in mm of ``(B, N, 3)`` differences; zero at masked points."""
    err = torch.linalg.vector_norm(diff, dim=-1)
    if mask is not None:
        err = err.masked_fill(~mask, 0.0)  # masked points may hold NaN; keep it out of every sum
    scaled: Tensor = err * factor if factor != 1.0 else err
    return scaled


def masked_mean(errors: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over points of ``(B, N)`` values where ``mask`` ``(B, N)`` is True → ``(B,)``; NaN if none is."""
    if mask is None:
        return errors.mean(dim=1)
    count = mask.sum(dim=1)
    total = torch.where(mask, errors, 0.0).sum(dim=1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.nan)


# -- joint / vertex errors --------------------------------------------------------------------------
def joint_errors(
    pred: Tensor, target: Tensor, *, mask: Tensor | None = None, root_index: int | None = 0, unit: Unit = "mm"
) -> Tensor:
    """Per-point distances ``(B, N)`` in mm after subtracting each set's ``root_index`` point.

    ``root_index=None`` compares absolute positions (FreiHAND/HO3D "unaligned" error). The root is used
    even where ``mask`` hides it; masked entries are 0.
    """
    _check(pred, target, mask)
    with _exact(pred.device):
        diff = _relative(pred, root_index)
        diff -= _relative(target, root_index)
        return _norms(diff, mask, mm_per_unit(unit))


def mpjpe(
    pred: Tensor, target: Tensor, *, mask: Tensor | None = None, root_index: int | None = 0, unit: Unit = "mm"
) -> Tensor:
    """Mean per-joint position error after root alignment: per-sample ``(B,)``, millimetres.

    ``mean_j ||(p_j - p_root) - (t_j - t_root)||`` over the visible joints ``j``.
    """
    return masked_mean(joint_errors(pred, target, mask=mask, root_index=root_index, unit=unit), mask)


def mpvpe(
    pred: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    pred_root: Tensor | None = None,
    target_root: Tensor | None = None,
    unit: Unit = "mm",
) -> Tensor:
    """Mean per-vertex position error ``(B,)`` in mm of ``(B, V, 3)`` meshes.

    Without roots the vertices are compared where they are (FreiHAND/HO3D mesh error). With
    ``pred_root``/``target_root`` ``(B, 3)`` (usually each skeleton's root joint) both meshes are first
    moved by them (the body-mesh convention), as :func:`mpjpe` does with its root joint.
    """
    _check(pred, target, mask)
    if (pred_root is None) != (target_root is None):
        raise ValueError("give both pred_root and target_root (each (B, 3)), or neither")
    with _exact(pred.device):
        diff = pred.detach().to(torch.float64) - target.detach().to(torch.float64)
        if pred_root is not None and target_root is not None:
            diff -= (pred_root.detach().to(torch.float64) - target_root.detach().to(torch.float64)).unsqueeze(1)
        return masked_mean(_norms(diff, mask, mm_per_unit(unit)), mask)


# -- Procrustes (similarity) alignment --------------------------------------------------------------
# CPU chunking. The point-wise passes (centring, covariance, residuals) take at most _CPU_POINT_BYTES of
# float64 coordinates per set at a time, so that the next pass finds them in cache (~30% faster than
# 8 MB chunks at 100k × 21 points). The rotation solver runs ~500 small operations on (B,) vectors and
# wants few, large calls, but 64 KB vectors (8192 samples) stay below glibc's 128 KB mmap threshold: at
# 16384 every temporary is mapped and page-faulted afresh, which doubles the solver's time.
# Other devices take the whole batch at once.
_CPU_POINT_BYTES = 2 * 2**20
_CPU_SOLVE_CHUNK = 8192


def _centred(
    pred: Tensor, target: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Centred point sets and their moments over the visible points: ``p - mu_p``, ``t - mu_t`` ``(B, 3, N)``,
    ``K = Σ t pᵀ`` ``(B, 3, 3)``, ``Σ |p|²`` ``(B,)``, ``mu_p``, ``mu_t`` ``(B, 3, 1)``; float64, input units."""
    p = _coords_first(pred, mask)
    t = _coords_first(target, mask)
    if mask is None:
        mu_p, mu_t = p.mean(dim=2, keepdim=True), t.mean(dim=2, keepdim=True)
        p -= mu_p
        t -= mu_t
        pw = p
    else:
        weight = mask.unsqueeze(1).to(torch.float64)  # (B, 1, N)
        count = weight.sum(dim=2, keepdim=True).clamp_min(1.0)
        mu_p, mu_t = p.sum(dim=2, keepdim=True) / count, t.sum(dim=2, keepdim=True) / count
        p -= mu_p
        t -= mu_t
        pw = p * weight  # masked points drop out of the covariance and the variance
    batch, _, num = p.shape
    cov = torch.bmm(t, pw.transpose(1, 2))  # K = sum_j t_j p_j^T, (B, 3, 3)
    var_p = torch.bmm(pw.reshape(batch, 1, 3 * num), p.reshape(batch, 3 * num, 1)).view(batch)  # sum_j |p_j|^2
    return p, t, cov, var_p, mu_p, mu_t


def _scaled_rotation(cov: Tensor, var_p: Tensor, allow_reflection: bool, guard: float = 0.0) -> Tensor:
    """``s R`` ``(B, 3, 3)`` of the best similarity (Umeyama 1991) from ``K`` ``(B, 3, 3)`` and ``Σ |p|²`` ``(B,)``.

    ``guard`` > 0 (input units) replaces ``Σ |p|²`` by ``(|p| + guard)²``, the FreiHAND/HO3D servers' scale.
    """
    rot = best_rotation(cov, allow_reflection)
    # s = tr(Rᵀ K) / Σ|p|², the sum of the (signed) singular values over the variance. The trace is added in a
    # fixed order so that its bits do not depend on the batch size.
    products = (rot * cov).view(-1, 9)
    objective = products[:, 0]
    for i in range(1, 9):
        objective = objective + products[:, i]
    # The servers normalise both sets by (norm + guard) before the orthogonal fit and multiply back by the
    # target's (norm + guard) only: the target's guard cancels, the prediction's stays, squared.
    denom = var_p if guard == 0.0 else (var_p.sqrt() + guard).square()
    # Zero-variance prediction: every similarity maps it to one point; the best is scale 0 (onto mu_t).
    scale = torch.where(var_p > 0, objective / denom.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return rot * scale[:, None, None]


def _squared_residuals(s_rot: Tensor, p: Tensor, t: Tensor, out: Tensor) -> Tensor:
    """``|t_j - sR p_j|²`` ``(B, N)`` into ``out`` for centred ``p``, ``t`` ``(B, 3, N)`` and ``sR`` ``(B, 3, 3)``.

    One coordinate at a time with fused multiply-adds: 3× faster on CPU than ``baddbmm`` followed by a sum of
    squares, which runs one tiny matrix product per sample.
    """
    for i in range(3):
        r = torch.addcmul(t[:, i], s_rot[:, i, 0:1], p[:, 0], value=-1.0)
        r.addcmul_(s_rot[:, i, 1:2], p[:, 1], value=-1.0).addcmul_(s_rot[:, i, 2:3], p[:, 2], value=-1.0)
        if i == 0:
            torch.mul(r, r, out=out)
        else:
            out.addcmul_(r, r)
    return out


def _guard(norm_guard_m: float, unit: Unit) -> float:
    """``norm_guard_m`` (metres) in input units, checked."""
    if not norm_guard_m >= 0.0:
        raise ValueError(f"norm_guard_m must be >= 0 metres (SERVER_NORM_GUARD_M = 1e-8 or 0), got {norm_guard_m}")
    return norm_guard_m * 1000.0 / mm_per_unit(unit) if norm_guard_m else 0.0


def similarity_align(
    pred: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    allow_reflection: bool = False,
    norm_guard_m: float = 0.0,
    unit: Unit = "mm",
) -> Tensor:
    """``pred`` ``(B, N, 3)`` moved by its best similarity transform onto ``target``; float64, input units.

    The fit uses the visible points only; all points (masked ones too) are moved. With
    ``allow_reflection=True`` the "rotation" may be a mirror (FreiHAND/HO3D servers). ``norm_guard_m``:
    see :func:`pa_mpjpe` (``unit`` only converts it to input units).
    """
    _check(pred, target, mask)
    guard = _guard(norm_guard_m, unit)
    with _exact(pred.device):
        _, _, cov, var_p, mu_p, mu_t = _centred(pred, target, mask)
        s_rot = _scaled_rotation(cov, var_p, allow_reflection, guard)
        p = _coords_first(pred, None)
        p -= mu_p
        return torch.baddbmm(mu_t, s_rot, p).transpose(1, 2)


def pa_joint_errors(
    pred: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    allow_reflection: bool = False,
    norm_guard_m: float = 0.0,
    unit: Unit = "mm",
) -> Tensor:
    """Per-point distances ``(B, N)`` in mm after Procrustes alignment (see :func:`pa_mpjpe`); 0 where masked."""
    _check(pred, target, mask)
    guard = _guard(norm_guard_m, unit)
    batch, num = pred.shape[:2]
    on_cpu = pred.device.type == "cpu"
    solve_step = _CPU_SOLVE_CHUNK if on_cpu else batch
    point_step = max(1, _CPU_POINT_BYTES // (24 * num)) if on_cpu else batch
    with _exact(pred.device):
        err = torch.empty((batch, num), dtype=torch.float64, device=pred.device)
        for start in range(0, batch, solve_step):
            stop = min(start + solve_step, batch)
            parts = [slice(sub, min(sub + point_step, stop)) for sub in range(start, stop, point_step)]
            fits = [_centred(pred[s], target[s], None if mask is None else mask[s])[:4] for s in parts]
            cov, var_p = (torch.cat([f[i] for f in fits]) for i in (2, 3))
            s_rot = _scaled_rotation(cov, var_p, allow_reflection, guard)
            for part, (p, t, _, _) in zip(parts, fits, strict=True):
                _squared_residuals(s_rot[part.start - start : part.stop - start], p, t, out=err[part])
        err.sqrt_()
        if mask is not None:
            err.masked_fill_(~mask, 0.0)
        factor = mm_per_unit(unit)
        return err.mul_(factor) if factor != 1.0 else err


def pa_mpjpe(
    pred: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    allow_reflection: bool = False,
    norm_guard_m: float = 0.0,
    unit: Unit = "mm",
) -> Tensor:
    """Procrustes-aligned MPJPE: per-sample ``(B,)`` in mm.

    ``mean_j ||s R p_j + t - t_j||`` for the similarity (scale ``s >= 0``, rotation ``R``, translation ``t``)
    that minimises the sum of squared distances over the visible joints. By default ``R`` is a proper
    rotation (HMR family, MMPose). ``allow_reflection=True`` also admits mirrors, as the FreiHAND and HO3D
    servers do; a mirrored (wrong-hand) prediction then scores as well as the correct one.
    ``norm_guard_m=SERVER_NORM_GUARD_M`` reproduces the servers' ``align_w_scale`` exactly: the scale becomes
    ``tr(Rᵀ K) / (|p_c| + 1e-8 m)²`` instead of ``tr(Rᵀ K) / |p_c|²`` (a bias of ~1e-7; 0 = the optimum).
    """
    errors = pa_joint_errors(
        pred, target, mask=mask, allow_reflection=allow_reflection, norm_guard_m=norm_guard_m, unit=unit
    )
    return masked_mean(errors, mask)


def pa_mpvpe(
    pred: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    allow_reflection: bool = False,
    norm_guard_m: float = 0.0,
    unit: Unit = "mm",
) -> Tensor:
    """Procrustes-aligned mean per-vertex error ``(B,)`` in mm: :func:`pa_mpjpe` fitted on the vertices."""
    return pa_mpjpe(pred, target, mask=mask, allow_reflection=allow_reflection, norm_guard_m=norm_guard_m, unit=unit)


# -- scale-only alignments --------------------------------------------------------------------------
def sc_tr_joint_errors(
    pred: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    root_index: int = 0,
    scale_bone: tuple[int, int] = HO3D_SCALE_BONE,
    unit: Unit = "mm",
) -> Tensor:
    """Per-joint distances ``(B, N)`` in mm after HO3D's scale-and-translation alignment (``align_sc_tr``).

    Pred is scaled by ``|t_b1 - t_b0| / |p_b1 - p_b0|`` (``scale_bone = (b0, b1)``) and moved so that
    its root joint lands on the target's. A zero-length predicted bone leaves pred unscaled.
    """
    _check(pred, target, mask)
    with _exact(pred.device):
        p, t = _relative(pred, root_index), _relative(target, root_index)
        b0, b1 = scale_bone
        bone_p = torch.linalg.vector_norm(p[:, b1] - p[:, b0], dim=-1)
        bone_t = torch.linalg.vector_norm(t[:, b1] - t[:, b0], dim=-1)
        scale = torch.where(bone_p > 0, bone_t / bone_p.clamp_min(torch.finfo(torch.float64).tiny), 1.0)
        p *= scale[:, None, None]
        return _norms(p - t, mask, mm_per_unit(unit))


def mpjpe_sc_tr(
    pred: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    root_index: int = 0,
    scale_bone: tuple[int, int] = HO3D_SCALE_BONE,
    unit: Unit = "mm",
) -> Tensor:
    """Scale-and-translation aligned MPJPE ``(B,)`` in mm (HO3D's "scale_trans_al"); see :func:`sc_tr_joint_errors`."""
    errors = sc_tr_joint_errors(pred, target, mask=mask, root_index=root_index, scale_bone=scale_bone, unit=unit)
    return masked_mean(errors, mask)


def n_joint_errors(
    pred: Tensor, target: Tensor, *, mask: Tensor | None = None, root_index: int | None = 0, unit: Unit = "mm"
) -> Tensor:
    """Per-joint distances ``(B, N)`` in mm after root alignment and the least-squares scale (see :func:`n_mpjpe`)."""
    _check(pred, target, mask)
    with _exact(pred.device):
        p, t = _relative(pred, root_index), _relative(target, root_index)
        if mask is not None:
            keep = mask.unsqueeze(-1)
            p, t = torch.where(keep, p, 0.0), torch.where(keep, t, 0.0)
        num, den = (p * t).sum(dim=(1, 2)), p.square().sum(dim=(1, 2))
        scale = torch.where(den > 0, num / den.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
        p *= scale[:, None, None]
        return _norms(p - t, mask, mm_per_unit(unit))


def n_mpjpe(
    pred: Tensor, target: Tensor, *, mask: Tensor | None = None, root_index: int | None = 0, unit: Unit = "mm"
) -> Tensor:
    """Scale-normalised MPJPE ``(B,)`` in mm (MMPose ``alignment='scale'``, Rhodin et al. 2018).

    After root alignment pred is multiplied by ``s = <p, t> / <p, p>`` over the visible joints (the least-
    squares scale; no rotation, no further translation). ``root_index=None`` is MMPose's exact form.
    """
    return masked_mean(n_joint_errors(pred, target, mask=mask, root_index=root_index, unit=unit), mask)


# -- F-score between point sets ---------------------------------------------------------------------
def f_score(
    pred: Tensor,
    target: Tensor,
    thresholds_mm: Sequence[float] = (5.0, 15.0),
    *,
    unit: Unit = "mm",
    max_chunk_bytes: int = 64 * 2**20,
) -> Tensor:
    """F-score ``(B, T)`` between point sets ``pred (B, P, 3)`` and ``target (B, Q, 3)`` at each threshold.

    Precision is the share of predicted points closer than the threshold (strictly) to some target
    point, recall the share of target points closer than it to some predicted point;
    ``F = 2PR / (P + R)``, 0 when both are 0. Exhaustive nearest neighbours by ``torch.cdist``, in chunks of
    samples holding at most ``max_chunk_bytes`` of distances.
    """
    if pred.ndim != 3 or target.ndim != 3 or pred.shape[-1] != 3 or target.shape[-1] != 3:
        raise ValueError(
            f"pred and target must be (B, P, 3) and (B, Q, 3), got {tuple(pred.shape)}, {tuple(target.shape)}"
        )
    if pred.shape[0] != target.shape[0] or pred.shape[1] == 0 or target.shape[1] == 0:
        raise ValueError(
            f"pred and target need the same batch size and points, got {tuple(pred.shape)}, {tuple(target.shape)}"
        )
    factor = mm_per_unit(unit)
    with _exact(pred.device):
        thr = torch.as_tensor(thresholds_mm, dtype=torch.float64, device=pred.device) / factor  # input units
        batch, n_pred, n_target = pred.shape[0], pred.shape[1], target.shape[1]
        chunk = max(1, max_chunk_bytes // (8 * n_pred * n_target))
        out = torch.empty((batch, thr.numel()), dtype=torch.float64, device=pred.device)
        for start in range(0, batch, chunk):
            p = pred[start : start + chunk].detach().to(torch.float64)
            t = target[start : start + chunk].detach().to(torch.float64)
            # Centring on the target keeps the distances exact in the matmul form cdist uses for large sets.
            centre = t.mean(dim=1, keepdim=True)
            dist = torch.cdist(p - centre, t - centre)  # (c, P, Q)
            to_target = dist.amin(dim=2)  # each predicted point's nearest target point
            to_pred = dist.amin(dim=1)
            precision = (to_target.unsqueeze(-1) < thr).to(torch.float64).mean(dim=1)  # (c, T)
            recall = (to_pred.unsqueeze(-1) < thr).to(torch.float64).mean(dim=1)
            total = precision + recall
            out[start : start + chunk] = torch.where(total > 0, 2 * precision * recall / total.clamp_min(1e-300), 0.0)
        return out
