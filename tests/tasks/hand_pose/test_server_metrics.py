"""The logged ``freihand/…`` and ``ho3d/…`` metrics against the official evaluation scripts' rules, re-expressed here
in NumPy/SciPy from ``lmb-freiburg/freihand`` and ``shreyashampali/ho3d`` ``eval.py`` (per sample: unaligned errors,
``align_w_scale`` with its 1e-8 guards and mirrors, HO3D's ``align_sc_tr`` on joints 0 and 4 of its own order, mesh
errors only when the vertex counts match, F-scores; then ``EvalUtil.get_measures``), and the exported ``pred.json``
files scored by those rules reproduce the logged numbers."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes

from trainwell.tasks.hand_pose.render import RenderConfig, render_rgbd
from trainwell.tasks.hand_pose.rgbd_task import RGBDHandEvaluator
from trainwell.tasks.hand_pose.server_metrics import SERVER_METRIC_NAMES, server_metrics, server_sample_results
from trainwell.tasks.hand_pose.synthetic import SyntheticHandsConfig
from trainwell.tasks.hand_pose.task import LiftingEvaluator

MANO_TO_SIMPLE = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]  # pack[j] = ho3d[...]


# -- the official rules ------------------------------------------------------------------------------
def align_w_scale(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    t1, t2 = gt.mean(0), pred.mean(0)
    g, p = gt - t1, pred - t2
    s1, s2 = np.linalg.norm(g) + 1e-8, np.linalg.norm(p) + 1e-8
    rot, s = orthogonal_procrustes(g / s1, p / s2)
    return (p / s2) @ rot.T * s * s1 + t1


def align_sc_tr(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    s = np.sqrt(np.sum(np.square(pred[4] - pred[0])))
    p = pred / s if s > 0 else pred.copy()
    p = p * np.sqrt(np.sum(np.square(gt[4] - gt[0])))
    return p - p[0:1] + gt[0:1]


def fscore(gt: np.ndarray, pr: np.ndarray, th: float) -> float:
    d = np.linalg.norm(gt[:, None] - pr[None], axis=-1)
    d1, d2 = d.min(axis=1), d.min(axis=0)
    recall, precision = float(np.mean(d2 < th)), float(np.mean(d1 < th))
    return 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0


def measures(per_point: list[np.ndarray]) -> tuple[float, float]:
    """``EvalUtil.get_measures(0, 0.05, 100)``: mean error (m) and AUC, per point over samples, then over points."""
    data = np.stack(per_point)  # (samples, points)
    thresholds = np.linspace(0.0, 0.05, 100)
    norm = np.trapezoid(np.ones_like(thresholds), thresholds)
    aucs = [
        np.trapezoid([np.mean(data[:, k] <= t) for t in thresholds], thresholds) / norm for k in range(data.shape[1])
    ]
    return float(np.mean(data.mean(axis=0))), float(np.mean(aucs))


def official_scores(gt_xyz, gt_verts, pred_xyz, pred_verts, *, ho3d: bool) -> dict[str, float]:
    """Both scripts' loop over samples and their scores.txt values (errors converted to mm here)."""
    err, err_al, err_sc, mesh, mesh_al, f, f_al = ([] for _ in range(7))
    shape_is_mano = None
    for xyz, verts, xyz_p, verts_p in zip(gt_xyz, gt_verts, pred_xyz, pred_verts, strict=True):
        xyz, verts, xyz_p, verts_p = (np.array(x) for x in (xyz, verts, xyz_p, verts_p))
        err.append(np.linalg.norm(xyz - xyz_p, axis=1))
        if shape_is_mano is None:
            shape_is_mano = verts_p.shape[0] == verts.shape[0]
        assert shape_is_mano, "these tests give the prediction the ground truth's vertex count"
        mesh.append(np.linalg.norm(verts - verts_p, axis=1))
        err_sc.append(np.linalg.norm(xyz - align_sc_tr(xyz, xyz_p), axis=1))
        err_al.append(np.linalg.norm(xyz - align_w_scale(xyz, xyz_p), axis=1))
        verts_al = align_w_scale(verts, verts_p)
        mesh_al.append(np.linalg.norm(verts - verts_al, axis=1))
        f.append([fscore(verts, verts_p, t) for t in (0.005, 0.015)])
        f_al.append([fscore(verts, verts_al, t) for t in (0.005, 0.015)])
    out: dict[str, float] = {}
    for prefix, data in (("", err), ("pa_", err_al)) + ((("sc_tr_", err_sc),) if ho3d else ()):
        mean_m, auc = measures(data)
        out[f"{prefix}mpjpe_mm"], out[f"{prefix}auc_0_50"] = mean_m * 1000, auc
    out["mpvpe_mm"], out["pa_mpvpe_mm"] = measures(mesh)[0] * 1000, measures(mesh_al)[0] * 1000
    for k, t in enumerate((5, 15)):
        out[f"f_{t}mm"], out[f"pa_f_{t}mm"] = float(np.mean(np.array(f)[:, k])), float(np.mean(np.array(f_al)[:, k]))
    return out


def assert_matches(logged: dict[str, float], official: dict[str, float], prefix: str) -> None:
    for name, value in official.items():
        tolerance = 0.01 if name.endswith("_mm") else 1e-9  # ≤ 0.01 mm; fractions to round-off
        assert logged[f"{prefix}/{name}"] == pytest.approx(value, abs=tolerance), name
    assert {k for k in logged if k.startswith(prefix + "/")} == {f"{prefix}/{n}" for n in official}


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    return render_rgbd(SyntheticHandsConfig(), RenderConfig(crop_size_px=16), 0, "val", np.arange(12))


def noisy_outputs(batch: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Model-like outputs: the true hands with joint noise, a wrong wrist, a scaled mesh, two mirrored hands."""
    g = torch.Generator().manual_seed(seed)
    n = batch["joints_rel_mm"].shape[0]
    joints = batch["joints_rel_mm"] + 6.0 * torch.randn(batch["joints_rel_mm"].shape, generator=g)
    joints[:, 0] = 0.0
    joints[:2] = joints[:2] * torch.tensor([-1.0, 1.0, 1.0])  # mirrored: the servers forgive it after alignment
    vertices = batch["vertices_rel_mm"] * 1.05 + 3.0 * torch.randn(batch["vertices_rel_mm"].shape, generator=g)
    root = batch["root_cam_mm"] + 12.0 * torch.randn((n, 3), generator=g)
    return {"joints_mm": joints, "vertices_mm": vertices, "root_cam_mm": root}


# -- tests -------------------------------------------------------------------------------------------
def test_server_functions_match_the_official_rules(batch) -> None:
    out = noisy_outputs(batch)
    pred_j = (out["joints_mm"] + out["root_cam_mm"][:, None]).double()
    pred_v = (out["vertices_mm"] + out["root_cam_mm"][:, None]).double()
    true_j = batch["joints_cam_mm"].double()
    true_v = (batch["vertices_rel_mm"] + batch["root_cam_mm"][:, None]).double()
    logged = server_metrics(server_sample_results(pred_j, true_j, pred_v, true_v))
    m = lambda x: (x / 1000).numpy()  # noqa: E731 — the files hold metres
    assert_matches(logged, official_scores(m(true_j), m(true_v), m(pred_j), m(pred_v), ho3d=False), "freihand")
    order = np.argsort(MANO_TO_SIMPLE)  # HO3D's rules read its own joint order (align_sc_tr's bone is 0 → 4)
    ho3d = official_scores(m(true_j)[:, order], m(true_v), m(pred_j)[:, order], m(pred_v), ho3d=True)
    assert_matches(logged, ho3d, "ho3d")
    assert set(logged) == set(SERVER_METRIC_NAMES)  # the task's metric specs name every logged server metric
    # The mirrored hands are forgiven by the servers' alignment but not by the unaligned error.
    assert logged["freihand/pa_mpjpe_mm"] < logged["freihand/mpjpe_mm"]


def test_exported_files_scored_by_the_official_rules_reproduce_the_logged_metrics(batch, tmp_path: Path) -> None:
    evaluator = RGBDHandEvaluator()
    outputs = noisy_outputs(batch, seed=1)
    outputs["keypoints_2d_px"] = batch["keypoints_2d_px"]
    for order in ([5, 6, 7, 8, 9, 10, 11], [0, 1, 2, 3, 4]):  # out of order: files and means are by index
        part = {k: v[order] for k, v in batch.items()}
        evaluator.update_with_outputs({k: v[order] for k, v in outputs.items()}, part, torch.tensor(order))
    logged = evaluator.compute()
    freihand, ho3d = evaluator.save_outputs(tmp_path)

    # The ground truth as each benchmark stores it: FreiHAND metres in the camera frame; HO3D also its joint order
    # and OpenGL frame.
    gt_xyz = (batch["joints_cam_mm"].double() / 1000).numpy()
    gt_verts = ((batch["vertices_rel_mm"] + batch["root_cam_mm"][:, None]).double() / 1000).numpy()
    pred = json.loads(freihand.read_text())
    assert_matches(logged, official_scores(gt_xyz, gt_verts, pred[0], pred[1], ho3d=False), "freihand")
    to_gl = np.array([1.0, -1.0, -1.0])
    ho3d_order = np.argsort(MANO_TO_SIMPLE)
    pred = json.loads(ho3d.read_text())
    ho3d_gt = official_scores(gt_xyz[:, ho3d_order] * to_gl, gt_verts * to_gl, pred[0], pred[1], ho3d=True)
    assert_matches(logged, ho3d_gt, "ho3d")

    # The absolute wrist: root_error is the wrist's distance; mpjpe_cam the unaligned MPJPE.
    root_error = (outputs["root_cam_mm"] - batch["root_cam_mm"]).norm(dim=-1).double().mean()
    assert logged["root_error"] == pytest.approx(float(root_error), rel=1e-6)
    assert logged["mpjpe_cam"] == pytest.approx(logged["freihand/mpjpe_mm"], rel=1e-12)


def test_lifting_evaluator_logs_the_translation_free_server_metrics(batch) -> None:
    out = noisy_outputs(batch)
    evaluator = LiftingEvaluator(root_index=0, scale_bone=(0, 9))
    evaluator.update(out["joints_mm"], batch["joints_rel_mm"], torch.arange(12))
    logged = evaluator.compute()
    # Procrustes and align_sc_tr ignore where the hand is: root-relative joints score as the absolute ones would.
    gt = (batch["joints_cam_mm"].double() / 1000).numpy()
    placed = ((out["joints_mm"] + batch["root_cam_mm"][:, None]).double() / 1000).numpy()
    gt_ho3d, placed_ho3d = gt[:, np.argsort(MANO_TO_SIMPLE)], placed[:, np.argsort(MANO_TO_SIMPLE)]
    for name, rule in (("pa_", align_w_scale), ("sc_tr_", align_sc_tr)):
        g, p = (gt, placed) if name == "pa_" else (gt_ho3d, placed_ho3d)
        mean_m, auc = measures([np.linalg.norm(a - rule(a, b), axis=1) for a, b in zip(g, p, strict=True)])
        assert logged[f"ho3d/{name}mpjpe_mm"] == pytest.approx(mean_m * 1000, abs=0.01)
        assert logged[f"ho3d/{name}auc_0_50"] == pytest.approx(auc, abs=1e-9)
    assert "freihand/mpjpe_mm" not in logged and "freihand/pa_mpjpe_mm" in logged  # no absolute prediction


def test_per_view_bins_split_palm_and_back_views() -> None:
    """Hands facing the camera (palm, back) land in the first and last bins; each bin's mean is its samples'."""
    views = {"palm": 0.0, "back": 1.0}
    batches = {
        name: render_rgbd(
            SyntheticHandsConfig(view_tilt_deg=1.0, back_view_prob=p, centroid_region=0.0),
            RenderConfig(crop_size_px=16),
            0,
            "val",
            np.arange(4),
        )
        for name, p in views.items()
    }
    whole = {k: torch.cat([batches["palm"][k], batches["back"][k]]) for k in batches["palm"]}
    outputs = noisy_outputs(whole)
    outputs["joints_mm"] = whole["joints_rel_mm"] * torch.tensor([1.0] * 4 + [1.3] * 4)[:, None, None]  # back: worse
    outputs["keypoints_2d_px"] = whole["keypoints_2d_px"]
    evaluator = RGBDHandEvaluator()
    evaluator.update_with_outputs(outputs, whole, torch.arange(8))
    logged = evaluator.compute()
    assert {k for k in logged if k.startswith("pa_mpjpe_by_view/")} == {
        "pa_mpjpe_by_view/0_30deg",
        "pa_mpjpe_by_view/150_180deg",
    }
    for rows, name in ((slice(0, 4), "0_30deg"), (slice(4, 8), "150_180deg")):
        part = RGBDHandEvaluator()
        part.update_with_outputs(
            {k: v[rows] for k, v in outputs.items()}, {k: v[rows] for k, v in whole.items()}, torch.arange(4)
        )
        alone = part.compute()
        for metric in ("mpjpe", "pa_mpjpe", "root_error"):
            assert logged[f"{metric}_by_view/{name}"] == pytest.approx(alone[metric], rel=1e-9)
    assert logged["mpjpe_by_view/150_180deg"] > logged["mpjpe_by_view/0_30deg"]


@pytest.mark.slow
def test_the_report_says_which_numbers_are_the_servers(tmp_path: Path) -> None:
    """The task's specs describe each server's protocol; the run records them and ``trainwell report`` prints the
    description under the ``freihand`` / ``ho3d`` charts (not under the pack's own groups)."""
    import re

    from trainwell.cli import main
    from trainwell.tasks.hand_pose.rgbd_task import RGBDHandPoseTask
    from trainwell.tasks.hand_pose.server_metrics import SERVER_PROTOCOLS
    from trainwell.tasks.hand_pose.task import HandPoseTask

    specs = RGBDHandPoseTask.__new__(RGBDHandPoseTask).metric_specs()  # the specs read nothing of the config
    for name in SERVER_METRIC_NAMES:
        assert "root-relative" in specs[name].description and name.split("/")[0] in ("freihand", "ho3d")
    assert specs["freihand/pa_mpjpe_mm"].description.startswith("FreiHAND's eval.py")
    assert "sc_tr_" in specs["ho3d/sc_tr_mpjpe_mm"].description and not specs["pa_mpjpe"].description

    config = str(Path(__file__).resolve().parents[3] / "configs/hand_pose/tiny.yaml")
    small = ["data.train_size=256", "data.val_size=64", "train.epochs=1", "train.batch_size=32", f"run.dir={tmp_path}"]
    assert main(["train", config, *small]) == 0
    assert main(["report", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    captions = dict(re.findall(r"<figcaption>Per item: ([^<( ]+)[^<]*?(?: — ([^<]*))?</figcaption>", page))
    assert {"freihand", "ho3d", "mpjpe_joint"} <= set(captions)
    # The lifting task's translation-free server metrics are described too, and the run recorded the descriptions.
    lifting = {n for n in HandPoseTask.__new__(HandPoseTask).build_evaluator().metric_names() if "/pa_" in n}
    context = next(json.loads(line) for line in (tmp_path / "findings.jsonl").open() if '"context"' in line)
    recorded = context["metric_specs"]
    assert lifting and all(recorded[n]["description"] == SERVER_PROTOCOLS[n.split("/")[0]] for n in lifting)
    for server, protocol in SERVER_PROTOCOLS.items():
        assert captions[server] == protocol.replace("'", "&#x27;")
    assert captions["mpjpe_joint"] == ""  # the pack's own per-joint errors carry no server description
