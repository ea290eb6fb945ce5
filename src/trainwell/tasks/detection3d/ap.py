"""KITTI's matching and average precision, as OpenPCDet's ``kitti_object_eval_python`` (``eval.py``) computes them.

The rules of KITTI's object devkit, quirks included (``clean_data`` and ``compute_statistics_jit``):

* **Difficulty** (Easy / Moderate / Hard): a ground truth counts when its 2D box is taller than 40 / 25 / 25 px
  (strictly), its occlusion level is at most 0 / 1 / 2 and its truncation at most 0.15 / 0.3 / 0.5. A ground truth
  of the evaluated class that fails these is *ignored* (not a miss; a detection on it is not a false positive).
* **Neighbouring classes**: a ``Van`` is ignored when evaluating ``Car``, a ``Person_sitting`` when evaluating
  ``Pedestrian``. Other classes play no part.
* **Detections** whose 2D box is shorter than the difficulty's minimum height are *ignored detections* — of any
  class, as the devkit tests the height before the class: they take part in matching (a ground truth they match
  is neither found nor missed) but are never true or false positives.
* **DontCare** regions (2D metric only, as OpenPCDet's code): an unmatched detection whose 2D box lies more than the
  class's 2D threshold inside a ``DontCare`` box (intersection over the detection's area) is not a false positive.
* **Matching** per frame, ground truths in order. First pass (no score threshold): the highest-scoring unassigned
  detection above the IoU threshold (strictly greater). Second pass, per score threshold: the counted detection
  with the largest IoU (first on ties), else the first ignored one. Score thresholds are the true positives' scores
  at 41 recall positions; precision (and the orientation similarity) is made monotone; AP_R40 is the mean over
  recalls 1/40 … 40/40 and AP_R11 over positions 0, 4, …, 40 (recall 0, 0.1, …, 1), in percent.

The per-threshold passes are vectorised over (thresholds × frames × detections) with NumPy; only the loop over
ground-truth slots (the greedy order KITTI defines) stays in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trainwell.tasks.detection3d.boxes import iou_3d

CLASSES = ("Car", "Pedestrian", "Cyclist")
DIFFICULTIES = ("easy", "moderate", "hard")
MIN_HEIGHT_PX = (40.0, 25.0, 25.0)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
NEIGHBOUR = {"Car": "Van", "Pedestrian": "Person_sitting"}
DONT_CARE = "DontCare"
"""Compared case-sensitively, as the devkit does."""
NUM_SAMPLE_PTS = 41
RECALL_IOUS = (0.3, 0.5, 0.7)


@dataclass
class FrameLabels:
    """Ground truth of one frame.

    Attributes:
        names: ``G`` class names (``Car``, ``Van``, ``DontCare`` …).
        boxes: ``(G, 7)`` boxes (x, y, z, dx, dy, dz, heading), metres / radians, in the frame the evaluation compares
            in (the rectified camera frame on LiDAR axes, :func:`kitti.rect_boxes`; the LiDAR frame of the
            synthetic scenes is the same).
        bbox: ``(G, 4)`` 2D image box (left, top, right, bottom), pixels.
        alpha: ``(G,)`` observation angle, radians.
        truncation: ``(G,)`` in [0, 1].
        occlusion: ``(G,)`` KITTI occlusion level 0 (visible) … 3 (unknown).
    """

    names: Sequence[str]
    boxes: np.ndarray
    bbox: np.ndarray
    alpha: np.ndarray
    truncation: np.ndarray
    occlusion: np.ndarray


@dataclass
class FrameDetections:
    """Detections of one frame: ``names`` (D,), ``boxes`` (D, 7) (same frame as the labels'), ``scores`` (D,),
    ``bbox`` (D, 4) 2D boxes in pixels, ``alpha`` (D,) observation angles."""

    names: Sequence[str]
    boxes: np.ndarray
    scores: np.ndarray
    bbox: np.ndarray
    alpha: np.ndarray


def box_height_px(bbox: np.ndarray) -> np.ndarray:
    """Absolute height of ``(N, 4)`` 2D boxes (as the devkit measures detections)."""
    boxes = np.asarray(bbox, dtype=np.float64).reshape(-1, 4)
    return np.abs(boxes[:, 3] - boxes[:, 1])


def ignore_flags(
    gt: FrameLabels, det: FrameDetections, cls: str, difficulty: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """KITTI's ``clean_data``: ``(gt_flags (G,), det_flags (D,), num_valid_gt)``.

    Flags: 0 = counts, 1 = ignored (takes part in matching, neither a miss nor a true/false positive), -1 = takes no
    part.
    """
    names = [n.lower() for n in gt.names]
    gt_bbox = np.asarray(gt.bbox, dtype=np.float64).reshape(-1, 4)
    same = np.array([n == cls.lower() for n in names], dtype=bool)
    neighbour = np.array([n == NEIGHBOUR.get(cls, "").lower() for n in names], dtype=bool)
    too_hard = (
        (np.asarray(gt.occlusion) > MAX_OCCLUSION[difficulty])
        | (np.asarray(gt.truncation) > MAX_TRUNCATION[difficulty])
        | (gt_bbox[:, 3] - gt_bbox[:, 1] <= MIN_HEIGHT_PX[difficulty])  # signed for labels, as the devkit
    )
    gt_flags = np.full(len(names), -1, dtype=np.int8)
    gt_flags[neighbour | (same & too_hard)] = 1
    gt_flags[same & ~too_hard] = 0
    det_same = np.array([n.lower() == cls.lower() for n in det.names], dtype=bool)
    det_flags = np.where(det_same, 0, -1).astype(np.int8)
    det_flags[box_height_px(det.bbox) < MIN_HEIGHT_PX[difficulty]] = 1  # any class: the devkit tests height first
    return gt_flags, det_flags, int((gt_flags == 0).sum())


def image_overlaps(boxes: np.ndarray, query: np.ndarray, over_first_area: bool = False) -> np.ndarray:
    """2D overlap ``(N, K)`` of ``(N, 4)`` and ``(K, 4)`` boxes: IoU, or with ``over_first_area`` the intersection
    over the first box's area (the devkit's ``image_box_overlap`` criterion -1 and 0; no +1 pixel)."""
    a, b = np.asarray(boxes, np.float64).reshape(-1, 1, 4), np.asarray(query, np.float64).reshape(1, -1, 4)
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a if over_first_area else area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


@dataclass
class _Padded:
    """One class and difficulty, all frames padded: overlaps (F, Dm, Gm), flags, scores, alphas; -1 flags pad.

    ``in_dont_care`` (F, Dm): the detection lies in a DontCare region above the 2D threshold (2D metric only).
    """

    overlaps: np.ndarray
    gt_flags: np.ndarray
    det_flags: np.ndarray
    scores: np.ndarray
    gt_alpha: np.ndarray
    det_alpha: np.ndarray
    in_dont_care: np.ndarray
    num_valid_gt: int


@dataclass
class FramePart:
    """One frame's share of a class / difficulty: the overlaps (D, G) of the taking-part detections and labels, their
    flags, the detections' scores and alphas, the labels' alphas and the detections' DontCare hits."""

    overlaps: np.ndarray
    gt_flags: np.ndarray
    det_flags: np.ndarray
    scores: np.ndarray
    gt_alpha: np.ndarray
    det_alpha: np.ndarray
    in_dont_care: np.ndarray


def pad_frames(parts: list[FramePart], num_valid_gt: int) -> _Padded:
    """Stack frames of different sizes into padded arrays (padding: flag -1, score -inf)."""
    frames = len(parts)
    max_d = max([len(p.scores) for p in parts] + [1])
    max_g = max([len(p.gt_flags) for p in parts] + [1])
    out = _Padded(
        np.zeros((frames, max_d, max_g)),
        np.full((frames, max_g), -1, dtype=np.int8),
        np.full((frames, max_d), -1, dtype=np.int8),
        np.full((frames, max_d), -np.inf),
        np.zeros((frames, max_g)),
        np.zeros((frames, max_d)),
        np.zeros((frames, max_d), dtype=bool),
        num_valid_gt,
    )
    for f, p in enumerate(parts):
        d, g = len(p.scores), len(p.gt_flags)
        out.overlaps[f, :d, :g] = p.overlaps.reshape(d, g)
        out.gt_flags[f, :g], out.gt_alpha[f, :g] = p.gt_flags, p.gt_alpha
        out.det_flags[f, :d], out.scores[f, :d], out.det_alpha[f, :d] = p.det_flags, p.scores, p.det_alpha
        out.in_dont_care[f, :d] = p.in_dont_care
    return out


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


def _counts(p: _Padded, min_overlap: float, thresholds: np.ndarray) -> tuple[np.ndarray, ...]:
    """Second pass, every threshold at once: ``(tp, fp, fn, similarity)`` each ``(T,)`` summed over frames.

    ``similarity`` sums ``(1 + cos(Δalpha)) / 2`` over the true positives (KITTI's orientation score).
    """
    num_t = len(thresholds)
    shape = (num_t, *p.det_flags.shape)
    t_idx, f_idx = np.meshgrid(np.arange(num_t), np.arange(p.det_flags.shape[0]), indexing="ij")
    active = (p.scores[None] >= thresholds[:, None, None]) & (p.det_flags[None] != -1)
    assigned = np.zeros(shape, dtype=bool)
    tp = np.zeros(num_t, dtype=np.int64)
    fn = np.zeros(num_t, dtype=np.int64)
    similarity = np.zeros(num_t)
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
        is_tp = found & has_valid & (gflag == 0)
        tp += is_tp.sum(-1)
        delta = p.gt_alpha[None, :, g] - p.det_alpha[f_idx, best]  # (T, F)
        similarity += np.where(is_tp, (1.0 + np.cos(delta)) / 2.0, 0.0).sum(-1)
        assigned[t_idx[found], f_idx[found], best[found]] = True
    unmatched = active & ~assigned & (p.det_flags[None] == 0)
    fp = (unmatched & ~p.in_dont_care[None]).sum((1, 2))  # DontCare regions absorb unmatched detections
    return tp, fp, fn, similarity


def precision_curves(p: _Padded, min_overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """Monotone precision and orientation-similarity curves ``(41,)`` each (zeros past the last threshold)."""
    precision, orientation = np.zeros(NUM_SAMPLE_PTS), np.zeros(NUM_SAMPLE_PTS)
    if p.num_valid_gt == 0:
        return precision, orientation
    thresholds = score_thresholds(_tp_scores(p, min_overlap), p.num_valid_gt)
    if len(thresholds) == 0:
        return precision, orientation
    tp, fp, _, similarity = _counts(p, min_overlap, thresholds)
    precision[: len(thresholds)] = tp / np.maximum(tp + fp, 1)
    orientation[: len(thresholds)] = similarity / np.maximum(tp + fp, 1)
    # curve[i] = max(curve[i:])
    return np.maximum.accumulate(precision[::-1])[::-1], np.maximum.accumulate(orientation[::-1])[::-1]


def ap_r40(curve: np.ndarray) -> float:
    """Mean of a monotone curve at recalls 1/40 … 40/40, in percent (the devkit's ``get_mAP_R40``)."""
    return float(curve[1:].sum() / (NUM_SAMPLE_PTS - 1) * 100.0)


def ap_r11(curve: np.ndarray) -> float:
    """Mean of a monotone curve at positions 0, 4, …, 40 (recall 0, 0.1, …, 1), in percent (``get_mAP``)."""
    return float(curve[0::4].sum() / 11 * 100.0)


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
