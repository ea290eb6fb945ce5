"""The pure pose metrics against references written independently here in NumPy/SciPy.

The references follow the public protocols they are named after: a per-sample Umeyama/HMR similarity
transform (proper rotation), ``scipy.linalg.orthogonal_procrustes`` on normalised point sets as in the
FreiHAND/HO3D ``align_w_scale`` (mirrors allowed), HO3D's ``align_sc_tr``, MMPose's scale alignment,
FreiHAND's per-keypoint PCK/AUC and a brute-force F-score.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from trainwell.metrics import (
    f_score,
    joint_errors,
    mpjpe,
    mpjpe_sc_tr,
    mpvpe,
    n_mpjpe,
    pa_joint_errors,
    pa_mpjpe,
    pa_mpvpe,
    pck,
    pck_auc,
    pck_curve,
    per_joint_mean,
    similarity_align,
)

TOL_MM = 1e-6


# -- NumPy references (one sample at a time, points (N, 3)) -----------------------------------------
def ref_similarity_proper(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """HMR / MMPose ``compute_similarity_transform``: least-squares scale, proper rotation, translation."""
    x1, x2 = pred.T, gt.T  # (3, N)
    mu1, mu2 = x1.mean(axis=1, keepdims=True), x2.mean(axis=1, keepdims=True)
    c1, c2 = x1 - mu1, x2 - mu2
    var1 = np.sum(c1**2)
    k = c1 @ c2.T
    u, _, vh = np.linalg.svd(k)
    z = np.eye(3)
    z[-1, -1] = np.sign(np.linalg.det(u @ vh))
    r = vh.T @ z @ u.T
    scale = np.trace(r @ k) / var1 if var1 > 0 else 0.0
    t = mu2 - scale * (r @ mu1)
    return (scale * r @ x1 + t).T


def ref_similarity_mirror(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """FreiHAND/HO3D ``align_w_scale`` without its 1e-8 guards: mirrors allowed."""
    t1, t2 = gt.mean(0), pred.mean(0)
    g, p = gt - t1, pred - t2
    s1, s2 = np.linalg.norm(g), np.linalg.norm(p)
    r, s = orthogonal_procrustes(g / s1, p / s2)
    return (p / s2) @ r.T * s * s1 + t1


def ref_mean_dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b, axis=-1).mean())


def ref_pa(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, mirror: bool = False) -> np.ndarray:
    out = []
    for i in range(len(pred)):
        keep = np.ones(pred.shape[1], bool) if mask is None else mask[i]
        p, g = pred[i][keep], gt[i][keep]
        aligned = ref_similarity_mirror(p, g) if mirror else ref_similarity_proper(p, g)
        out.append(ref_mean_dist(aligned, g))
    return np.array(out)


def ref_mpjpe(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None, root: int | None) -> np.ndarray:
    out = []
    for i in range(len(pred)):
        p, g = pred[i], gt[i]
        if root is not None:
            p, g = p - p[root], g - g[root]
        keep = np.ones(len(p), bool) if mask is None else mask[i]
        out.append(ref_mean_dist(p[keep], g[keep]))
    return np.array(out)


def ref_align_sc_tr(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """HO3D ``eval.py`` ``align_sc_tr`` (bone 0-4 sets the scale, joint 0 the translation)."""
    cur = pred.copy()
    s = np.sqrt(np.sum(np.square(cur[4] - cur[0])))
    if s > 0:
        cur = cur / s
    cur = cur * np.sqrt(np.sum(np.square(gt[4] - gt[0])))
    return cur - cur[0:1] + gt[0:1]


def ref_fscore(gt: np.ndarray, pred: np.ndarray, th: float) -> float:
    d_gt = np.min(np.linalg.norm(gt[:, None] - pred[None], axis=-1), axis=1)  # each gt point to pred
    d_pred = np.min(np.linalg.norm(pred[:, None] - gt[None], axis=-1), axis=1)
    precision, recall = np.mean(d_pred < th), np.mean(d_gt < th)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def ref_freihand_measures(err: np.ndarray, vis: np.ndarray, lo: float, hi: float, steps: int):
    """FreiHAND ``EvalUtil.get_measures``: per keypoint over its visible samples, then mean over keypoints."""
    thresholds = np.linspace(lo, hi, steps)
    norm = np.trapezoid(np.ones_like(thresholds), thresholds)
    curves, aucs = [], []
    for k in range(err.shape[1]):
        data = err[vis[:, k], k]
        if len(data) == 0:
            continue
        curve = np.array([np.mean((data <= t).astype(float)) for t in thresholds])
        curves.append(curve)
        aucs.append(np.trapezoid(curve, thresholds) / norm)
    return np.mean(aucs), np.mean(curves, axis=0), thresholds


# -- data -------------------------------------------------------------------------------------------
def hands(batch: int, joints: int = 21, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Camera-space skeletons in mm (~500 mm from the camera) and noisy predictions of them."""
    rng = np.random.default_rng(seed)
    gt = rng.normal(0.0, 40.0, (batch, joints, 3)) + np.array([30.0, -20.0, 500.0])
    pred = gt + rng.normal(0.0, 8.0, gt.shape) + rng.normal(0.0, 20.0, (batch, 1, 3))
    return pred, gt


def t64(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def random_similarity(batch: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rot = Rotation.random(batch, random_state=seed).as_matrix()
    return rot, rng.uniform(0.5, 2.0, batch), rng.normal(0.0, 300.0, (batch, 3))


# -- Procrustes --------------------------------------------------------------------------------------
def test_pa_mpjpe_matches_umeyama_reference() -> None:
    pred, gt = hands(64)
    got = pa_mpjpe(t64(pred), t64(gt)).numpy()
    np.testing.assert_allclose(got, ref_pa(pred, gt), rtol=0, atol=TOL_MM)
    assert got.min() > 1.0  # noisy predictions: the test would pass vacuously on zeros


def test_pa_mpjpe_with_reflection_matches_orthogonal_procrustes() -> None:
    pred, gt = hands(64, seed=1)
    got = pa_mpjpe(t64(pred), t64(gt), allow_reflection=True).numpy()
    np.testing.assert_allclose(got, ref_pa(pred, gt, mirror=True), rtol=0, atol=TOL_MM)


@pytest.mark.parametrize("allow_reflection", [False, True])
def test_similarity_moved_ground_truth_scores_zero(allow_reflection: bool) -> None:
    _, gt = hands(32, seed=2)
    rot, scale, shift = random_similarity(32, seed=3)
    moved = scale[:, None, None] * np.einsum("bij,bnj->bni", rot, gt) + shift[:, None]
    got = pa_mpjpe(t64(moved), t64(gt), allow_reflection=allow_reflection)
    assert got.abs().max() <= TOL_MM
    # The alignment itself recovers the ground truth, not just a small mean.
    np.testing.assert_allclose(similarity_align(t64(moved), t64(gt)).numpy(), gt, rtol=0, atol=TOL_MM)


def test_mirrored_prediction_only_scores_zero_when_reflections_are_allowed() -> None:
    _, gt = hands(16, seed=4)
    rot, _, shift = random_similarity(16, seed=5)
    mirrored = np.einsum("bij,bnj->bni", rot, gt * np.array([-1.0, 1.0, 1.0])) + shift[:, None]
    assert pa_mpjpe(t64(mirrored), t64(gt), allow_reflection=True).abs().max() <= TOL_MM
    proper = pa_mpjpe(t64(mirrored), t64(gt)).numpy()
    assert proper.min() > 5.0  # a wrong hand is far off once mirrors are excluded
    np.testing.assert_allclose(proper, ref_pa(mirrored, gt), rtol=0, atol=TOL_MM)


@pytest.mark.parametrize("allow_reflection", [False, True])
def test_mask_excludes_joints_from_fit_and_error(allow_reflection: bool) -> None:
    pred, gt = hands(48, seed=6)
    rng = np.random.default_rng(7)
    mask = rng.random((48, 21)) > 0.3
    mask[:, :3] = True  # at least three visible joints: a well-posed fit
    expected = ref_pa(pred, gt, mask, mirror=allow_reflection)
    got = pa_mpjpe(t64(pred), t64(gt), mask=torch.from_numpy(mask), allow_reflection=allow_reflection).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL_MM)
    # Garbage at hidden joints (NaN, huge values) changes nothing.
    pred_bad, gt_bad = pred.copy(), gt.copy()
    pred_bad[~mask], gt_bad[~mask] = np.nan, 1e9
    again = pa_mpjpe(t64(pred_bad), t64(gt_bad), mask=torch.from_numpy(mask), allow_reflection=allow_reflection)
    np.testing.assert_allclose(again.numpy(), expected, rtol=0, atol=TOL_MM)
    assert not np.allclose(got, pa_mpjpe(t64(pred), t64(gt), allow_reflection=allow_reflection).numpy())


def test_pa_per_joint_errors_match_reference() -> None:
    pred, gt = hands(8, seed=8)
    got = pa_joint_errors(t64(pred), t64(gt)).numpy()
    expected = np.stack(
        [np.linalg.norm(ref_similarity_proper(p, g) - g, axis=-1) for p, g in zip(pred, gt, strict=True)]
    )
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL_MM)


def test_float32_camera_space_input_loses_only_its_own_rounding() -> None:
    pred, gt = hands(64, seed=9)
    p32, g32 = t64(pred).float(), t64(gt).float()
    np.testing.assert_allclose(pa_mpjpe(p32, g32).numpy(), ref_pa(pred, gt), rtol=0, atol=1e-4)
    np.testing.assert_allclose(
        pa_mpjpe(p32, g32, allow_reflection=True).numpy(), ref_pa(pred, gt, mirror=True), atol=1e-4
    )
    np.testing.assert_allclose(mpjpe(p32, g32).numpy(), ref_mpjpe(pred, gt, None, 0), rtol=0, atol=1e-4)
    assert pa_mpjpe(p32, g32).dtype == torch.float64


def test_metres_with_unit_m_give_the_same_millimetres() -> None:
    pred, gt = hands(16, seed=10)
    pm, gm = t64(pred / 1000.0), t64(gt / 1000.0)
    for fn in (mpjpe, pa_mpjpe, n_mpjpe, mpjpe_sc_tr):
        in_mm, in_m = fn(t64(pred), t64(gt)), fn(pm, gm, unit="m")
        np.testing.assert_allclose(in_m.numpy(), in_mm.numpy(), rtol=1e-9)
        assert in_m.min() > 1.0
    with pytest.raises(ValueError, match="unit"):
        mpjpe(pm, gm, unit="cm")  # type: ignore[arg-type]


# -- MPJPE, root choice, masks ------------------------------------------------------------------------
@pytest.mark.parametrize("root", [0, 9, None])
def test_mpjpe_root_and_mask_follow_the_formula(root: int | None) -> None:
    pred, gt = hands(32, seed=11)
    mask = np.random.default_rng(12).random((32, 21)) > 0.4
    mask[:, 0] = True
    got = mpjpe(t64(pred), t64(gt), mask=torch.from_numpy(mask), root_index=root).numpy()
    np.testing.assert_allclose(got, ref_mpjpe(pred, gt, mask, root), rtol=0, atol=1e-9)
    if root is not None:  # aligning by the root differs from not aligning
        assert not np.allclose(got, ref_mpjpe(pred, gt, mask, None))


def test_sample_without_visible_joints_is_nan_and_others_are_untouched() -> None:
    pred, gt = hands(3, seed=13)
    mask = torch.ones(3, 21, dtype=torch.bool)
    mask[1] = False
    for fn in (mpjpe, pa_mpjpe, n_mpjpe, mpjpe_sc_tr):
        got = fn(t64(pred), t64(gt), mask=mask)
        assert torch.isnan(got[1]) and torch.isfinite(got[[0, 2]]).all()
        torch.testing.assert_close(got[[0, 2]], fn(t64(pred[[0, 2]]), t64(gt[[0, 2]])), rtol=0, atol=1e-9)


def test_mpvpe_without_and_with_roots() -> None:
    pred, gt = hands(8, joints=50, seed=14)
    np.testing.assert_allclose(mpvpe(t64(pred), t64(gt)).numpy(), ref_mpjpe(pred, gt, None, None), atol=1e-9)
    pr, gr = pred[:, 3], gt[:, 3]
    got = mpvpe(t64(pred), t64(gt), pred_root=t64(pr), target_root=t64(gr)).numpy()
    np.testing.assert_allclose(got, ref_mpjpe(pred, gt, None, 3), atol=1e-9)
    np.testing.assert_allclose(pa_mpvpe(t64(pred), t64(gt)).numpy(), ref_pa(pred, gt), atol=TOL_MM)
    with pytest.raises(ValueError, match="both"):
        mpvpe(t64(pred), t64(gt), pred_root=t64(pr))


# -- scale alignments ---------------------------------------------------------------------------------
def test_sc_tr_matches_ho3d_align_sc_tr() -> None:
    pred, gt = hands(32, seed=15)
    pred = pred * 1.3  # a scale error the alignment must remove
    expected = [ref_mean_dist(ref_align_sc_tr(g, p), g) for p, g in zip(pred, gt, strict=True)]
    np.testing.assert_allclose(mpjpe_sc_tr(t64(pred), t64(gt)).numpy(), expected, rtol=0, atol=1e-9)


def test_n_mpjpe_matches_mmpose_scale_alignment() -> None:
    pred, gt = hands(32, seed=16)
    pred = pred * 0.8
    scale = np.einsum("nkc,nkc->n", pred, gt) / np.einsum("nkc,nkc->n", pred, pred)
    expected = np.linalg.norm(pred * scale[:, None, None] - gt, axis=-1).mean(axis=1)
    np.testing.assert_allclose(n_mpjpe(t64(pred), t64(gt), root_index=None).numpy(), expected, atol=1e-9)
    # Root-aligned and masked: the scale is fitted on the visible root-relative joints only.
    mask = np.random.default_rng(17).random((32, 21)) > 0.3
    got = n_mpjpe(t64(pred), t64(gt), mask=torch.from_numpy(mask), root_index=0).numpy()
    for i in range(32):
        p, g = (pred[i] - pred[i, 0])[mask[i]], (gt[i] - gt[i, 0])[mask[i]]
        np.testing.assert_allclose(got[i], ref_mean_dist(p * (p * g).sum() / (p * p).sum(), g), atol=1e-9)


# -- degenerate input ---------------------------------------------------------------------------------
def test_degenerate_predictions_give_the_analytic_value() -> None:
    _, gt = hands(8, seed=18)
    g = t64(gt)
    to_centroid = np.linalg.norm(gt - gt.mean(axis=1, keepdims=True), axis=-1).mean(axis=1)
    to_root = np.linalg.norm(gt - gt[:, :1], axis=-1).mean(axis=1)
    for pred in (torch.zeros_like(g), torch.full_like(g, 123.0)):  # all-zero and constant
        for allow_reflection in (False, True):
            got = pa_mpjpe(pred, g, allow_reflection=allow_reflection)
            np.testing.assert_allclose(got.numpy(), to_centroid, atol=1e-9)  # best similarity: scale 0
        np.testing.assert_allclose(mpjpe(pred, g).numpy(), to_root, atol=1e-9)
        np.testing.assert_allclose(n_mpjpe(pred, g).numpy(), to_root, atol=1e-9)
        np.testing.assert_allclose(mpjpe_sc_tr(pred, g).numpy(), to_root, atol=1e-9)
    # Zero-variance target and prediction: nothing to align, nothing wrong.
    assert pa_mpjpe(torch.zeros_like(g), torch.zeros_like(g)).abs().max() == 0
    # A single visible joint can always be matched exactly.
    one = torch.zeros(8, 21, dtype=torch.bool)
    one[:, 5] = True
    assert pa_mpjpe(t64(hands(8)[0]), g, mask=one).abs().max() <= TOL_MM


def test_collinear_and_planar_points_match_the_reference() -> None:
    rng = np.random.default_rng(19)
    line = np.linspace(0, 100, 21)[:, None] * rng.normal(size=(4, 1, 3)) + 500.0
    plane = np.concatenate([rng.normal(0, 40, (4, 21, 2)), np.zeros((4, 21, 1))], axis=2) + 500.0
    for gt in (line, plane):
        pred = gt + rng.normal(0, 5, gt.shape)
        np.testing.assert_allclose(pa_mpjpe(t64(pred), t64(gt)).numpy(), ref_pa(pred, gt), atol=TOL_MM)
        got = pa_mpjpe(t64(gt), t64(pred))  # degenerate set as the prediction
        np.testing.assert_allclose(got.numpy(), ref_pa(gt, pred), atol=TOL_MM)


# -- the closed-form rotation solver -----------------------------------------------------------------
def ref_pa_joint_errors_svd(pred: np.ndarray, gt: np.ndarray, mirror: bool) -> np.ndarray:
    """Batched Umeyama with ``torch.linalg.svd``: per-joint distances ``(B, N)`` after the best similarity."""
    p, g = t64(pred), t64(gt)
    pc, gc = p - p.mean(dim=1, keepdim=True), g - g.mean(dim=1, keepdim=True)
    u, s, vh = torch.linalg.svd(gc.transpose(1, 2) @ pc)  # K = Σ g pᵀ = U S Vᵀ
    d = torch.ones_like(s)
    if not mirror:
        d[:, 2] = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))
    rot = u @ torch.diag_embed(d) @ vh
    scale = (s * d).sum(dim=1) / pc.square().sum(dim=(1, 2))
    aligned = scale[:, None, None] * pc @ rot.transpose(1, 2) + g.mean(dim=1, keepdim=True)
    return torch.linalg.vector_norm(aligned - g, dim=-1).numpy()


def rotated_hands(batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy predictions under random rotations (every 4th also mirrored), about 500 mm from the camera."""
    pred, gt = hands(batch, seed=seed)
    rot = Rotation.random(batch, random_state=seed).as_matrix()
    rot[::4] *= np.array([-1.0, 1.0, 1.0])  # an improper "rotation": a wrong-hand prediction
    return np.einsum("bij,bnj->bni", rot, pred - 500.0) + 500.0, gt


def test_closed_form_solver_matches_svd_umeyama_on_20k_samples() -> None:
    pred, gt = rotated_hands(20_000, seed=30)  # more than one solver chunk
    for mirror in (False, True):
        got = pa_joint_errors(t64(pred), t64(gt), allow_reflection=mirror).numpy()
        np.testing.assert_allclose(got, ref_pa_joint_errors_svd(pred, gt, mirror), rtol=0, atol=1e-9)
    assert got.mean() > 5.0  # the noise is not aligned away


@pytest.fixture
def svd_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the batches handed to the SVD fallback of the closed-form solver, call by call."""
    import trainwell.metrics.procrustes as procrustes

    calls: list[int] = []
    svd_rotation = procrustes.svd_rotation

    def counting(cov: torch.Tensor, allow_reflection: bool) -> torch.Tensor:
        calls.append(cov.shape[0])
        return svd_rotation(cov, allow_reflection)

    monkeypatch.setattr(procrustes, "svd_rotation", counting)
    return calls


@pytest.mark.parametrize("angle_off_pi", [0.0, 1e-9, 1e-5, 1e-2])
def test_near_half_turn_rotations_are_exact(angle_off_pi: float, svd_calls: list[int]) -> None:
    # A half turn has quaternion w = 0: the eigenvector must not be taken from the (vanishing) first column.
    pred, gt = hands(64, seed=31)
    axes = np.random.default_rng(32).normal(size=(64, 3))
    rotvec = axes / np.linalg.norm(axes, axis=1, keepdims=True) * (np.pi - angle_off_pi)
    rot = Rotation.from_rotvec(rotvec).as_matrix()
    for source in (gt, pred):  # exact and noisy
        turned = np.einsum("bij,bnj->bni", rot, source)
        for mirror in (False, True):
            got = pa_joint_errors(t64(turned), t64(gt), allow_reflection=mirror).numpy()
            np.testing.assert_allclose(got, ref_pa_joint_errors_svd(turned, gt, mirror), rtol=0, atol=1e-9)
    assert pa_mpjpe(t64(np.einsum("bij,bnj->bni", rot, gt)), t64(gt)).abs().max() <= 1e-9
    assert svd_calls == []  # solved in closed form, not rescued by the fallback


@pytest.mark.parametrize("thickness_mm", [0.0, 1e-9, 1e-4, 1.0])
def test_planar_and_near_planar_hands(thickness_mm: float) -> None:
    rng = np.random.default_rng(33)
    flat = np.concatenate([rng.normal(0, 40, (32, 21, 2)), rng.normal(0, 1, (32, 21, 1)) * thickness_mm], axis=2)
    rot = Rotation.random(32, random_state=34).as_matrix()
    plane = np.einsum("bij,bnj->bni", rot, flat) + 500.0
    noisy = plane + rng.normal(0, 5, plane.shape)
    for pred, gt in ((noisy, plane), (plane, noisy)):  # a flat target, a flat prediction
        for mirror in (False, True):
            got = pa_joint_errors(t64(pred), t64(gt), allow_reflection=mirror).numpy()
            np.testing.assert_allclose(got, ref_pa_joint_errors_svd(pred, gt, mirror), rtol=0, atol=1e-9)
            np.testing.assert_allclose(got.mean(axis=1), ref_pa(pred, gt, mirror=mirror), rtol=0, atol=TOL_MM)
    # A flat hand onto itself. With mirrors allowed, the reflection through the plane is optimal too, up to
    # rounding, and moves each point by twice its distance from the plane: that is as exact as the data.
    assert pa_joint_errors(t64(plane), t64(plane)).max() <= 1e-9
    assert pa_joint_errors(t64(plane), t64(plane), allow_reflection=True).max() <= 1e-9 + 10 * thickness_mm


def test_collinear_points_fall_back_to_svd_and_stay_exact(svd_calls: list[int]) -> None:
    # Collinear points make the top eigenvalue double: no unique rotation, which the closed form must detect.
    rng = np.random.default_rng(35)
    pred, gt = hands(16, seed=36)
    line = np.linspace(-60, 60, 21)[:, None] * rng.normal(size=(4, 1, 3)) + 500.0
    pred[:4] = line  # four collinear predictions among ordinary ones
    for mirror in (False, True):
        svd_calls.clear()
        got = pa_joint_errors(t64(pred), t64(gt), allow_reflection=mirror).numpy()
        np.testing.assert_allclose(got, ref_pa_joint_errors_svd(pred, gt, mirror), rtol=0, atol=1e-9)
        np.testing.assert_allclose(got.mean(axis=1), ref_pa(pred, gt, mirror=mirror), rtol=0, atol=TOL_MM)
        assert svd_calls == [4]  # exactly the collinear samples, and only they
    svd_calls.clear()
    pa_mpjpe(*map(t64, rotated_hands(1000, seed=37)))
    assert svd_calls == []  # ordinary predictions never need the fallback


def test_identical_and_scaled_inputs_score_zero() -> None:
    _, gt = hands(256, seed=38)
    for mirror in (False, True):
        assert pa_mpjpe(t64(gt), t64(gt), allow_reflection=mirror).abs().max() <= 1e-9
        assert pa_mpjpe(t64(gt * 0.01), t64(gt), allow_reflection=mirror).abs().max() <= 1e-9


def test_results_do_not_depend_on_the_batch_split() -> None:
    pred, gt = rotated_hands(300, seed=39)
    mask = torch.from_numpy(np.random.default_rng(40).random((300, 21)) > 0.2)
    for mirror in (False, True):
        whole = pa_joint_errors(t64(pred), t64(gt), mask=mask, allow_reflection=mirror)
        parts = [
            pa_joint_errors(t64(pred[s : s + 7]), t64(gt[s : s + 7]), mask=mask[s : s + 7], allow_reflection=mirror)
            for s in range(0, 300, 7)
        ]
        assert torch.equal(torch.cat(parts), whole)  # bitwise: Newton stops per sample, sums in fixed order


# -- PCK / AUC ----------------------------------------------------------------------------------------
def test_pck_and_auc_match_freihand_eval_util() -> None:
    rng = np.random.default_rng(20)
    err = rng.gamma(2.0, 8.0, (200, 21))
    vis = rng.random((200, 21)) > 0.2
    vis[:, 7] = False  # a joint never seen is skipped, as in FreiHAND
    auc, curve, thresholds = ref_freihand_measures(err, vis, 0.0, 50.0, 100)
    e, v = t64(err), torch.from_numpy(vis)
    assert pck_auc(e, v) == pytest.approx(auc, abs=1e-12)
    np.testing.assert_allclose(pck_curve(e, t64(thresholds), v).numpy(), curve, atol=1e-12)
    assert pck(e, 20.0, v) == pytest.approx(ref_freihand_measures(err, vis, 20.0, 21.0, 2)[1][0], abs=1e-12)


def test_auc_is_one_when_perfect_and_zero_when_60mm_off() -> None:
    _, gt = hands(10, seed=21)
    g = t64(gt)
    assert pck_auc(joint_errors(g, g)) == 1.0
    off = g + torch.tensor([60.0, 0.0, 0.0], dtype=torch.float64)
    assert pck_auc(joint_errors(off, g, root_index=None)) == 0.0
    assert pck(torch.full((4, 3), 20.0, dtype=torch.float64), 20.0) == 1.0  # the threshold itself counts


def test_per_joint_mean_uses_visible_samples_only() -> None:
    rng = np.random.default_rng(22)
    err, vis = rng.random((30, 5)), rng.random((30, 5)) > 0.5
    vis[:, 2] = False
    got = per_joint_mean(t64(err), torch.from_numpy(vis)).numpy()
    expected = [err[vis[:, k], k].mean() if vis[:, k].any() else np.nan for k in range(5)]
    np.testing.assert_allclose(got, expected, atol=1e-12)


# -- F-score ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("unit", ["mm", "m"])
def test_f_score_matches_brute_force(unit: str) -> None:
    rng = np.random.default_rng(23)
    gt = rng.normal(0, 40, (6, 120, 3)) + 500.0
    pred = gt[:, :90] + rng.normal(0, 6, (6, 90, 3))  # fewer predicted points than target points
    scale = 1000.0 if unit == "m" else 1.0
    got = f_score(t64(pred / scale), t64(gt / scale), (5.0, 15.0), unit=unit).numpy()  # type: ignore[arg-type]
    expected = [[ref_fscore(g, p, th) for th in (5.0, 15.0)] for p, g in zip(pred, gt, strict=True)]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert got[:, 0].min() > 0.0 and got[:, 0].max() < got[:, 1].min()
    # Chunking over the batch changes nothing.
    chunked = f_score(t64(pred / scale), t64(gt / scale), (5.0, 15.0), unit=unit, max_chunk_bytes=1)  # type: ignore[arg-type]
    np.testing.assert_array_equal(chunked.numpy(), got)


def test_f_score_is_zero_when_nothing_matches_and_one_when_identical() -> None:
    _, gt = hands(4, joints=30, seed=24)
    g = t64(gt)
    assert (f_score(g, g) == 1.0).all()
    assert (f_score(g + 1000.0, g) == 0.0).all()


def test_shape_errors_name_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        mpjpe(torch.zeros(2, 21, 3), torch.zeros(2, 20, 3))
    with pytest.raises(ValueError, match="mask"):
        pa_mpjpe(torch.zeros(2, 21, 3), torch.zeros(2, 21, 3), mask=torch.ones(2, 21))
