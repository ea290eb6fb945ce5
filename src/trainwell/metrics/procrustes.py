"""The 3×3 rotation solver behind Procrustes alignment: batched, closed form, exact to float64 round-off.

``best_rotation(K, allow_reflection)`` returns the ``R`` maximising ``tr(Rᵀ K)`` for a batch of 3×3
cross-covariances. It runs elementwise over the batch (no per-matrix LAPACK call) and hands the rare samples
it cannot vouch for to ``svd_rotation``. Imports nothing of trainwell.
"""

from __future__ import annotations

import torch
from torch import Tensor

# -- the 3×3 rotation solver ------------------------------------------------------------------------
# Horn (1987) / QCP (Theobald 2005, Liu et al. 2010): the rotation R maximising tr(Rᵀ K) is given by the
# unit quaternion q spanning the top eigenvector of a symmetric traceless 4×4 matrix H(K), and the maximum
# is its top eigenvalue λ. λ is the largest root of det(H - λI) = λ⁴ + c2 λ² + c1 λ + c0, found by Newton
# from an upper bound (the quartic is convex right of its largest root, so Newton descends monotonically
# onto it); q is any nonzero column of adj(H - λI) = Π_{i>1} (λ_i - λ) q qᵀ. torch.linalg.svd on CPU runs
# one LAPACK call per 3×3 matrix and cost 3/4 of the whole metric; this is elementwise over the batch.
#
# Matrices are held as lists of their entries (row-major), each a (B,) vector: every operation then runs
# over B contiguous numbers, and no temporary is large enough to be mapped and page-faulted afresh.
# The 4×4 adjugate is a Laplace expansion in complementary 2×2 minors: m[0:6] are the minors of rows (0, 1),
# m[6:12] those of rows (2, 3), both over the column pairs below; each adjugate entry (row-major) is
# Σ sign · a[row, col] · m[minor] over three terms.
_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
_ADJ_TERMS = (  # (sign, a row, a column, minor) × 3 for each of the 16 entries
    (1, 1, 1, 11), (-1, 1, 2, 10), (1, 1, 3, 9), (-1, 0, 1, 11), (1, 0, 2, 10), (-1, 0, 3, 9),
    (1, 3, 1, 5), (-1, 3, 2, 4), (1, 3, 3, 3), (-1, 2, 1, 5), (1, 2, 2, 4), (-1, 2, 3, 3),
    (-1, 1, 0, 11), (1, 1, 2, 8), (-1, 1, 3, 7), (1, 0, 0, 11), (-1, 0, 2, 8), (1, 0, 3, 7),
    (-1, 3, 0, 5), (1, 3, 2, 2), (-1, 3, 3, 1), (1, 2, 0, 5), (-1, 2, 2, 2), (1, 2, 3, 1),
    (1, 1, 0, 10), (-1, 1, 1, 8), (1, 1, 3, 6), (-1, 0, 0, 10), (1, 0, 1, 8), (-1, 0, 3, 6),
    (1, 3, 0, 4), (-1, 3, 1, 2), (1, 3, 3, 0), (-1, 2, 0, 4), (1, 2, 1, 2), (-1, 2, 3, 0),
    (-1, 1, 0, 9), (1, 1, 1, 7), (-1, 1, 2, 6), (1, 0, 0, 9), (-1, 0, 1, 7), (1, 0, 2, 6),
    (-1, 3, 0, 3), (1, 3, 1, 1), (-1, 3, 2, 0), (1, 2, 0, 3), (-1, 2, 1, 1), (1, 2, 2, 0),
)  # fmt: skip
# Newton stops per sample once its step is below this (λ is O(1) after normalising K); no sample stops
# before _NEWTON_FREE_STEPS (hands need ~8 from √3), which spares those steps the masking. Samples still
# moving after _NEWTON_MAX_STEPS have a (near) multiple top root and go to the SVD fallback.
_NEWTON_TOL = 1e-13
_NEWTON_FREE_STEPS = 4
_NEWTON_MAX_STEPS = 30
# Fallback thresholds on the normalised problem (‖K‖_F = 1). The eigenvector taken from the adjugate has a
# relative error of about eps / P'(λ), where the slope P'(λ) = Π_{i>1} (λ - λ_i) lies between gap³ and
# 12 gap (gap: to the second eigenvalue); it is 0 for a double top eigenvalue (collinear points: the
# rotation is not unique). The residual check (a maximiser makes Rᵀ K symmetric) catches whatever else
# went wrong. Neither fires on ordinary hands; see tests/metrics/test_pose.py.
_MIN_SLOPE = 1e-4
_MAX_ASYMMETRY = 1e-12


def _det3(m: Tensor) -> Tensor:
    """Determinants ``(B,)`` of ``(B, 3, 3)`` matrices by the triple product (LU would cost a LAPACK call each)."""
    det: Tensor = (torch.linalg.cross(m[:, 0], m[:, 1]) * m[:, 2]).sum(dim=-1)
    return det


def _det3_entries(k: list[Tensor]) -> Tensor:
    """Determinants ``(B,)`` of 3×3 matrices given as 9 entries ``(B,)``, row-major."""
    return k[0] * (k[4] * k[8] - k[5] * k[7]) - k[1] * (k[3] * k[8] - k[5] * k[6]) + k[2] * (k[3] * k[7] - k[4] * k[6])


def _sum_squares(x: list[Tensor]) -> Tensor:
    """``Σ x_i²`` ``(B,)``, added in a fixed order: the same bits for every batch size."""
    total = x[0] * x[0]
    for entry in x[1:]:
        total = torch.addcmul(total, entry, entry)
    return total


def _minors(a: list[Tensor]) -> list[Tensor]:
    """The 12 complementary 2×2 minors of a 4×4 matrix (16 entries): rows 0-1, then rows 2-3."""
    return [a[4 * r + i] * a[4 * (r + 1) + j] - a[4 * (r + 1) + i] * a[4 * r + j] for r in (0, 2) for i, j in _PAIRS]


def _det4(m: list[Tensor]) -> Tensor:
    """Determinant ``(B,)`` from the minors of :func:`_minors`."""
    return m[0] * m[11] - m[1] * m[10] + m[2] * m[9] + m[3] * m[8] - m[4] * m[7] + m[5] * m[6]


def _adjugate_entry(a: list[Tensor], m: list[Tensor], row: int, col: int) -> Tensor:
    """Entry ``(row, col)`` ``(B,)`` of the adjugate of a 4×4 matrix ``a`` with minors ``m``."""
    (s0, r0, c0, m0), (s1, r1, c1, m1), (s2, r2, c2, m2) = _ADJ_TERMS[3 * (4 * row + col) : 3 * (4 * row + col) + 3]
    total = a[4 * r0 + c0] * m[m0] if s0 > 0 else -(a[4 * r0 + c0] * m[m0])
    total = torch.addcmul(total, a[4 * r1 + c1], m[m1], value=s1)
    return torch.addcmul(total, a[4 * r2 + c2], m[m2], value=s2)


def _horn_matrix(k: list[Tensor]) -> list[Tensor]:
    """Horn's symmetric 4×4 matrix (16 entries) of ``K = Σ t pᵀ`` (9 entries): ``qᵀ H q = tr(R(q)ᵀ K)``."""
    xx, yx, zx, xy, yy, zy, xz, yz, zz = k
    a, b, c = yz - zy, zx - xz, xy - yx
    d, e, f = xy + yx, zx + xz, yz + zy
    return [
        xx + yy + zz, a, b, c,
        a, xx - yy - zz, d, e,
        b, d, yy - xx - zz, f,
        c, e, f, zz - xx - yy,
    ]  # fmt: skip


def _quaternion_to_matrix(w: Tensor, x: Tensor, y: Tensor, z: Tensor) -> Tensor:
    """Rotation matrices ``(B, 3, 3)`` of unit quaternions ``(w, x, y, z)``, each ``(B,)``."""
    ww, xx, yy, zz = w * w, x * x, y * y, z * z
    wx, wy, wz, xy, xz, yz = w * x, w * y, w * z, x * y, x * z, y * z
    entries = (
        ww + xx - yy - zz, 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), ww - xx + yy - zz, 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), ww - xx - yy + zz,
    )  # fmt: skip
    return torch.stack(entries, dim=1).view(-1, 3, 3)


def svd_rotation(cov: Tensor, allow_reflection: bool) -> Tensor:
    """The Umeyama rotation ``U D Vᵀ`` ``(B, 3, 3)`` by ``torch.linalg.svd``: the fallback and the reference."""
    u, _, vh = torch.linalg.svd(cov)
    if not allow_reflection:
        # A proper rotation: flip the weakest axis when U V^T would be a reflection (det = -1).
        u[:, :, 2] *= torch.where(_det3(u) * _det3(vh) < 0, -1.0, 1.0).unsqueeze(1)
    rotation: Tensor = u @ vh
    return rotation


def _proper_rotation(cov: list[Tensor]) -> tuple[Tensor, Tensor]:
    """The rotation ``R`` ``(B, 3, 3)`` maximising ``tr(Rᵀ K)`` for ``K`` given as 9 entries ``(B,)``, and a
    ``(B,)`` bool, True where the closed form can be trusted."""
    norm = _sum_squares(cov).sqrt()
    zero = norm == 0  # zero-variance prediction or target: any rotation is optimal (the scale is 0)
    inv_norm = torch.where(zero, 0.0, 1.0 / norm)
    k = [entry * inv_norm for entry in cov]  # ‖K‖_F = 1 keeps λ in [1/√3, √3]
    horn = _horn_matrix(k)
    c2 = -2.0 * _sum_squares(k)
    c1 = -8.0 * _det3_entries(k)
    c0 = _det4(_minors(horn))
    # Start above the largest root, λ ≤ nuclear norm ≤ √3 ‖K‖_F, so that Newton descends onto it and not onto
    # a smaller eigenvalue (any eigenvector of H is a stationary point: the checks below cannot tell). For
    # K = 0 the steps just shrink λ towards 0; those samples get the identity.
    lam = torch.full_like(norm, 3.0**0.5)
    two_c2 = 2.0 * c2
    slope = torch.ones_like(lam)
    moving = ~zero
    for i in range(_NEWTON_MAX_STEPS):
        lam2 = lam * lam
        value = torch.addcmul(torch.addcmul(c0, c1, lam), lam2 + c2, lam2)
        if i < _NEWTON_FREE_STEPS:  # every sample takes these: no masking needed to stay batch independent
            slope = torch.addcmul(c1, torch.add(two_c2, lam2, alpha=4.0), lam)
            step = value / slope
        else:  # the rest stop one by one, so that each λ (to the last bit) does not depend on the batch
            slope = torch.where(moving, torch.addcmul(c1, torch.add(two_c2, lam2, alpha=4.0), lam), slope)
            step = torch.where(moving, value / slope, 0.0)
        lam = lam - step
        if i + 1 >= _NEWTON_FREE_STEPS:
            # Done: converged, or headed for a slope too small to trust (P' only falls as λ descends), or NaN.
            moving &= (step.abs() > _NEWTON_TOL) & (slope >= _MIN_SLOPE)
            if not bool(moving.any()):  # host sync (free on CPU)
                break
    for i in (0, 5, 10, 15):
        horn[i] = horn[i] - lam
    minors = _minors(horn)
    adj = {(i, j): _adjugate_entry(horn, minors, i, j) for i in range(4) for j in range(i, 4)}  # symmetric
    # The best-conditioned column of adj = c q qᵀ is the one with the largest |c| q_j² on the diagonal.
    column, best = [adj[0, i] for i in range(4)], adj[0, 0].abs()
    for j in range(1, 4):
        diag = adj[j, j].abs()
        better = diag > best
        best = torch.where(better, diag, best)
        column = [torch.where(better, adj[min(i, j), max(i, j)], c) for i, c in enumerate(column)]
    inv_q = _sum_squares(column).rsqrt()
    rot = _quaternion_to_matrix(*(c * inv_q for c in column))
    # Trust check: a maximiser makes Rᵀ K symmetric.
    r = rot.view(-1, 9).T
    asymmetry = torch.zeros_like(norm)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        rk_ij = r[i] * k[j] + r[3 + i] * k[3 + j] + r[6 + i] * k[6 + j]
        rk_ji = r[j] * k[i] + r[3 + j] * k[3 + i] + r[6 + j] * k[6 + i]
        asymmetry = torch.maximum(asymmetry, (rk_ij - rk_ji).abs())
    trusted = ~moving & (slope >= _MIN_SLOPE) & (asymmetry <= _MAX_ASYMMETRY) & inv_q.isfinite() & lam.isfinite()
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
    return torch.where(zero[:, None, None], eye, rot), trusted | zero


def best_rotation(cov: Tensor, allow_reflection: bool) -> Tensor:
    """``R`` ``(B, 3, 3)`` maximising ``tr(Rᵀ K)`` for ``K`` ``(B, 3, 3)``: a proper rotation, or any
    orthogonal matrix when ``allow_reflection``.

    Closed form per sample (see the comment above); the rare samples it cannot vouch for (collinear points,
    a (near) double top eigenvalue) are decomposed by ``torch.linalg.svd`` instead.
    """
    k = list(cov.reshape(-1, 9).T.contiguous().unbind(0))  # 9 contiguous (B,) entries
    if allow_reflection:
        # The best orthogonal matrix reaches the nuclear norm; when det K < 0 that is a mirror: the best
        # proper rotation of K F composed with F = diag(1, 1, -1).
        mirror = torch.where(_det3_entries(k) < 0, -1.0, 1.0)
        k[2], k[5], k[8] = k[2] * mirror, k[5] * mirror, k[8] * mirror
    rot, trusted = _proper_rotation(k)
    if allow_reflection:
        rot[:, :, 2] *= mirror.unsqueeze(1)
    doubtful = (~trusted).nonzero().squeeze(1)  # host sync: the fallback's size decides what runs next
    if doubtful.numel() > 0:
        rot[doubtful] = svd_rotation(cov[doubtful], allow_reflection)
    return rot
