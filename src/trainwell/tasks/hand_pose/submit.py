"""Benchmark submission files and ``trainwell predict`` for the RGB-D task.

* **FreiHAND** ``pred.json``: ``[xyz_list, verts_list]``, one ``21 × 3`` and one ``V × 3`` list per evaluation
  image, metres, camera frame (OpenCV axes), FreiHAND joint order (= the pack's), as the official ``eval.py``
  reads them (``pred[0][idx]``, ``pred[1][idx]``). Absolute positions: root-relative predictions plus the
  predicted root.
* **HO3D** ``pred.json``: the same layout in HO3D's joint order (MANO order + tips) and its **OpenGL** frame (y up,
  z backwards: the official ``pred.py`` refuses files whose z are all positive).

The vertex lists hold the pack's mesh (:data:`~.surface.NUM_VERTICES` points), not MANO's 778: the official scripts
then fall back to aligning vertices with the joints' Procrustes transform and skip the mesh error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainwell.tasks.hand_pose.augment import warp_to_camera
from trainwell.tasks.hand_pose.readers import pack_joints_to_ho3d_m, read_ho3d_depth_mm, read_rgb


def write_freihand_pred(path: Path, joints_cam_mm: np.ndarray, vertices_cam_mm: np.ndarray) -> Path:
    """Write FreiHAND's ``pred.json`` from ``(N, 21, 3)`` joints and ``(N, V, 3)`` vertices, camera frame, mm."""
    joints_m = np.asarray(joints_cam_mm, dtype=np.float64) / 1000.0
    verts_m = np.asarray(vertices_cam_mm, dtype=np.float64) / 1000.0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([joints_m.tolist(), verts_m.tolist()]))
    return path


def write_ho3d_pred(
    path: Path, joints_cam_mm: np.ndarray, vertices_cam_mm: np.ndarray, *, check_frame: bool = True
) -> Path:
    """Write HO3D's ``pred.json``: joints in HO3D order, both in the OpenGL frame, metres.

    ``check_frame`` refuses joints that all lie behind the camera, the sign of arrays already in HO3D's frame
    (converted twice). A model's own predictions are in the camera frame by construction: an evaluator passes
    ``False``, so that a diverged model's file is written (wrong, as its metrics say) rather than the run stopped.
    """
    joints = pack_joints_to_ho3d_m(joints_cam_mm)
    verts = np.asarray(vertices_cam_mm, dtype=np.float64) * np.array([1.0, -1.0, -1.0]) / 1000.0
    if check_frame and joints.size and np.all(joints[..., 2] > 0):
        raise ValueError("HO3D predictions must lie at negative z (OpenGL frame): were the joints converted twice?")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([joints.tolist(), verts.tolist()]))
    return path


def absolute_predictions(outputs: dict[str, torch.Tensor], intrinsics: torch.Tensor) -> dict[str, torch.Tensor]:
    """Camera-frame joints and vertices (mm): the root-relative outputs placed at the predicted root."""
    root = outputs["root_cam_mm"][:, None]  # (B, 1, 3): the wrist's keypoint back-projected at its depth
    return {"joints_cam_mm": outputs["joints_mm"] + root, "vertices_cam_mm": outputs["vertices_mm"] + root}


def crop_image(
    rgb: torch.Tensor,
    depth_mm: torch.Tensor,
    intrinsics: torch.Tensor,
    box_px: tuple[float, float, float, float],
    size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Square crop around ``box_px = (x0, y0, x1, y1)`` resampled to ``size`` px: ``(rgb, depth, K_crop)``, batch 1."""
    x0, y0, x1, y1 = box_px
    side = max(x1 - x0, y1 - y0) * 1.25
    cx, cy, scale = (x0 + x1) / 2, (y0 + y1) / 2, size / side
    k = intrinsics.double()
    k_crop = k.clone()
    k_crop[0, 0], k_crop[1, 1] = k[0, 0] * scale, k[1, 1] * scale
    k_crop[0, 2], k_crop[1, 2] = (k[0, 2] - (cx - side / 2)) * scale, (k[1, 2] - (cy - side / 2)) * scale
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    rgb_c = warp_to_camera(rgb[None].double(), k[None], k_crop[None], one, zero, (size, size), mode="bilinear")
    depth_c = warp_to_camera(depth_mm[None].double(), k[None], k_crop[None], one, zero, (size, size), mode="nearest")
    return rgb_c.float(), depth_c.float(), k_crop[None].float()


def _load_inputs(input_path: Path, crop_size_px: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rgb, depth_mm, intrinsics)`` batches from a ``.npz`` of crops or an image with its ``.json`` sidecar."""
    if input_path.suffix == ".npz":
        data = np.load(input_path, allow_pickle=False)
        missing = {"rgb", "depth_mm", "intrinsics"} - set(data.files)
        if missing:
            raise KeyError(f"{input_path} lacks {sorted(missing)}; expected rgb (N,3,S,S), depth_mm, intrinsics.")
        rgb = torch.from_numpy(data["rgb"]).float()
        if data["rgb"].dtype == np.uint8:
            rgb = rgb / 255.0
        depth = torch.from_numpy(data["depth_mm"]).float()
        return rgb, depth.reshape(rgb.shape[0], 1, *rgb.shape[-2:]), torch.from_numpy(data["intrinsics"]).float()
    sidecar = input_path.with_suffix(".json")
    if not sidecar.is_file():
        raise FileNotFoundError(
            f"{sidecar} is missing: an image needs a JSON sidecar with 'K' (3×3, px) and optionally 'bbox_px' "
            "[x0, y0, x1, y1]; a depth image may sit beside it as <name>_depth.png (HO3D encoding)."
        )
    meta = json.loads(sidecar.read_text())
    rgb = read_rgb(input_path)
    depth_path = input_path.with_name(f"{input_path.stem}_depth.png")
    depth = read_ho3d_depth_mm(depth_path) if depth_path.is_file() else torch.zeros(1, *rgb.shape[-2:])
    box = meta.get("bbox_px", [0, 0, rgb.shape[-1], rgb.shape[-2]])
    return crop_image(rgb, depth, torch.tensor(meta["K"], dtype=torch.float64), tuple(box), crop_size_px)


def predict_file(model: nn.Module, input_path: Path, out_dir: Path | None, *, crop_size_px: int) -> dict[str, Any]:
    """Joints and vertices for the crops in ``input_path``; writes FreiHAND and HO3D ``pred.json`` into ``out_dir``.

    Returns ``{"joints_cam_mm": N × 21 × 3, "joints_rel_mm": ..., "keypoints_2d_px": N × 21 × 2 (crop px)}``.
    """
    rgb, depth, k = _load_inputs(Path(input_path), crop_size_px)
    device = next(model.parameters()).device
    outputs = model(rgb.to(device), depth.to(device), k.to(device))
    outputs = {name: value.detach().cpu() for name, value in outputs.items()}
    absolute = absolute_predictions(outputs, k)
    if out_dir is not None:
        joints, verts = absolute["joints_cam_mm"].numpy(), absolute["vertices_cam_mm"].numpy()
        write_freihand_pred(Path(out_dir) / "freihand" / "pred.json", joints, verts)
        write_ho3d_pred(Path(out_dir) / "ho3d" / "pred.json", joints, verts, check_frame=False)
    return {
        "joints_cam_mm": absolute["joints_cam_mm"].tolist(),
        "joints_rel_mm": outputs["joints_mm"].tolist(),
        "keypoints_2d_px": outputs["keypoints_2d_px"].tolist(),
    }
