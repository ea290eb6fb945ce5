"""KITTI's devkit rules (OpenPCDet's ``kitti_object_eval_python``), each on a small constructed case with a
hand-computed answer, and the whole table against a plain re-expression of the devkit written here.

The reference below re-states ``clean_data``, ``compute_statistics_jit``, ``get_thresholds`` and ``eval_class`` one
frame and one detection at a time, in the camera frame the devkit uses (its own polygon-clipping IoU; it imports
nothing of trainwell's evaluation), from KITTI label lines.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainwell.tasks.detection3d import kitti
from trainwell.tasks.detection3d.kitti import KittiObject
from trainwell.tasks.detection3d.table import kitti_eval

# ---- constructed cases --------------------------------------------------------------------------------------------
# One frame, 80 cars in a grid (camera frame: x right, z forward), 2D boxes side by side 60 px apart so that 2D boxes of
# different cars never overlap. With 80 counted cars found in score order and nothing else, KITTI keeps 41 score
# thresholds and every precision is 1: AP 100. A false positive scored just above each true positive makes every
# precision 1/2: AP 50. Half the cars found: recall stops at 0.5, 21 thresholds, AP_R40 = 20/40 = 50 and
# AP_R11 = 6/11 (positions 0, 4, …, 20). 40 counted cars all found: 40 thresholds, AP_R40 = 39/40, AP_R11 = 10/11.

N = 80
HWL_CAR = [1.5, 1.6, 3.9]


def _obj(name: str, i: int, score: float | None = None, **kw: object) -> KittiObject:
    """Object ``i`` of the grid (or a shifted copy via ``dz``): 60 px tall 2D box at column ``i``."""
    height = float(kw.pop("height_px", 60.0))  # type: ignore[arg-type]
    top = float(kw.pop("top_px", 100.0))  # type: ignore[arg-type]
    dz = float(kw.pop("dz", 0.0))  # type: ignore[arg-type]
    alpha = float(kw.pop("alpha", 0.0))  # type: ignore[arg-type]
    location = [-20.0 + 4.0 * (i % 10), 1.7, 10.0 + 6.0 * (i // 10) + dz]
    return KittiObject(
        name,
        truncated=float(kw.pop("truncated", 0.0)),  # type: ignore[arg-type]
        occluded=int(kw.pop("occluded", 0)),  # type: ignore[arg-type]
        alpha=alpha,
        bbox=[60.0 * i, top, 60.0 * i + 50.0, top + height],
        dimensions_hwl=list(HWL_CAR),
        location=location,
        rotation_y=0.3,
        score=score,
    )


def _score(i: int) -> float:
    return 0.9 - i * 0.005  # distinct, falling with i


def _eval(gts: list[KittiObject], dets: list[KittiObject], classes: tuple[str, ...] = ("Car",)) -> dict[str, float]:
    return kitti_eval([kitti.labels_from_objects(gts)], [kitti.frame_detections(dets)], classes=classes)


def _ap(m: dict[str, float], kind: str, diff: str, rule: str = "R40", cls: str = "Car", iou: int = 70) -> float:
    return m[f"kitti/{cls}_{kind}_{diff}_{rule}_{iou}"]


def test_perfect_half_and_interleaved_cases_give_the_hand_computed_values() -> None:
    cars = [_obj("Car", i) for i in range(N)]
    found = [_obj("Car", i, _score(i)) for i in range(N)]
    perfect = _eval(cars, found)
    half = _eval(cars, found[:40])
    far = [_obj("Car", i, _score(i) + 1e-4, dz=200.0, top_px=2000.0) for i in range(N)]  # nowhere near a car
    interleaved = _eval(cars, found + far)
    for kind in ("bbox", "bev", "3d", "aos"):
        for diff in ("easy", "moderate", "hard"):
            assert _ap(perfect, kind, diff) == pytest.approx(100.0)
            assert _ap(perfect, kind, diff, "R11") == pytest.approx(100.0)
            assert _ap(half, kind, diff) == pytest.approx(50.0)
            assert _ap(half, kind, diff, "R11") == pytest.approx(600 / 11)
            assert _ap(interleaved, kind, diff) == pytest.approx(50.0)


def test_a_detection_below_the_minimum_height_is_ignored_not_a_false_positive() -> None:
    cars = [_obj("Car", i) for i in range(N)]
    found = [_obj("Car", i, _score(i)) for i in range(N)]
    # 30 px tall Car detections far from every car, each just above a true positive: ignored at Easy (< 40 px),
    # false positives at Moderate and Hard (>= 25 px).
    short = [_obj("Car", i, _score(i) + 1e-4, dz=200.0, top_px=2000.0, height_px=30.0) for i in range(N)]
    m = _eval(cars, found + short)
    for kind in ("bbox", "bev", "3d"):
        assert _ap(m, kind, "easy") == pytest.approx(100.0)
        assert _ap(m, kind, "moderate") == pytest.approx(50.0)
        assert _ap(m, kind, "hard") == pytest.approx(50.0)


def test_a_short_detection_of_another_class_takes_part_in_matching() -> None:
    cars = [_obj("Car", i) for i in range(N)]
    found = [_obj("Car", i, _score(i)) for i in range(N)]
    # A Pedestrian detection exactly on every car, scored above it. 20 px tall: an ignored detection at every
    # difficulty (the devkit tests the height before the class), so the score-threshold pass gives every car to it
    # (highest score wins, and an ignored match is no true positive): no thresholds, AP 0. 30 px tall: ignored at
    # Easy only (AP 0 there); at Moderate/Hard another class's detection takes no part (AP 100).
    for height, easy, moderate in ((20.0, 0.0, 0.0), (30.0, 0.0, 100.0)):
        peds = [_obj("Pedestrian", i, _score(i) + 1e-4, height_px=height) for i in range(N)]
        m = _eval(cars, found + peds)
        for kind in ("bev", "3d"):
            assert _ap(m, kind, "easy") == pytest.approx(easy)
            assert _ap(m, kind, "moderate") == pytest.approx(moderate)
            assert _ap(m, kind, "hard") == pytest.approx(moderate)


def test_a_van_next_to_a_car_is_ignored_a_truck_is_not() -> None:
    cars = [_obj("Car", i) for i in range(N)]
    found = [_obj("Car", i, _score(i)) for i in range(N)]
    # A second object behind every car (10 m further, its own 2D column), detected as a Car just above each true
    # positive: a Van is Car's neighbour (matched, ignored: AP 100); a Truck takes no part (an FP: AP 50).
    for other, expected in (("Van", 100.0), ("Truck", 50.0)):
        extra = [_obj(other, i, dz=200.0, top_px=2000.0) for i in range(N)]
        on_extra = [_obj("Car", i, _score(i) + 1e-4, dz=200.0, top_px=2000.0) for i in range(N)]
        m = _eval(cars + extra, found + on_extra)
        for kind in ("bbox", "bev", "3d"):
            for diff in ("easy", "moderate", "hard"):
                assert _ap(m, kind, diff) == pytest.approx(expected), (other, kind, diff)
    # Person_sitting is Pedestrian's neighbour the same way; their GTs are never counted (still 80 pedestrians).
    peds = [_obj("Pedestrian", i) for i in range(N)]
    found_p = [_obj("Pedestrian", i, _score(i)) for i in range(N)]
    sitting = [_obj("Person_sitting", i, dz=200.0, top_px=2000.0) for i in range(N)]
    on_sitting = [_obj("Pedestrian", i, _score(i) + 1e-4, dz=200.0, top_px=2000.0) for i in range(N)]
    m = _eval(peds + sitting, found_p + on_sitting, classes=("Pedestrian",))
    assert _ap(m, "3d", "moderate", cls="Pedestrian", iou=50) == pytest.approx(100.0)


def test_a_dont_care_region_absorbs_detections_in_2d_only() -> None:
    cars = [_obj("Car", i) for i in range(N)]
    found = [_obj("Car", i, _score(i)) for i in range(N)]
    dont_care = [_obj("DontCare", i, top_px=2000.0, height_px=100.0) for i in range(N)]
    # A Car detection inside each DontCare region (its 2D box wholly inside, far from every car in 3D).
    inside = [_obj("Car", i, _score(i) + 1e-4, dz=200.0, top_px=2020.0) for i in range(N)]
    m = _eval(cars + dont_care, found + inside)
    for diff in ("easy", "moderate", "hard"):
        assert _ap(m, "bbox", diff) == pytest.approx(100.0)  # not false positives in 2D
        assert _ap(m, "bev", diff) == pytest.approx(50.0)  # OpenPCDet consults DontCare for the 2D metric only
        assert _ap(m, "3d", diff) == pytest.approx(50.0)
    # Half inside (intersection over the detection's area 0.5 <= Car's 2D threshold 0.7): a false positive.
    half_in = [_obj("Car", i, _score(i) + 1e-4, dz=200.0, top_px=2070.0) for i in range(N)]
    assert _ap(_eval(cars + dont_care, found + half_in), "bbox", "moderate") == pytest.approx(50.0)


def test_occlusion_and_truncation_set_the_difficulty() -> None:
    # 40 visible cars and 40 with occlusion level 2, only the visible ones found: Easy and Moderate ignore the
    # occluded (40 counted, all found: AP_R40 39/40, AP_R11 10/11); Hard counts them (half found: 50, 6/11).
    for key, value in (("occluded", 2), ("truncated", 0.4)):
        gts = [_obj("Car", i, **({key: value} if i % 2 else {})) for i in range(N)]
        dets = [_obj("Car", i, _score(i)) for i in range(0, N, 2)]
        m = _eval(gts, dets)
        for kind in ("bbox", "bev", "3d"):
            assert _ap(m, kind, "easy") == pytest.approx(97.5)
            assert _ap(m, kind, "moderate") == pytest.approx(97.5)
            assert _ap(m, kind, "easy", "R11") == pytest.approx(1000 / 11)
            assert _ap(m, kind, "hard") == pytest.approx(50.0)
            assert _ap(m, kind, "hard", "R11") == pytest.approx(600 / 11)


def test_aos_weighs_true_positives_by_orientation() -> None:
    cars = [_obj("Car", i) for i in range(N)]
    # Every car found, its alpha off by 90°: similarity (1 + cos 90°) / 2 = 1/2 per true positive.
    m = _eval(cars, [_obj("Car", i, _score(i), alpha=math.pi / 2) for i in range(N)])
    assert _ap(m, "bbox", "moderate") == pytest.approx(100.0)
    assert _ap(m, "aos", "moderate") == pytest.approx(50.0)
    assert m["Car_aos/moderate_R40"] == pytest.approx(50.0)


# ---- the devkit re-expressed ---------------------------------------------------------------------------------------

CLASS_IDS = {"Car": 0, "Pedestrian": 1, "Cyclist": 2}
# eval.py's overlap_0_7 / overlap_0_5: rows = metric (bbox, bev, 3d), columns = class (Car, Pedestrian, Cyclist).
OVERLAP_SETS = (
    np.array([[0.7, 0.5, 0.5], [0.7, 0.5, 0.5], [0.7, 0.5, 0.5]]),
    np.array([[0.7, 0.5, 0.5], [0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]),
)


def _footprint(o: KittiObject) -> list[tuple[float, float]]:
    """Corners on the camera's x-z plane, counter-clockwise, rotated by KITTI's roty(rotation_y)."""
    _, w, length = o.dimensions_hwl
    c, s = math.cos(o.rotation_y), math.sin(o.rotation_y)
    pts = [(length / 2, w / 2), (-length / 2, w / 2), (-length / 2, -w / 2), (length / 2, -w / 2)]
    out = [(o.location[0] + c * x + s * z, o.location[2] - s * x + c * z) for x, z in pts]
    return out if _signed_area(out) > 0 else out[::-1]


def _signed_area(p: list[tuple[float, float]]) -> float:
    """Shoelace formula: positive for counter-clockwise corners."""
    return 0.5 * sum(p[i - 1][0] * p[i][1] - p[i][0] * p[i - 1][1] for i in range(len(p)))


def _clip(subject: list[tuple[float, float]], clip: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sutherland–Hodgman: the part of convex ``subject`` inside convex counter-clockwise ``clip``."""
    out = subject
    for i in range(len(clip)):
        a, b = clip[i - 1], clip[i]
        inp, out = out, []

        def inside(p: tuple[float, float], a: tuple[float, float] = a, b: tuple[float, float] = b) -> bool:
            return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) >= 0

        for j in range(len(inp)):
            p, q = inp[j - 1], inp[j]
            if inside(q) != inside(p):
                # the crossing of segment p-q with the clip line a-b
                d = (q[0] - p[0], q[1] - p[1])
                e = (b[0] - a[0], b[1] - a[1])
                t = ((a[0] - p[0]) * e[1] - (a[1] - p[1]) * e[0]) / (d[0] * e[1] - d[1] * e[0])
                out.append((p[0] + t * d[0], p[1] + t * d[1]))
            if inside(q):
                out.append(q)
        if not out:
            return []
    return out


def _bev_inter(a: KittiObject, b: KittiObject) -> float:
    poly = _clip(_footprint(a), _footprint(b))
    return abs(_signed_area(poly)) if len(poly) >= 3 else 0.0


def _overlap(metric: int, dt: KittiObject, gt: KittiObject) -> float:
    if metric == 0:
        iw = min(dt.bbox[2], gt.bbox[2]) - max(dt.bbox[0], gt.bbox[0])
        ih = min(dt.bbox[3], gt.bbox[3]) - max(dt.bbox[1], gt.bbox[1])
        if iw <= 0 or ih <= 0:
            return 0.0
        area = (dt.bbox[2] - dt.bbox[0]) * (dt.bbox[3] - dt.bbox[1]) + (gt.bbox[2] - gt.bbox[0]) * (
            gt.bbox[3] - gt.bbox[1]
        )
        return iw * ih / (area - iw * ih)
    inter = _bev_inter(dt, gt)
    area_d = dt.dimensions_hwl[1] * dt.dimensions_hwl[2]
    area_g = gt.dimensions_hwl[1] * gt.dimensions_hwl[2]
    if metric == 1:
        return inter / (area_d + area_g - inter)
    # 3D: camera y points down; a box spans [y - h, y].
    iy = min(dt.location[1], gt.location[1]) - max(
        dt.location[1] - dt.dimensions_hwl[0], gt.location[1] - gt.dimensions_hwl[0]
    )
    if iy <= 0 or inter <= 0:
        return 0.0
    vol = inter * iy
    return vol / (area_d * dt.dimensions_hwl[0] + area_g * gt.dimensions_hwl[0] - vol)


def _clean(gts: list[KittiObject], dts: list[KittiObject], cls: str, diff: int) -> tuple:
    min_h, max_occ, max_trunc = (40, 25, 25)[diff], (0, 1, 2)[diff], (0.15, 0.3, 0.5)[diff]
    ig_gt, ig_dt, dc, num_valid = [], [], [], 0
    for g in gts:
        name = g.type.lower()
        if name == cls.lower():
            valid = 1
        elif (cls, name) in (("Pedestrian", "person_sitting"), ("Car", "van")):
            valid = 0
        else:
            valid = -1
        hard = g.occluded > max_occ or g.truncated > max_trunc or g.bbox[3] - g.bbox[1] <= min_h
        if valid == 1 and not hard:
            ig_gt.append(0)
            num_valid += 1
        elif valid == 0 or (hard and valid == 1):
            ig_gt.append(1)
        else:
            ig_gt.append(-1)
        if g.type == "DontCare":
            dc.append(g.bbox)
    for d in dts:
        if abs(d.bbox[3] - d.bbox[1]) < min_h:
            ig_dt.append(1)
        elif d.type.lower() == cls.lower():
            ig_dt.append(0)
        else:
            ig_dt.append(-1)
    return num_valid, ig_gt, ig_dt, dc


def _statistics(ov, gts, dts, ig_gt, ig_dt, dc, metric, min_ov, thresh, compute_fp):
    """One frame: (tp, fp, fn, similarity, tp scores) as ``compute_statistics_jit``."""
    n_d = len(dts)
    assigned = [False] * n_d
    below = [compute_fp and dts[j].score < thresh for j in range(n_d)]
    tp = fp = fn = 0
    scores, deltas = [], []
    for i in range(len(gts)):
        if ig_gt[i] == -1:
            continue
        best, found, max_ov, took_ignored = -1, False, 0.0, False
        best_score = -math.inf
        for j in range(n_d):
            if ig_dt[j] == -1 or assigned[j] or below[j]:
                continue
            o = ov[j][i]
            if not compute_fp:
                if o > min_ov and dts[j].score > best_score:
                    best, found, best_score = j, True, dts[j].score
            elif o > min_ov and (o > max_ov or took_ignored) and ig_dt[j] == 0:
                best, found, max_ov, took_ignored = j, True, o, False
            elif o > min_ov and not found and ig_dt[j] == 1:
                best, found, took_ignored = j, True, True
        if not found:
            fn += ig_gt[i] == 0
        elif ig_gt[i] == 1 or ig_dt[best] == 1:
            assigned[best] = True
        else:
            tp += 1
            scores.append(dts[best].score)
            deltas.append(gts[i].alpha - dts[best].alpha)
            assigned[best] = True
    similarity = 0.0
    if compute_fp:
        fp = sum(1 for j in range(n_d) if not assigned[j] and ig_dt[j] == 0 and not below[j])
        if metric == 0:
            for box in dc:
                for j in range(n_d):
                    if assigned[j] or ig_dt[j] != 0 or below[j]:
                        continue
                    d = dts[j].bbox
                    iw = min(d[2], box[2]) - max(d[0], box[0])
                    ih = min(d[3], box[3]) - max(d[1], box[1])
                    if iw > 0 and ih > 0 and iw * ih / ((d[2] - d[0]) * (d[3] - d[1])) > min_ov:
                        assigned[j] = True
                        fp -= 1
        similarity = sum((1 + math.cos(x)) / 2 for x in deltas) if tp > 0 or fp > 0 else -1
    return tp, fp, fn, similarity, scores


def _get_thresholds(scores: list[float], num_gt: int) -> list[float]:
    scores = sorted(scores, reverse=True)
    out, current = [], 0.0
    for i, s in enumerate(scores):
        left = (i + 1) / num_gt
        right = (i + 2) / num_gt if i < len(scores) - 1 else left
        if right - current < current - left and i < len(scores) - 1:
            continue
        out.append(s)
        current += 1 / 40
    return out


def _reference(frames: list[tuple[list[KittiObject], list[KittiObject]]]) -> dict[str, float]:
    out = {}
    for cls, c in CLASS_IDS.items():
        for metric, kind in enumerate(("bbox", "bev", "3d")):
            ovs = [[[_overlap(metric, d, g) for g in gts] for d in dts] for gts, dts in frames]
            for diff, diff_name in enumerate(("easy", "moderate", "hard")):
                cleaned = [_clean(gts, dts, cls, diff) for gts, dts in frames]
                num_valid = sum(x[0] for x in cleaned)
                for sets in OVERLAP_SETS:
                    min_ov = float(sets[metric, c])
                    scores: list[float] = []
                    for (gts, dts), ov, (_, ig_gt, ig_dt, dc) in zip(frames, ovs, cleaned, strict=True):
                        scores += _statistics(ov, gts, dts, ig_gt, ig_dt, dc, metric, min_ov, 0.0, False)[4]
                    thresholds = _get_thresholds(scores, num_valid) if num_valid else []
                    prec, aos = np.zeros(41), np.zeros(41)
                    for t, thresh in enumerate(thresholds):
                        tp = fp = 0
                        sim = 0.0
                        for (gts, dts), ov, (_, ig_gt, ig_dt, dc) in zip(frames, ovs, cleaned, strict=True):
                            a, b, _, s, _ = _statistics(ov, gts, dts, ig_gt, ig_dt, dc, metric, min_ov, thresh, True)
                            tp, fp, sim = tp + a, fp + b, sim + (s if s != -1 else 0.0)
                        prec[t] = tp / (tp + fp) if tp + fp else 0.0
                        aos[t] = sim / (tp + fp) if tp + fp else 0.0
                    prec = np.array([prec[i:].max() for i in range(41)])
                    aos = np.array([aos[i:].max() for i in range(41)])
                    iou = round(min_ov * 100)
                    for rule, value in (("R40", prec[1:].sum() / 40 * 100), ("R11", prec[0::4].sum() / 11 * 100)):
                        out[f"kitti/{cls}_{kind}_{diff_name}_{rule}_{iou}"] = value
                    if metric == 0:
                        out[f"kitti/{cls}_aos_{diff_name}_R40_{iou}"] = aos[1:].sum() / 40 * 100
                        out[f"kitti/{cls}_aos_{diff_name}_R11_{iou}"] = aos[0::4].sum() / 11 * 100
    return out


SIZES_HWL = {
    "Car": (1.5, 1.6, 3.9),
    "Van": (2.2, 1.9, 5.0),
    "Truck": (3.2, 2.5, 10.0),
    "Pedestrian": (1.7, 0.6, 0.8),
    "Person_sitting": (1.2, 0.6, 0.8),
    "Cyclist": (1.7, 0.6, 1.8),
}


def _random_frame(rng: np.random.Generator) -> tuple[list[KittiObject], list[KittiObject]]:
    names = ["Car", "Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Cyclist", "DontCare"]
    gts, dts = [], []
    for _ in range(int(rng.integers(0, 9))):
        name = str(rng.choice(names))
        left, top = rng.uniform(0, 1100), rng.uniform(0, 300)
        bbox = [left, top, left + rng.uniform(20, 150), top + rng.uniform(15, 90)]
        if name == "DontCare":  # as in KITTI's label files: a 2D region, no 3D box
            gts.append(KittiObject(name, -1, -1, -10, bbox, [-1, -1, -1], [-1000, -1000, -1000], -10))
            # and a detection or two in or near it
            for _ in range(int(rng.integers(0, 3))):
                shift = rng.normal(0, 15, 4)
                box = [bbox[0] + shift[0], bbox[1] + shift[1], bbox[2] + shift[2], bbox[3] + shift[3]]
                loc = [*rng.uniform([-15, 1.4, 5], [15, 1.8, 40])]
                dts.append(KittiObject("Car", -1, -1, rng.uniform(-3, 3), box, list(SIZES_HWL["Car"]), loc, 0.0))
                dts[-1].score = float(rng.uniform(0, 1))
            continue
        hwl = list(np.array(SIZES_HWL[name]) * rng.uniform(0.9, 1.1, 3))
        loc = list(rng.uniform([-15, 1.4, 5], [15, 1.8, 40]))
        ry, alpha = float(rng.uniform(-3, 3)), float(rng.uniform(-3, 3))
        trunc, occ = float(rng.choice([0.0, 0.1, 0.2, 0.4, 0.6])), int(rng.integers(0, 4))
        gts.append(KittiObject(name, trunc, occ, alpha, bbox, hwl, loc, ry))
        if rng.random() < 0.8:  # a detection near it, sometimes of another class, 2D box jittered
            dname = name if name in CLASS_IDS and rng.random() < 0.8 else str(rng.choice(list(CLASS_IDS)))
            j = rng.normal(0, [0.3, 0.05, 0.3])
            box = list(np.array(bbox) + rng.normal(0, 6, 4))
            dhwl = list(np.array(hwl) * rng.uniform(0.9, 1.1, 3))
            dts.append(KittiObject(dname, -1, -1, alpha + rng.normal(0, 0.5), box, dhwl, list(np.array(loc) + j), ry))
            dts[-1].rotation_y += float(rng.normal(0, 0.15))
            dts[-1].score = float(rng.uniform(0, 1))
    for _ in range(int(rng.integers(0, 3))):  # false positives
        left, top = rng.uniform(0, 1100), rng.uniform(0, 300)
        box = [left, top, left + rng.uniform(20, 150), top + rng.uniform(15, 90)]
        name = str(rng.choice(list(CLASS_IDS)))
        loc = list(rng.uniform([-15, 1.4, 5], [15, 1.8, 40]))
        dts.append(KittiObject(name, -1, -1, rng.uniform(-3, 3), box, list(SIZES_HWL[name]), loc, rng.uniform(-3, 3)))
        dts[-1].score = float(rng.uniform(0, 1))
    return gts, dts


def test_the_table_matches_the_devkit_re_expressed_on_random_scenes() -> None:
    rng = np.random.default_rng(7)
    frames = [_random_frame(rng) for _ in range(40)]
    ours = kitti_eval([kitti.labels_from_objects(g) for g, _ in frames], [kitti.frame_detections(d) for _, d in frames])
    ref = _reference(frames)
    assert set(ref) <= set(ours)
    nonzero = 0
    for name, value in ref.items():
        assert ours[name] == pytest.approx(value, abs=1e-9), name
        nonzero += value > 0
    assert nonzero > 0.6 * len(ref)
    # The DontCare and short-detection rules do change some numbers here (the comparison is not vacuous).
    no_dc = [([o for o in g if o.type != "DontCare"], d) for g, d in frames]
    assert any(abs(_reference(no_dc)[k] - ref[k]) > 1e-6 for k in ref if "_bbox_" in k)


def test_the_table_prints_as_openpcdet_prints_it() -> None:
    from trainwell.tasks.detection3d.table import result_string

    cars = [_obj("Car", i) for i in range(N)]
    text = result_string(_eval(cars, [_obj("Car", i, _score(i)) for i in range(40)]), classes=("Car",))
    # Half the cars found: AP_R11 6/11 = 54.5455, AP_R40 50 at every difficulty, in both IoU sets.
    r11, r40 = "54.5455, 54.5455, 54.5455", "50.0000, 50.0000, 50.0000"
    block = [
        "Car AP@{}:",
        f"bbox AP:{r11}",
        f"bev  AP:{r11}",
        f"3d   AP:{r11}",
        "aos  AP:54.55, 54.55, 54.55",
        "Car AP_R40@{}:",
        f"bbox AP:{r40}",
        f"bev  AP:{r40}",
        f"3d   AP:{r40}",
        "aos  AP:50.00, 50.00, 50.00",
    ]
    want = [line.format(s) for s in ("0.70, 0.70, 0.70", "0.70, 0.50, 0.50") for line in block]
    assert text.splitlines() == want
