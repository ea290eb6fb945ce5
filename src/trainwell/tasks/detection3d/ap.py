"""KITTI average precision with 40 recall positions (AP_R40) in BEV and 3D, and OpenPCDet's recall at IoU.

The rules follow KITTI's object devkit as OpenPCDet's ``kitti_object_eval_python`` implements them:

* **Difficulty** (Easy / Moderate / Hard): a ground truth counts when its 2D box is taller than 40 / 25 / 25 px
  (strictly), its occlusion level is at most 0 / 1 / 2 and its truncation at most 0.15 / 0.3 / 0.5. A ground truth
  of the evaluated class that fails these is *ignored* (not a miss; a detection on it is not a false positive).
* **Neighbouring classes**: a ``Van`` is ignored when evaluating ``Car``, a ``Person_sitting`` when evaluating
  ``Pedestrian``. Other classes play no part. ``DontCare`` regions only matter for KITTI's 2D image metric,
  which is not computed here (BEV and 3D, as in KITTI and OpenPCDet, do not consult them).
* **Detections** of the evaluated class whose projected 2D box is shorter than the difficulty's minimum height are
  ignored (they neither count as true nor false positives).
* **Matching** per frame, ground truths in order: the still unassigned detection with the largest IoU above the
  class threshold (strictly greater) wins, preferring detections that are not ignored. Score thresholds are taken
  from the true positives' scores at 41 evenly spaced recall positions; precision is made monotone and
  AP_R40 is the mean of the precision at recalls 1/40 … 40/40, in percent.

The per-threshold passes are vectorised over (thresholds × frames × detections) with NumPy; only the loop over
ground-truth slots (the greedy order KITTI defines) stays in Python.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trainwell.tasks.detection3d.boxes import iou_3d, iou_bev

CLASSES = ("Car", "Pedestrian", "Cyclist")
DIFFICULTIES = ("easy", "moderate", "hard")
MIN_HEIGHT_PX = (40.0, 25.0, 25.0)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
MIN_OVERLAP = {"Car": (0.7, 0.5), "Pedestrian": (0.5, 0.25), "Cyclist": (0.5, 0.25)}
"""KITTI's IoU thresholds per class: (strict, loose), the same for BEV and 3D."""
NEIGHBOUR = {"Car": "Van", "Pedestrian": "Person_sitting"}
NUM_SAMPLE_PTS = 41
RECALL_IOUS = (0.3, 0.5, 0.7)


@dataclass
class FrameLabels:
    """Ground truth of one frame (LiDAR frame boxes).

    Attributes:
        names: ``G`` class names (``Car``, ``Van``, ``DontCare`` …).
        boxes: ``(G, 7)`` boxes (x, y, z, dx, dy, dz, heading), metres / radians.
        height_px: ``(G,)`` height of the 2D image box in pixels.
        truncation: ``(G,)`` in [0, 1].
        occlusion: ``(G,)`` KITTI occlusion level 0 (visible) … 3 (unknown).
    """

    names: Sequence[str]
    boxes: np.ndarray
    height_px: np.ndarray
    truncation: np.ndarray
    occlusion: np.ndarray


@dataclass
class FrameDetections:
    """Detections of one frame: ``names`` (D,), ``boxes`` (D, 7), ``scores`` (D,), ``height_px`` (D,) 2D heights."""

    names: Sequence[str]
    boxes: np.ndarray
    scores: np.ndarray
    height_px: np.ndarray


def ignore_flags(
    gt: FrameLabels, det: FrameDetections, cls: str, difficulty: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """KITTI's ``clean_data``: ``(gt_flags (G,), det_flags (D,), num_valid_gt)``.

    Flags: 0 = counts, 1 = ignored (neither a miss nor a false positive), -1 = another class (takes no part).
    """
    names = [n.lower() for n in gt.names]
    same = np.array([n == cls.lower() for n in names], dtype=bool)
    neighbour = np.array([n == NEIGHBOUR.get(cls, "").lower() for n in names], dtype=bool)
    too_hard = (
        (np.asarray(gt.occlusion) > MAX_OCCLUSION[difficulty])
        | (np.asarray(gt.truncation) > MAX_TRUNCATION[difficulty])
        | (np.asarray(gt.height_px) <= MIN_HEIGHT_PX[difficulty])
    )
    gt_flags = np.full(len(names), -1, dtype=np.int8)
    gt_flags[neighbour | (same & too_hard)] = 1
    gt_flags[same & ~too_hard] = 0
    det_same = np.array([n.lower() == cls.lower() for n in det.names], dtype=bool)
    det_flags = np.where(det_same, 0, -1).astype(np.int8)
    det_flags[np.asarray(det.height_px) < MIN_HEIGHT_PX[difficulty]] = 1  # before the class test, as KITTI
    return gt_flags, det_flags, int((gt_flags == 0).sum())


@dataclass
class _Padded:
    """One class and difficulty, all frames padded: overlaps (F, Dm, Gm), flags and scores; -1 flags pad."""

    overlaps: np.ndarray
    gt_flags: np.ndarray
    det_flags: np.ndarray
    scores: np.ndarray
    num_valid_gt: int


def _pad(per_frame: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], num_valid_gt: int) -> _Padded:
    frames = len(per_frame)
    max_d = max([len(s) for _, _, _, s in per_frame] + [1])
    max_g = max([len(g) for _, g, _, _ in per_frame] + [1])
    overlaps = np.zeros((frames, max_d, max_g))
    gt_flags = np.full((frames, max_g), -1, dtype=np.int8)
    det_flags = np.full((frames, max_d), -1, dtype=np.int8)
    scores = np.full((frames, max_d), -np.inf)
    for f, (ov, gf, df, sc) in enumerate(per_frame):
        overlaps[f, : ov.shape[0], : ov.shape[1]] = ov
        gt_flags[f, : len(gf)] = gf
        det_flags[f, : len(df)] = df
        scores[f, : len(sc)] = sc
    return _Padded(overlaps, gt_flags, det_flags, scores, num_valid_gt)


def _tp_scores(p: _Padded, min_overlap: float) -> np.ndarray:
    """First pass (no score threshold): scores of the highest-scoring detection matched to each counted GT."""
    frames = np.arange(p.overlaps.shape[0])
    assigned = np.zeros(p.det_flags.shape, dtype=bool)
    out: list[np.ndarray] = []
    for g in range(p.gt_flags.shape[1]):
        cand = ~assigned & (p.det_flags != -1) & (p.overlaps[:, :, g] > min_overlap) & (p.gt_flags[:, g : g + 1] != -1)
        score = np.where(cand, p.scores, -np.inf)
        best = score.argmax(1)
        found = cand[frames, best]
        assigned[frames[found], best[found]] = True
        is_tp = found & (p.gt_flags[:, g] == 0) & (p.det_flags[frames, best] == 0)
        out.append(p.scores[frames[is_tp], best[is_tp]])
    return np.concatenate(out) if out else np.zeros(0)


def score_thresholds(tp_scores: np.ndarray, num_gt: int, num_sample_pts: int = NUM_SAMPLE_PTS) -> np.ndarray:
    """KITTI's ``get_thresholds``: the scores at which recall passes each of ``num_sample_pts`` positions."""
    scores = np.sort(tp_scores)[::-1]
    thresholds: list[float] = []
    current = 0.0
    for i, score in enumerate(scores):
        left = (i + 1) / num_gt
        right = (i + 2) / num_gt if i < len(scores) - 1 else left
        # Skip a score when the next one lands closer to the current recall position.
        if right - current < current - left and i < len(scores) - 1:
            continue
        thresholds.append(float(score))
        current += 1.0 / (num_sample_pts - 1.0)
    return np.array(thresholds)


def _counts(p: _Padded, min_overlap: float, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Second pass, every threshold at once: ``(tp, fp, fn)`` each ``(T,)`` summed over frames."""
    num_t = len(thresholds)
    shape = (num_t, *p.det_flags.shape)
    t_idx, f_idx = np.meshgrid(np.arange(num_t), np.arange(p.det_flags.shape[0]), indexing="ij")
    active = (p.scores[None] >= thresholds[:, None, None]) & (p.det_flags[None] != -1)
    assigned = np.zeros(shape, dtype=bool)
    tp = np.zeros(num_t, dtype=np.int64)
    fn = np.zeros(num_t, dtype=np.int64)
    for g in range(p.gt_flags.shape[1]):
        gflag = p.gt_flags[None, :, g]  # (1, F)
        over = p.overlaps[None, :, :, g]  # (1, F, D)
        cand = active & ~assigned & (over > min_overlap) & (gflag[..., None] != -1)
        valid = cand & (p.det_flags[None] == 0)
        # Prefer a counted detection with the largest IoU (first on ties); else the first ignored one.
        best_valid = np.where(valid, over, -1.0).argmax(-1)
        best_ignored = cand.argmax(-1)
        has_valid = valid.any(-1)
        found = cand.any(-1)
        best = np.where(has_valid, best_valid, best_ignored)
        fn += (~found & (gflag == 0)).sum(-1)
        tp += (found & has_valid & (gflag == 0)).sum(-1)
        assigned[t_idx[found], f_idx[found], best[found]] = True
    fp = (active & ~assigned & (p.det_flags[None] == 0)).sum((1, 2))
    return tp, fp, fn


def average_precision_r40(p: _Padded, min_overlap: float) -> float:
    """AP_R40 (percent) of one class / difficulty / IoU threshold; 0 when no ground truth counts."""
    if p.num_valid_gt == 0:
        return 0.0
    thresholds = score_thresholds(_tp_scores(p, min_overlap), p.num_valid_gt)
    if len(thresholds) == 0:
        return 0.0
    tp, fp, _ = _counts(p, min_overlap, thresholds)
    precision = np.zeros(NUM_SAMPLE_PTS)
    precision[: len(thresholds)] = tp / np.maximum(tp + fp, 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # precision[i] = max(precision[i:])
    return float(precision[1:].sum() / (NUM_SAMPLE_PTS - 1) * 100.0)


def _overlaps(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return iou_bev if kind == "bev" else iou_3d


def kitti_eval(
    labels: Sequence[FrameLabels], detections: Sequence[FrameDetections], classes: Sequence[str] = CLASSES
) -> dict[str, float]:
    """AP_R40 (percent) per class, difficulty, BEV/3D and KITTI IoU threshold, plus class means.

    Keys: ``kitti/<Class>_<bev|3d>_<difficulty>_R40_<iou×100>`` (e.g. ``kitti/Car_bev_easy_R40_50``; grouped
    under ``kitti/`` so that log lines leave them out), the headline values again without the prefix (moderate:
    ``Car_bev_moderate_R40_50``, ``<Class>_3d_moderate_R40_<strict>``), and ``mAP_<bev|3d>_moderate_R40`` (the
    mean over classes at each class's strict threshold).
    """
    if len(labels) != len(detections):
        raise ValueError(f"kitti_eval: {len(labels)} frames of labels but {len(detections)} of detections.")
    out: dict[str, float] = {}
    for kind in ("bev", "3d"):
        iou_fn = _overlaps(kind)
        for cls in classes:
            keep = [
                (
                    np.array([n.lower() in (cls.lower(), NEIGHBOUR.get(cls, "").lower()) for n in gt.names], bool),
                    np.array([n.lower() == cls.lower() for n in det.names], bool),
                )
                for gt, det in zip(labels, detections, strict=True)
            ]
            # Only this class's detections and this class's (or neighbour's) labels can take part: drop the rest
            # before computing IoUs (their flags would be -1).
            ious = [
                iou_fn(torch.as_tensor(det.boxes[kd]).reshape(-1, 7), torch.as_tensor(gt.boxes[kg]).reshape(-1, 7))
                .cpu()
                .numpy()
                for gt, det, (kg, kd) in zip(labels, detections, keep, strict=True)
            ]
            for d, difficulty in enumerate(DIFFICULTIES):
                per_frame = []
                num_valid = 0
                for gt, det, (kg, kd), ov in zip(labels, detections, keep, ious, strict=True):
                    gflags, dflags, valid = ignore_flags(gt, det, cls, d)
                    num_valid += valid
                    per_frame.append((ov, gflags[kg], dflags[kd], np.asarray(det.scores)[kd]))
                padded = _pad(per_frame, num_valid)
                for iou in MIN_OVERLAP[cls]:
                    out[f"kitti/{cls}_{kind}_{difficulty}_R40_{round(iou * 100)}"] = average_precision_r40(padded, iou)
        strict = [out[f"kitti/{c}_{kind}_moderate_R40_{round(MIN_OVERLAP[c][0] * 100)}"] for c in classes]
        out[f"mAP_{kind}_moderate_R40"] = float(np.mean(strict)) if strict else 0.0
    for name in headline_metrics(classes):
        out[name] = out[f"kitti/{name}"]
    return out


def headline_metrics(classes: Sequence[str] = CLASSES) -> list[str]:
    """The AP names logged without the ``kitti/`` prefix: every class at its strict 3D threshold (moderate), and
    Car in BEV at 0.5 (the demo's target)."""
    names = [f"{c}_3d_moderate_R40_{round(MIN_OVERLAP[c][0] * 100)}" for c in classes]
    return (["Car_bev_moderate_R40_50"] if "Car" in classes else []) + names


def recall_at_iou(
    gt_boxes: Sequence[np.ndarray], det_boxes: Sequence[np.ndarray], thresholds: Sequence[float] = RECALL_IOUS
) -> dict[str, float]:
    """OpenPCDet's ``recall_rcnn_<t>``: fraction of GT boxes (all classes) whose best 3D IoU with a detection > t."""
    hits = np.zeros(len(thresholds))
    total = 0
    for gt, det in zip(gt_boxes, det_boxes, strict=True):
        total += len(gt)
        if len(gt) == 0 or len(det) == 0:
            continue
        best = iou_3d(torch.as_tensor(det).reshape(-1, 7), torch.as_tensor(gt).reshape(-1, 7)).max(0).values.numpy()
        hits += np.array([(best > t).sum() for t in thresholds])
    return {f"recall_3d_{round(t * 100)}": float(h / max(total, 1)) for t, h in zip(thresholds, hits, strict=True)}
