"""KITTI's result table: ``bbox`` (2D), ``bev``, ``3d`` and ``aos`` AP per class and difficulty at R11 and R40.

The layout is OpenPCDet's ``get_official_eval_result``: two IoU sets per class (the devkit's ``overlap_0_7`` and
``overlap_0_5``; each a (bbox, bev, 3d) triple), AP at 11 and at 40 recall positions, and the result string it prints
(:func:`result_string`). Matching and AP arithmetic are in :mod:`ap`.

Metric names:

* ``kitti/<Class>_<bbox|bev|3d|aos>_<difficulty>_<R11|R40>_<iou×100>``: the whole table (``aos`` and ``bbox`` at the
  2D threshold); grouped under ``kitti/`` so that log lines leave them out.
* ``<Class>_<3d|bev|image|aos>/<difficulty>_R40``: OpenPCDet's ``ret_dict`` names (the first IoU set).
* Headline values (on the log line): ``Car_bev_moderate_R40_50``, ``<Class>_3d_moderate_R40_<strict 3D IoU>`` and
  ``mAP_<bev|3d>_moderate_R40`` (the class mean at the strict 3D/BEV IoU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from trainwell.tasks.detection3d.ap import (
    CLASSES,
    DIFFICULTIES,
    DONT_CARE,
    MIN_HEIGHT_PX,
    NEIGHBOUR,
    FrameDetections,
    FrameLabels,
    FramePart,
    ap_r11,
    ap_r40,
    box_height_px,
    ignore_flags,
    image_overlaps,
    pad_frames,
    precision_curves,
)
from trainwell.tasks.detection3d.boxes import iou_3d, iou_bev

KINDS = ("bbox", "bev", "3d")
OVERLAPS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "Car": ((0.7, 0.7, 0.7), (0.7, 0.5, 0.5)),
    "Pedestrian": ((0.5, 0.5, 0.5), (0.5, 0.25, 0.25)),
    "Cyclist": ((0.5, 0.5, 0.5), (0.5, 0.25, 0.25)),
}
"""The devkit's IoU thresholds per class: ``(overlap_0_7, overlap_0_5)``, each ``(bbox, bev, 3d)``."""
MIN_OVERLAP = {c: (sets[0][2], sets[1][2]) for c, sets in OVERLAPS.items()}
"""The BEV / 3D thresholds per class: (strict, loose)."""
RET_DICT_KIND = {"bbox": "image", "bev": "bev", "3d": "3d", "aos": "aos"}


def _thresholds(cls: str, kind: str) -> list[float]:
    """The distinct IoU thresholds of ``kind`` for ``cls`` over the two sets (bbox: one value per class)."""
    k = KINDS.index(kind)
    return sorted({s[k] for s in OVERLAPS[cls]}, reverse=True)


def _iou(kind: str, det: FrameDetections, gt: FrameLabels, d_idx: np.ndarray, g_idx: np.ndarray) -> np.ndarray:
    """Overlaps ``(D', G')`` of the selected detections and labels in one frame."""
    if kind == "bbox":
        return image_overlaps(np.asarray(det.bbox).reshape(-1, 4)[d_idx], np.asarray(gt.bbox).reshape(-1, 4)[g_idx])
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = iou_bev if kind == "bev" else iou_3d
    d = torch.as_tensor(np.asarray(det.boxes, dtype=np.float64).reshape(-1, 7)[d_idx])
    g = torch.as_tensor(np.asarray(gt.boxes, dtype=np.float64).reshape(-1, 7)[g_idx])
    return fn(d, g).cpu().numpy().reshape(len(d_idx), len(g_idx))


def _taking_part(gt: FrameLabels, det: FrameDetections, cls: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the labels and detections that can take part for ``cls`` at some difficulty: labels of the class
    or its neighbour, detections of the class or short enough to be ignored ones (the others are flagged -1)."""
    wanted = {cls.lower(), NEIGHBOUR.get(cls, "").lower()}
    g_idx = np.array([i for i, n in enumerate(gt.names) if n.lower() in wanted], dtype=np.int64)
    short = box_height_px(det.bbox) < max(MIN_HEIGHT_PX)
    d_idx = np.array([j for j, n in enumerate(det.names) if n.lower() == cls.lower() or short[j]], dtype=np.int64)
    return g_idx, d_idx


def _dont_care_hits(gt: FrameLabels, det: FrameDetections, d_idx: np.ndarray, min_overlap: float) -> np.ndarray:
    """Detections lying in a DontCare region: intersection over the detection's 2D area above ``min_overlap``."""
    dc = np.asarray(gt.bbox).reshape(-1, 4)[[n == DONT_CARE for n in gt.names]]
    if len(dc) == 0 or len(d_idx) == 0:
        return np.zeros(len(d_idx), dtype=bool)
    return (image_overlaps(np.asarray(det.bbox).reshape(-1, 4)[d_idx], dc, over_first_area=True) > min_overlap).any(1)


def _class_table(
    labels: Sequence[FrameLabels], detections: Sequence[FrameDetections], cls: str
) -> dict[tuple[str, int, float], tuple[np.ndarray, np.ndarray]]:
    """``(kind, difficulty, iou) -> (precision curve, orientation curve)`` of one class (aos with bbox)."""
    selected = [_taking_part(gt, det, cls) for gt, det in zip(labels, detections, strict=True)]
    out: dict[tuple[str, int, float], tuple[np.ndarray, np.ndarray]] = {}
    for kind in KINDS:
        overlaps = [_iou(kind, d, g, di, gi) for g, d, (gi, di) in zip(labels, detections, selected, strict=True)]
        for difficulty in range(len(DIFFICULTIES)):
            flags = [ignore_flags(g, d, cls, difficulty) for g, d in zip(labels, detections, strict=True)]
            num_valid = sum(f[2] for f in flags)
            for iou in _thresholds(cls, kind):
                parts = [
                    FramePart(
                        ov,
                        gf[gi],
                        df[di],
                        np.asarray(d.scores, dtype=np.float64)[di],
                        np.asarray(g.alpha, dtype=np.float64)[gi],
                        np.asarray(d.alpha, dtype=np.float64)[di],
                        _dont_care_hits(g, d, di, iou) if kind == "bbox" else np.zeros(len(di), dtype=bool),
                    )
                    for g, d, (gi, di), ov, (gf, df, _) in zip(
                        labels, detections, selected, overlaps, flags, strict=True
                    )
                ]
                out[(kind, difficulty, iou)] = precision_curves(pad_frames(parts, num_valid), iou)
    return out


def kitti_eval(
    labels: Sequence[FrameLabels], detections: Sequence[FrameDetections], classes: Sequence[str] = CLASSES
) -> dict[str, float]:
    """The whole KITTI table for ``classes`` (see the module docstring for the names), AP in percent."""
    if len(labels) != len(detections):
        raise ValueError(f"kitti_eval: {len(labels)} frames of labels but {len(detections)} of detections.")
    out: dict[str, float] = {}
    for cls in classes:
        for (kind, d, iou), (precision, orientation) in _class_table(labels, detections, cls).items():
            for rule, ap in (("R11", ap_r11), ("R40", ap_r40)):
                stem = f"{DIFFICULTIES[d]}_{rule}_{round(iou * 100)}"
                out[f"kitti/{cls}_{kind}_{stem}"] = ap(precision)
                if kind == "bbox":
                    out[f"kitti/{cls}_aos_{stem}"] = ap(orientation)
        strict = OVERLAPS[cls][0]
        for kind in (*KINDS, "aos"):
            iou = strict[0] if kind == "aos" else strict[KINDS.index(kind)]
            for diff in DIFFICULTIES:
                value = out[f"kitti/{cls}_{kind}_{diff}_R40_{round(iou * 100)}"]
                out[f"{cls}_{RET_DICT_KIND[kind]}/{diff}_R40"] = value
    for kind in ("bev", "3d"):
        strict_aps = [out[f"kitti/{c}_{kind}_moderate_R40_{round(MIN_OVERLAP[c][0] * 100)}"] for c in classes]
        out[f"mAP_{kind}_moderate_R40"] = float(np.mean(strict_aps)) if strict_aps else 0.0
    for name in headline_metrics(classes):
        out[name] = out[f"kitti/{name}"]
    return out


def headline_metrics(classes: Sequence[str] = CLASSES) -> list[str]:
    """The AP names logged without a group: every class at its strict 3D threshold (moderate), and Car in BEV at
    0.5 (the demo's target)."""
    names = [f"{c}_3d_moderate_R40_{round(MIN_OVERLAP[c][0] * 100)}" for c in classes]
    return (["Car_bev_moderate_R40_50"] if "Car" in classes else []) + names


def metric_names(classes: Sequence[str] = CLASSES) -> list[str]:
    """Every AP name :func:`kitti_eval` returns for ``classes``."""
    names: list[str] = []
    for cls in classes:
        for kind in (*KINDS, "aos"):
            for iou in _thresholds(cls, "bbox" if kind == "aos" else kind):
                stems = [f"{d}_{r}_{round(iou * 100)}" for d in DIFFICULTIES for r in ("R11", "R40")]
                names += [f"kitti/{cls}_{kind}_{stem}" for stem in stems]
            names += [f"{cls}_{RET_DICT_KIND[kind]}/{d}_R40" for d in DIFFICULTIES]
    return [*names, *headline_metrics(classes), "mAP_bev_moderate_R40", "mAP_3d_moderate_R40"]


def result_string(metrics: dict[str, float], classes: Sequence[str] = CLASSES) -> str:
    """The table as OpenPCDet's ``get_official_eval_result`` prints it (AP with 4 decimals, aos with 2)."""
    lines: list[str] = []
    for cls in classes:
        for triple in OVERLAPS[cls]:
            for rule, label in (("R11", "AP"), ("R40", "AP_R40")):
                lines.append(f"{cls} {label}@{triple[0]:.2f}, {triple[1]:.2f}, {triple[2]:.2f}:")
                for kind, head, iou, fmt in (
                    ("bbox", "bbox AP", triple[0], ".4f"),
                    ("bev", "bev  AP", triple[1], ".4f"),
                    ("3d", "3d   AP", triple[2], ".4f"),
                    ("aos", "aos  AP", triple[0], ".2f"),
                ):
                    values = [metrics[f"kitti/{cls}_{kind}_{d}_{rule}_{round(iou * 100)}"] for d in DIFFICULTIES]
                    lines.append(f"{head}:" + ", ".join(f"{v:{fmt}}" for v in values))
    return "".join(line + "\n" for line in lines)
