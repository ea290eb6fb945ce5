"""Benchmark submission files and ``trainwell predict`` for the RGB-D task.

* **FreiHAND** ``pred.json``: ``[xyz_list, verts_list]``, one ``21 × 3`` and one ``V × 3`` list per evaluation
  image, metres, camera frame (OpenCV axes), FreiHAND joint order (= the pack's), as the official ``eval.py``
  reads them (``pred[0][idx]``, ``pred[1][idx]``). Absolute positions: root-relative predictions plus the
  predicted root.
* **HO3D** ``pred.json``: the same layout in HO3D's joint order (MANO order + tips) and its **OpenGL** frame (y up,
  z backwards: the official ``pred.py`` refuses files whose z are all positive).

The vertex lists hold the pack's mesh (:data:`~.surface.NUM_VERTICES` points), not MANO's 778. The official
``eval.py`` of both benchmarks compares the *prediction's* vertex count with the *ground truth's* (on the first sample,
``verts_pred.shape[0] == verts.shape[0]``), not with 778. Where they match (the synthetic validation split, scored in
the run as ``freihand/…``) the mesh is scored like the joints. Against MANO ground truth (778) they differ: the scripts
report no mesh error (-1) and compute the aligned F-scores on vertices moved by ``align_by_trafo`` with the joints'
transform, which leaves out the prediction's own normalisation — those F-scores say little about this mesh.

``trainwell predict`` on a dataset root (:func:`predict_dataset`) writes the evaluation split's ``pred.json`` in
the order the server scores: HO3D's ``evaluation.txt``. FreiHAND's evaluation split has RGB images only, no depth:
the RGB-D model refuses it (:class:`~.readers.DatasetLayoutError`) rather than predict from an input it never saw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainwell.tasks.hand_pose.augment import warp_to_camera
from trainwell.tasks.hand_pose.readers import (
    DatasetLayoutError,
    HO3DReader,
    ho3d_evaluation_frames,
    pack_joints_to_ho3d_m,
    read_ho3d_depth_mm,
    read_rgb,
)


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


def absolute_predictions(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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

    A directory is a benchmark's dataset root: see :func:`predict_dataset` (which returns its summary instead).

    Returns ``{"joints_cam_mm": N × 21 × 3, "joints_rel_mm": ..., "keypoints_2d_px": N × 21 × 2 (crop px)}``.
    """
    if Path(input_path).is_dir():
        return predict_dataset(model, Path(input_path), out_dir, crop_size_px=crop_size_px)
    rgb, depth, k = _load_inputs(Path(input_path), crop_size_px)
    device = next(model.parameters()).device
    outputs = model(rgb.to(device), depth.to(device), k.to(device))
    outputs = {name: value.detach().cpu() for name, value in outputs.items()}
    absolute = absolute_predictions(outputs)
    if out_dir is not None:
        joints, verts = absolute["joints_cam_mm"].numpy(), absolute["vertices_cam_mm"].numpy()
        write_freihand_pred(Path(out_dir) / "freihand" / "pred.json", joints, verts)
        write_ho3d_pred(Path(out_dir) / "ho3d" / "pred.json", joints, verts, check_frame=False)
    return {
        "joints_cam_mm": absolute["joints_cam_mm"].tolist(),
        "joints_rel_mm": outputs["joints_mm"].tolist(),
        "keypoints_2d_px": outputs["keypoints_2d_px"].tolist(),
    }


def _refuse_freihand(root: Path) -> None:
    raise DatasetLayoutError(
        f"{root} is a FreiHAND root (evaluation_K.json): FreiHAND's evaluation split has RGB images only, no depth, "
        "and this RGB-D model needs a depth image per frame (it would be predicting from an input it never saw in "
        "training). Predict an RGB-D evaluation split instead (an HO3D root with evaluation.txt), or use an RGB model."
    )


def predict_dataset(
    model: nn.Module, root: Path, out_dir: Path | None, *, crop_size_px: int, batch_size: int = 32
) -> dict[str, Any]:
    """Predict a benchmark's evaluation split under ``root`` and write its ``pred.json`` into ``out_dir/ho3d``.

    HO3D (``root/evaluation.txt``): every frame in that file's order, cropped around its ``handBoundingBox``; the
    joints in HO3D's order and OpenGL frame, metres. A FreiHAND root is refused (no depth; see the module doc).
    Returns a summary ``{"dataset", "num_frames", "files"}``.
    """
    root = Path(root)
    if (root / "evaluation_K.json").is_file() and not (root / "evaluation.txt").is_file():
        _refuse_freihand(root)
    if not (root / "evaluation.txt").is_file():
        raise DatasetLayoutError(
            f"{root} is neither an HO3D root (evaluation.txt with evaluation/SEQ/{{rgb,depth,meta}}) nor a FreiHAND "
            "root (evaluation_K.json); --input takes one of those, a .npz of crops, or an image with a .json sidecar."
        )
    if out_dir is None:
        raise DatasetLayoutError(f"predicting the dataset {root} writes ho3d/pred.json: pass --out DIR.")
    reader = HO3DReader(root, "evaluation", frames=ho3d_evaluation_frames(root))
    device = next(model.parameters()).device
    joints, verts = [], []
    for start in range(0, len(reader), batch_size):
        crops = [_ho3d_crop(reader, i, crop_size_px) for i in range(start, min(start + batch_size, len(reader)))]
        rgb, depth, k = (torch.cat(parts) for parts in zip(*crops, strict=True))
        outputs = model(rgb.to(device), depth.to(device), k.to(device))
        absolute = absolute_predictions({name: value.detach().cpu() for name, value in outputs.items()})
        joints.append(absolute["joints_cam_mm"].double().numpy())
        verts.append(absolute["vertices_cam_mm"].double().numpy())
    path = write_ho3d_pred(
        Path(out_dir) / "ho3d" / "pred.json", np.concatenate(joints), np.concatenate(verts), check_frame=False
    )
    return {"dataset": "HO3D", "num_frames": len(reader), "files": [str(path)]}


def _ho3d_crop(reader: HO3DReader, index: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frame ``index`` cropped around its hand box: ``(rgb, depth_mm, K_crop)``, batch 1."""
    sample = reader[index]
    if "bbox_px" not in sample:
        seq, frame = reader.frames[index]
        raise DatasetLayoutError(
            f"{reader.root / reader.split / seq / 'meta' / (frame + '.pkl')} has no handBoundingBox: the evaluation "
            "split's meta files carry the box the crop is taken around."
        )
    box = tuple(float(v) for v in sample["bbox_px"])
    return crop_image(sample["rgb"], sample["depth_mm"], sample["intrinsics"].double(), box, size)
