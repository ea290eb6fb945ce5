"""Pose metrics as pure functions of batched tensors: MPJPE and its aligned variants, PCK/AUC, F-score.

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

import numpy as np
import torch
from torch import Tensor

Unit = Literal["mm", "m"]
_TO_MM: dict[str, float] = {"mm": 1.0, "m": 1000.0}

# HO3D's eval.py scales by the bone between joints 0 and 4 of the submitted array. HO3D annotations use
# the MANO joint order, where that is wrist -> middle MCP; in the FreiHAND/OpenPose order the same bone
# is (0, 9) and (0, 4) would be wrist -> thumb tip. Pass the pair that matches your joint order.
HO3D_SCALE_BONE: tuple[int, int] = (0, 4)


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
    return err * factor if factor != 1.0 else err


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
def _det3(m: Tensor) -> Tensor:
    """Determinants ``(B,)`` of ``(B, 3, 3)`` matrices by the triple product (LU would cost a LAPACK call each)."""
    return (torch.linalg.cross(m[:, 0], m[:, 1]) * m[:, 2]).sum(dim=-1)


# -- the 3×3 rotation solver ------------------------------------------------------------------------
# Horn (1987) / QCP (Theobald 2005, Liu et al. 2010): the rotation R maximising tr(Rᵀ K) is the unit
# quaternion q spanning the top eigenvector of a symmetric traceless 4×4 matrix H(K), and the maximum is
# its top eigenvalue λ. λ is the largest root of det(H - λI) = λ⁴ + c2 λ² + c1 λ + c0, found by Newton from
# an upper bound (the quartic is convex to the right of its largest root, so Newton descends monotonically
# onto it); q is any nonzero column of adj(H - λI) = Π_{i>1} (λ_i - λ) q qᵀ. All of it is elementwise over
# the batch: torch.linalg.svd on CPU runs one LAPACK call per 3×3 matrix and cost 3/4 of the whole metric.
# The solver holds matrices components-first, (9, B) or (16, B), so that every operation runs over
# contiguous rows of B numbers.
#
# 4×4 adjugate by Laplace expansion in complementary 2×2 minors: m[0:6] are the minors of rows (0, 1),
# m[6:12] those of rows (2, 3), both over the column pairs below; each adjugate entry (row-major) is
# Σ sign · a[row, col] · m[minor] over three terms.
_PAIR_I, _PAIR_J = (0, 0, 0, 1, 1, 2), (1, 2, 3, 2, 3, 3)
_ADJ_TERMS = (  # (sign, a row, a column, minor) × 3 for each of the 16 entries
    (1, 1, 1, 11), (-1, 1, 2, 10), (1, 1, 3, 9), (-1, 0, 1, 11), (1, 0, 2, 10), (-1, 0, 3, 9),
    (1, 3, 1, 5), (-1, 3, 2, 4), (1, 3, 3, 3), (-1, 2, 1, 5), (1, 2, 2, 4), (-1, 2, 3, 3),
    (-1, 1, 0, 11), (1, 1, 2, 8), (-1, 1, 3, 7), (1, 0, 0, 11), (-1, 0, 2, 8), (1, 0, 3, 7),
    (-1, 3, 0, 5), (1, 3, 2, 2), (-1, 3, 3, 1), (1, 2, 0, 5), (-1, 2, 2, 2), (1, 2, 3, 1),
    (1, 1, 0, 10), (-1, 1, 1, 8), (1, 1, 3, 6), (-1, 0, 0, 10), (1, 0, 1, 8), (-1, 0, 3, 6),
    (1, 3, 0, 4), (-1, 3, 1, 2), (1, 3, 3, 0), (-1, 2, 0, 4), (1, 2, 1, 2), (-1, 2, 3, 0),
    (-1, 1, 0, 9), (1, 1, 1, 7), (-1, 1, 2, 6), (1, 0, 0, 9), (-1, 0, 1, 7), (1, 0, 2, 6),
    (-1, 3, 0, 3), (1, 3, 1, 1), (-1, 3, 2, 0), (1, 2, 0, 3), (-1, 2, 1, 1), (1, 2, 2, 0),
)
# Newton stops per sample once its step is below this (λ is O(1) after normalising K); samples still
# moving after _NEWTON_MAX_STEPS have a (near) multiple top root and go to the SVD fallback.
_NEWTON_TOL = 1e-13
_NEWTON_MAX_STEPS = 30
# Fallback thresholds on the normalised problem (‖K‖_F = 1). The eigenvector's error grows like eps / gap,
# and the slope P'(λ) = Π_{i>1} (λ - λ_i) is at most 12 × the gap to the second eigenvalue: below 1e-4 the
# top eigenvalue is (nearly) double and the rotation (nearly) not unique. The residual check (a maximiser
# makes Rᵀ K symmetric) catches whatever else went wrong.
_MIN_SLOPE = 1e-4
_MAX_ASYMMETRY = 1e-12


def _sum_rows(x: Tensor) -> Tensor:
    """Sum over the first dimension, one row after the other: the same bits for every batch size (a
    reduction kernel may reorder the additions depending on the shape)."""
    total = x[0]
    for row in x[1:]:
        total = total + row
    return total


def _minors(a: Tensor) -> Tensor:
    """The 12 complementary 2×2 minors ``(12, B)`` of 4×4 matrices ``(16, B)`` (rows 0-1, then rows 2-3)."""
    a = a.view(4, 4, -1)
    i, j = list(_PAIR_I), list(_PAIR_J)
    top = a[0, i] * a[1, j] - a[1, i] * a[0, j]
    bottom = a[2, i] * a[3, j] - a[3, i] * a[2, j]
    return torch.cat([top, bottom])


def _det4(m: Tensor) -> Tensor:
    """Determinants ``(B,)`` from the minors ``(12, B)`` of :func:`_minors`."""
    return m[0] * m[11] - m[1] * m[10] + m[2] * m[9] + m[3] * m[8] - m[4] * m[7] + m[5] * m[6]


def _adjugate4_entry(a: Tensor, m: Tensor, row: int, col: int) -> Tensor:
    """Entry ``(row, col)`` ``(B,)`` of the adjugates of 4×4 matrices ``(16, B)`` with minors ``m`` ``(12, B)``.

    Row by row on ``(B,)`` vectors: the (48, B) gather this replaces made fresh multi-megabyte temporaries
    that cost more in page faults than the arithmetic.
    """
    total = None
    for sign, a_row, a_col, minor in _ADJ_TERMS[3 * (4 * row + col) : 3 * (4 * row + col) + 3]:
        term = a[4 * a_row + a_col] * m[minor]
        if total is None:
            total = term if sign > 0 else term.neg_()
        else:
            total = total + term if sign > 0 else total - term
    assert total is not None
    return total


def _det3_rows(k: Tensor) -> Tensor:
    """Determinants ``(B,)`` of 3×3 matrices ``(9, B)``."""
    k = k.view(3, 3, -1)
    return _sum_rows(torch.linalg.cross(k[0], k[1], dim=0) * k[2])


def _horn_matrix(k: Tensor) -> Tensor:
    """Horn's symmetric 4×4 matrix ``(16, B)`` of ``K = Σ t pᵀ`` ``(9, B)``: ``qᵀ H q = tr(R(q)ᵀ K)``."""
    xx, yx, zx, xy, yy, zy, xz, yz, zz = k.unbind(0)
    entries = (
        xx + yy + zz, yz - zy, zx - xz, xy - yx,
        yz - zy, xx - yy - zz, xy + yx, zx + xz,
        zx - xz, xy + yx, yy - xx - zz, yz + zy,
        xy - yx, zx + xz, yz + zy, zz - xx - yy,
    )  # fmt: skip
    return torch.stack(entries)


def _quaternion_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices ``(9, B)`` of unit quaternions ``(4, B)`` stored ``(w, x, y, z)``."""
    w, x, y, z = q.unbind(0)
    entries = (
        w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z,
    )  # fmt: skip
    return torch.stack(entries)


def _svd_rotation(cov: Tensor, allow_reflection: bool) -> Tensor:
    """The Umeyama rotation ``U D Vᵀ`` ``(B, 3, 3)`` by ``torch.linalg.svd``: the fallback and the reference."""
    u, _, vh = torch.linalg.svd(cov)
    if not allow_reflection:
        # A proper rotation: flip the weakest axis when U V^T would be a reflection (det = -1).
        u[:, :, 2] *= torch.where(_det3(u) * _det3(vh) < 0, -1.0, 1.0).unsqueeze(1)
    return u @ vh


def _proper_rotation(cov: Tensor) -> tuple[Tensor, Tensor]:
    """The rotation ``R`` maximising ``tr(Rᵀ K)`` for ``K`` ``(9, B)``: ``R`` ``(9, B)`` and a ``(B,)`` bool,
    True where the closed form can be trusted."""
    norm = _sum_rows(cov.square()).sqrt()
    zero = norm == 0  # zero-variance prediction or target: any rotation is optimal (the scale is 0)
    k = cov / torch.where(zero, 1.0, norm)  # ‖K‖_F = 1 keeps λ in [1/√3, √3]
    horn = _horn_matrix(k)
    c2 = -2.0 * _sum_rows(k.square())
    c1 = -8.0 * _det3_rows(k)
    c0 = _det4(_minors(horn))
    lam = torch.where(zero, 0.0, torch.full_like(norm, 3.0**0.5))  # λ ≤ nuclear norm ≤ √3 ‖K‖_F
    moving = ~zero
    slope = torch.ones_like(lam)
    for _ in range(_NEWTON_MAX_STEPS):
        lam2 = lam * lam
        slope = torch.where(moving, (4.0 * lam2 + 2.0 * c2) * lam + c1, slope)
        step = torch.where(moving, ((lam2 + c2) * lam2 + c1 * lam + c0) / slope, 0.0)
        lam -= step
        # Each sample stops on its own step, so its λ (to the last bit) does not depend on the batch.
        moving &= step.abs() > _NEWTON_TOL
        if not bool(moving.any()):  # host sync (free on CPU)
            break
    horn[[0, 5, 10, 15]] -= lam
    minors = _minors(horn)
    adj = {(i, j): _adjugate4_entry(horn, minors, i, j) for i in range(4) for j in range(i, 4)}  # symmetric
    # The best-conditioned column of adj = c q qᵀ is the one with the largest |c| q_j² on the diagonal.
    column = [adj[min(i, 0), max(i, 0)] for i in range(4)]
    best = adj[0, 0].abs()
    for j in range(1, 4):
        diag = adj[j, j].abs()
        better = diag > best
        best = torch.where(better, diag, best)
        column = [torch.where(better, adj[min(i, j), max(i, j)], c) for i, c in enumerate(column)]
    q = torch.stack(column)
    rot = _quaternion_to_matrix(q / _sum_rows(q.square()).sqrt())
    # Trust check: a maximiser makes Rᵀ K symmetric.
    rk = _sum_rows(rot.view(3, 3, 1, -1) * k.view(3, 1, 3, -1)).view(9, -1)  # (Rᵀ K)_ij = Σ_l R_li K_lj
    asymmetry = torch.maximum(torch.maximum((rk[1] - rk[3]).abs(), (rk[2] - rk[6]).abs()), (rk[5] - rk[7]).abs())
    trusted = ~moving & (slope.abs() >= _MIN_SLOPE) & (asymmetry <= _MAX_ASYMMETRY) & _sum_rows(rot).isfinite()
    eye = torch.eye(3, dtype=cov.dtype, device=cov.device).view(9, 1)
    return torch.where(zero, eye, rot), trusted | zero


def _best_rotation(cov: Tensor, allow_reflection: bool) -> Tensor:
    """``R`` ``(B, 3, 3)`` maximising ``tr(Rᵀ K)`` for ``K`` ``(B, 3, 3)``: a proper rotation, or any orthogonal
    matrix when ``allow_reflection``.

    Closed form per sample (see the comment above); the rare samples it cannot vouch for (collinear points,
    a (near) double top eigenvalue) are decomposed by ``torch.linalg.svd`` instead.
    """
    batch = cov.shape[0]
    k = cov.reshape(batch, 9).T.contiguous()  # (9, B), row-major entries first
    if allow_reflection:
        # The best orthogonal matrix reaches the nuclear norm; when det K < 0 that is a mirror: the best
        # proper rotation of K F composed with F = diag(1, 1, -1).
        mirror = torch.where(_det3_rows(k) < 0, -1.0, 1.0)
        k[2::3] *= mirror
    rot, trusted = _proper_rotation(k)
    if allow_reflection:
        rot[2::3] *= mirror
    rot = rot.T.reshape(batch, 3, 3)
    doubtful = (~trusted).nonzero().squeeze(1)  # host sync: the fallback's size decides what runs next
    if doubtful.numel() > 0:
        rot[doubtful] = _svd_rotation(cov[doubtful], allow_reflection)
    return rot


# CPU: fit at most this many samples at a time. Buffers of this size (~8 MB) are recycled by the allocator
# instead of being mapped and page-faulted afresh, worth ~20% at 100k samples; fewer, larger chunks keep
# the number of parallel regions low when another process competes for the cores. Other devices take the
# whole batch at once.
_CPU_CHUNK = 16384


def _fit(
    pred: Tensor, target: Tensor, mask: Tensor | None, allow_reflection: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Best similarity ``x -> sR (x - mu_p) + mu_t`` of pred onto target (Umeyama 1991, batched).

    Returns ``(p - mu_p, t - mu_t)`` as ``(B, 3, N)`` and ``sR (B, 3, 3), mu_p, mu_t (B, 3, 1)``, all float64
    in input units. Only the 3×3 cross-covariances are solved for ``R``, by :func:`_best_rotation`.
    """
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
    rot = _best_rotation(cov, allow_reflection)
    # Zero-variance prediction: every similarity maps it to one point; the best is scale 0 (onto mu_t).
    objective = _sum_rows((rot * cov).view(batch, 9).T)  # tr(R^T K), the sum of the (signed) singular values
    scale = torch.where(var_p > 0, objective / var_p.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    s_rot = rot * scale[:, None, None]
    return p, t, s_rot, mu_p, mu_t


def similarity_align(
    pred: Tensor, target: Tensor, *, mask: Tensor | None = None, allow_reflection: bool = False
) -> Tensor:
    """``pred`` ``(B, N, 3)`` moved by its best similarity transform onto ``target``; float64, input units.

    The fit uses the visible points only; all points (masked ones too) are moved. With
    ``allow_reflection=True`` the "rotation" may be a mirror (FreiHAND/HO3D servers).
    """
    _check(pred, target, mask)
    with _exact(pred.device):
        _, _, s_rot, mu_p, mu_t = _fit(pred, target, mask, allow_reflection)
        p = _coords_first(pred, None)
        p -= mu_p
        return torch.baddbmm(mu_t, s_rot, p).transpose(1, 2)


def pa_joint_errors(
    pred: Tensor, target: Tensor, *, mask: Tensor | None = None, allow_reflection: bool = False, unit: Unit = "mm"
) -> Tensor:
    """Per-point distances ``(B, N)`` in mm after Procrustes alignment (see :func:`pa_mpjpe`); 0 where masked."""
    _check(pred, target, mask)
    batch, num = pred.shape[:2]
    step = _CPU_CHUNK if pred.device.type == "cpu" else batch
    with _exact(pred.device):
        err = torch.empty((batch, num), dtype=torch.float64, device=pred.device)
        for start in range(0, batch, step):
            part = slice(start, start + step)
            p, t, s_rot, _, _ = _fit(pred[part], target[part], None if mask is None else mask[part], allow_reflection)
            t.baddbmm_(s_rot, p, beta=-1.0)  # residual sR p - t, written over t to save an allocation
            torch.sum(t.square_(), dim=1, out=err[part])
        err.sqrt_()
        if mask is not None:
            err.masked_fill_(~mask, 0.0)
        factor = mm_per_unit(unit)
        return err.mul_(factor) if factor != 1.0 else err


def pa_mpjpe(
    pred: Tensor, target: Tensor, *, mask: Tensor | None = None, allow_reflection: bool = False, unit: Unit = "mm"
) -> Tensor:
    """Procrustes-aligned MPJPE: per-sample ``(B,)`` in mm.

    ``mean_j ||s R p_j + t - t_j||`` for the similarity (scale ``s >= 0``, rotation ``R``, translation ``t``)
    that minimises the sum of squared distances over the visible joints. By default ``R`` is a proper
    rotation (HMR family, MMPose). ``allow_reflection=True`` also admits mirrors, as the FreiHAND and HO3D
    servers do; a mirrored (wrong-hand) prediction then scores as well as the correct one.
    """
    return masked_mean(pa_joint_errors(pred, target, mask=mask, allow_reflection=allow_reflection, unit=unit), mask)


def pa_mpvpe(
    pred: Tensor, target: Tensor, *, mask: Tensor | None = None, allow_reflection: bool = False, unit: Unit = "mm"
) -> Tensor:
    """Procrustes-aligned mean per-vertex error ``(B,)`` in mm: :func:`pa_mpjpe` fitted on the vertices."""
    return pa_mpjpe(pred, target, mask=mask, allow_reflection=allow_reflection, unit=unit)


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
