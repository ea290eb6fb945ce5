"""``trainwell predict`` input of the 2D→3D lifting task: a JSON file holding one object or a list of objects

``{"keypoints_2d_px": 21×2 pixel coordinates (FreiHAND/OpenPose joint order), "intrinsics": 3×3 camera matrix,
"visibility": 21 values in [0, 1] (optional; default all 1)}``.

Every problem names the file, the object's index and the key (:class:`~trainwell.engine.task.DataError`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from trainwell.engine.task import DataError
from trainwell.tasks.hand_pose.skeleton import NUM_JOINTS

_SHAPES = {"keypoints_2d_px": (NUM_JOINTS, 2), "intrinsics": (3, 3), "visibility": (NUM_JOINTS,)}


def read_lifting_inputs(path: Path) -> dict[str, torch.Tensor]:
    """``{"keypoints_2d_px": (N, 21, 2), "visibility": (N, 21), "intrinsics": (N, 3, 3)}`` float32 from ``path``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err}).") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise DataError(f"{path}: the list is empty; give one object or a list of objects.")
    rows = [_read_item(path, i, item) for i, item in enumerate(items)]
    return {key: torch.stack([row[key] for row in rows]) for key in _SHAPES}


def _read_item(path: Path, index: int, item: Any) -> dict[str, torch.Tensor]:
    where = f"{path}, object {index}"
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object with keypoints_2d_px and intrinsics, got {type(item).__name__}.")
    unknown = sorted(set(item) - set(_SHAPES))
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown}; expected {sorted(_SHAPES)}.")
    out: dict[str, torch.Tensor] = {}
    for key, shape in _SHAPES.items():
        if key not in item:
            if key == "visibility":
                out[key] = torch.ones(NUM_JOINTS)
                continue
            raise DataError(f"{where}: missing '{key}' ({'×'.join(map(str, shape))} numbers).")
        out[key] = _tensor(where, key, item[key], shape)
    if not (float(out["visibility"].min()) >= 0.0 and float(out["visibility"].max()) <= 1.0):
        raise DataError(f"{where}: 'visibility' values must lie in [0, 1].")
    if float(out["intrinsics"][0, 0]) <= 0 or float(out["intrinsics"][1, 1]) <= 0:
        raise DataError(f"{where}: 'intrinsics' must have positive focal lengths (fx = K[0][0], fy = K[1][1]).")
    return out


def _tensor(where: str, key: str, value: Any, shape: tuple[int, ...]) -> torch.Tensor:
    try:
        tensor = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: '{key}' must be a {'×'.join(map(str, shape))} array of numbers.") from None
    if tuple(tensor.shape) != shape:
        got = "×".join(map(str, tensor.shape)) or "a scalar"
        raise DataError(f"{where}: '{key}' has shape {got}; expected {'×'.join(map(str, shape))}.")
    if not all(math.isfinite(v) for v in tensor.flatten().tolist()):
        raise DataError(f"{where}: '{key}' holds a NaN or infinite value.")
    return tensor.float()
