"""KITTI AP_R40: hand-built cases with exactly known AP, and a loop-by-loop re-implementation of KITTI's rules."""

from __future__ import annotations

import numpy as np
import pytest

from trainwell.tasks.detection3d.ap import FrameDetections, FrameLabels, box_height_px, recall_at_iou
from trainwell.tasks.detection3d.boxes import iou_3d, iou_bev
from trainwell.tasks.detection3d.table import kitti_eval

CAR = [1.6, 3.9, 1.5]  # dx (length), dy (width), dz (height), metres


def _car(x: float, y: float, heading: float = 0.0) -> list[float]:
    return [x, y, -1.0, CAR[1], CAR[0], CAR[2], heading]


def _bbox(height_px: np.ndarray, left_px: np.ndarray | None = None) -> np.ndarray:
    """2D boxes of the given heights, 50 px wide, side by side (far apart: their 2D IoUs are zero)."""
    left = np.arange(len(height_px)) * 60.0 if left_px is None else left_px
    return np.stack([left, np.full(len(height_px), 100.0), left + 50.0, 100.0 + np.asarray(height_px)], 1)


def _labels(boxes: list[list[float]], names: list[str] | None = None, height_px: float = 60.0) -> FrameLabels:
    n = len(boxes)
    return FrameLabels(
        names=names or ["Car"] * n,
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 7),
        bbox=_bbox(np.full(n, height_px)),
        alpha=np.zeros(n),
        truncation=np.zeros(n),
        occlusion=np.zeros(n, dtype=int),
    )


def _dets(boxes: list[list[float]], scores: list[float], names: list[str] | None = None) -> FrameDetections:
    n = len(boxes)
    return FrameDetections(
        names=names or ["Car"] * n,
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 7),
        scores=np.array(scores, dtype=np.float64),
        bbox=_bbox(np.full(n, 60.0)),
        alpha=np.zeros(n),
    )


def _grid(n: int) -> list[list[float]]:
    return [_car(5.0 + 8 * (i % 10), -20.0 + 5 * (i // 10)) for i in range(n)]


def test_perfect_detections_score_100() -> None:
    gts = _grid(80)
    # Ten frames of eight cars each, every car detected exactly.
    labels = [_labels(gts[i * 8 : (i + 1) * 8]) for i in range(10)]
    dets = [_dets(gts[i * 8 : (i + 1) * 8], list(np.linspace(0.9, 0.5, 8) - i * 0.01)) for i in range(10)]
    ap = kitti_eval(labels, dets, classes=["Car"])
    assert ap["kitti/Car_3d_moderate_R40_70"] == pytest.approx(100.0)
    assert ap["kitti/Car_bev_easy_R40_50"] == pytest.approx(100.0)


def test_half_recall_scores_50_and_interleaved_false_positives_halve_precision() -> None:
    gts = _grid(80)
    scores = list(np.linspace(0.99, 0.2, 80))
    # 40 of 80 cars found, nothing else: recall stops at 0.5, so 20 of 40 recall positions have precision 1.
    half = kitti_eval([_labels(gts)], [_dets(gts[:40], scores[:40])], classes=["Car"])
    assert half["kitti/Car_3d_moderate_R40_70"] == pytest.approx(50.0)
    # Every car found, each one just below a false positive far away: precision 1/2 at every recall.
    fps = [_car(x[0], x[1] + 60.0) for x in gts]
    boxes, s = [], []
    for i in range(80):
        boxes += [fps[i], gts[i]]
        s += [scores[i] + 1e-4, scores[i]]
    inter = kitti_eval([_labels(gts)], [_dets(boxes, s)], classes=["Car"])
    assert inter["kitti/Car_bev_moderate_R40_70"] == pytest.approx(50.0)
    # False positives scored below every true positive cost nothing.
    low = kitti_eval([_labels(gts)], [_dets(gts + fps, scores + [0.01] * 80)], classes=["Car"])
    assert low["kitti/Car_bev_moderate_R40_70"] == pytest.approx(100.0)


def test_ignored_ground_truths_are_neither_missed_nor_false_positives() -> None:
    gts = _grid(80)
    # A small (30 px) car: ignored for Easy (needs > 40 px), counted for Moderate (> 25 px). A Van is ignored for Car.
    small = _labels([_car(8.0 * i, 30.0) for i in range(40)], height_px=30.0)
    van = _labels([_car(0.0, 40.0)], names=["Van"])
    labels = [_labels(gts), small, van]
    dets = [_dets(gts, list(np.linspace(0.9, 0.5, 80))), _dets([], []), _dets([_car(0.0, 40.0)], [0.99])]
    ap = kitti_eval(labels, dets, classes=["Car"])
    assert ap["kitti/Car_3d_easy_R40_70"] == pytest.approx(100.0)  # small car ignored, van detection not an FP
    # The 40 small cars are now misses: recall stops at 80 / 120, so about 2/3 of the 40 positions remain.
    assert 60.0 < ap["kitti/Car_3d_moderate_R40_70"] < 70.0


# ---- a plain re-implementation of KITTI's eval.py rules, one frame and one threshold at a time -------------------


def _ref_flags(gt: FrameLabels, det: FrameDetections, cls: str, diff: int) -> tuple[list[int], list[int], int]:
    min_h, max_occ, max_trunc = (40, 25, 25)[diff], (0, 1, 2)[diff], (0.15, 0.3, 0.5)[diff]
    gflags, num_valid = [], 0
    for i, name in enumerate(gt.names):
        if name == cls:
            valid = 1
        elif (cls, name) in (("Car", "Van"), ("Pedestrian", "Person_sitting")):
            valid = 0
        else:
            valid = -1
        hard = gt.occlusion[i] > max_occ or gt.truncation[i] > max_trunc or box_height_px(gt.bbox)[i] <= min_h
        if valid == 1 and not hard:
            gflags.append(0)
            num_valid += 1
        elif valid == 0 or (valid == 1 and hard):
            gflags.append(1)
        else:
            gflags.append(-1)
    dflags = []
    for j, name in enumerate(det.names):
        dflags.append(1 if box_height_px(det.bbox)[j] < min_h else (0 if name == cls else -1))
    return gflags, dflags, num_valid


def _ref_frame(ov, gflags, dflags, scores, min_ov, thresh, compute_fp):
    nd, ng = len(dflags), len(gflags)
    assigned = [False] * nd
    below = [compute_fp and scores[j] < thresh for j in range(nd)]
    tp = fp = fn = 0
    tp_scores = []
    for i in range(ng):
        if gflags[i] == -1:
            continue
        best, best_val, max_ov, took_ignored = -1, None, 0.0, False
        for j in range(nd):
            if dflags[j] == -1 or assigned[j] or below[j]:
                continue
            o = ov[j, i]
            if not compute_fp:
                if o > min_ov and (best_val is None or scores[j] > best_val):
                    best, best_val = j, scores[j]
            elif o > min_ov and (o > max_ov or took_ignored) and dflags[j] == 0:
                best, best_val, max_ov, took_ignored = j, 1, o, False
            elif o > min_ov and best_val is None and dflags[j] == 1:
                best, best_val, took_ignored = j, 1, True
        if best_val is None:
            fn += gflags[i] == 0
        elif gflags[i] == 1 or dflags[best] == 1:
            assigned[best] = True
        else:
            tp += 1
            tp_scores.append(scores[best])
            assigned[best] = True
    if compute_fp:
        fp = sum(1 for j in range(nd) if not assigned[j] and dflags[j] == 0 and not below[j])
    return tp, fp, fn, tp_scores


def _ref_ap(labels, dets, cls, diff, kind, min_ov) -> float:
    iou = iou_bev if kind == "bev" else iou_3d
    frames, all_scores, num_gt = [], [], 0
    import torch

    for gt, det in zip(labels, dets, strict=True):
        gflags, dflags, nv = _ref_flags(gt, det, cls, diff)
        num_gt += nv
        ov = iou(torch.tensor(det.boxes).reshape(-1, 7), torch.tensor(gt.boxes).reshape(-1, 7)).numpy()
        frames.append((ov, gflags, dflags, list(det.scores)))
        all_scores += _ref_frame(ov, gflags, dflags, list(det.scores), min_ov, 0.0, False)[3]
    if num_gt == 0:
        return 0.0
    # Thresholds: walk the TP scores from the top, keep one at each 1/40 recall step, choosing the closest.
    scores = sorted(all_scores, reverse=True)
    thresholds, pos = [], 0.0
    for i, s in enumerate(scores):
        here, nxt = (i + 1) / num_gt, ((i + 2) / num_gt if i + 1 < len(scores) else (i + 1) / num_gt)
        if i + 1 < len(scores) and nxt - pos < pos - here:
            continue
        thresholds.append(s)
        pos += 1 / 40
    prec = [0.0] * 41
    for k, t in enumerate(thresholds):
        tp = fp = 0
        for ov, gflags, dflags, sc in frames:
            a, b, _, _ = _ref_frame(ov, gflags, dflags, sc, min_ov, t, True)
            tp, fp = tp + a, fp + b
        prec[k] = tp / (tp + fp)
    prec = [max(prec[k:]) for k in range(41)]
    return sum(prec[1:]) / 40 * 100


def test_matches_a_plain_reimplementation_on_random_scenes() -> None:
    rng = np.random.default_rng(3)
    labels, dets = [], []
    for _ in range(12):
        n = int(rng.integers(0, 7))
        names = list(rng.choice(["Car", "Car", "Van", "Pedestrian", "Person_sitting", "Cyclist", "DontCare"], n))
        sizes = {"Pedestrian": (0.8, 0.6, 1.7), "Person_sitting": (0.8, 0.6, 1.2), "Cyclist": (1.8, 0.6, 1.7)}
        boxes = [
            [*rng.uniform([0, -15, -1.5], [40, 15, -0.5]), *sizes.get(nm, (3.9, 1.6, 1.5)), rng.uniform(-3, 3)]
            for nm in names
        ]
        gt = FrameLabels(
            names=names,
            boxes=np.array(boxes).reshape(-1, 7),
            bbox=_bbox(rng.uniform(15, 90, n)),
            alpha=np.zeros(n),
            truncation=rng.choice([0.0, 0.1, 0.2, 0.4, 0.6], n),
            occlusion=rng.integers(0, 4, n),
        )
        # Detections: jittered copies of some labels (some relabelled), plus random false positives.
        dboxes, dnames = [], []
        for b, nm in zip(boxes, names, strict=True):
            if rng.random() < 0.8:
                jitter = rng.normal(0, [0.25, 0.25, 0.1, 0.2, 0.1, 0.1, 0.1])
                dboxes.append(list(np.array(b) + jitter))
                dnames.append(nm if nm in ("Car", "Pedestrian", "Cyclist") else rng.choice(["Car", "Pedestrian"]))
        for _ in range(int(rng.integers(0, 4))):
            dboxes.append([*rng.uniform([0, -15, -1.5], [40, 15, -0.5]), 3.9, 1.6, 1.5, rng.uniform(-3, 3)])
            dnames.append(str(rng.choice(["Car", "Pedestrian", "Cyclist"])))
        m = len(dboxes)
        labels.append(gt)
        dets.append(
            FrameDetections(
                names=dnames,
                boxes=np.array(dboxes).reshape(-1, 7),
                scores=rng.uniform(0, 1, m),
                bbox=_bbox(rng.uniform(15, 90, m)),
                alpha=np.zeros(m),
            )
        )
    ap = kitti_eval(labels, dets)
    checked = 0
    for cls, ious in (("Car", (0.7, 0.5)), ("Pedestrian", (0.5, 0.25)), ("Cyclist", (0.5, 0.25))):
        for d, diff in enumerate(("easy", "moderate", "hard")):
            for kind in ("bev", "3d"):
                for iou in ious:
                    ref = _ref_ap(labels, dets, cls, d, kind, iou)
                    assert ap[f"kitti/{cls}_{kind}_{diff}_R40_{round(iou * 100)}"] == pytest.approx(ref, abs=1e-9)
                    checked += ref > 0
    assert checked > 10  # most combinations have a non-trivial AP


def test_recall_at_iou() -> None:
    gt = [np.array([_car(10, 0), _car(20, 0)])]
    det = [np.array([_car(10, 0), _car(21.0, 0)])]  # exact, and shifted by 1 m along its length
    rec = recall_at_iou(gt, det)
    shifted = float(iou_3d(__import__("torch").tensor(det[0][1:]), __import__("torch").tensor(gt[0][1:]))[0, 0])
    assert 0.5 < shifted < 0.7
    assert rec == {"recall_3d_30": 1.0, "recall_3d_50": 1.0, "recall_3d_70": 0.5}
