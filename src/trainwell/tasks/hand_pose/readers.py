"""Readers for FreiHAND and HO3D (v2/v3) as they lie on disk, converted to the pack's conventions where read.

The pack's conventions: joints in the FreiHAND / OpenPose order (:mod:`.skeleton`), camera frame with x right,
y down, z forward (OpenCV), millimetres; images as float RGB in [0, 1] ``(3, H, W)``; depth in millimetres with
0 = no return. Both datasets store metres.

**FreiHAND** (``root/``): ``training/rgb/%08d.jpg`` (4 colour versions of 32 560 hands: image ``i`` is hand
``i % 32560``), ``training_xyz.json`` (N × 21 × 3, m, camera frame, already in the pack's order),
``training_K.json`` (N × 3 × 3), ``training_verts.json`` (N × 778 × 3, m); the evaluation split likewise
(``evaluation/rgb``, ``evaluation_K.json``, ``evaluation_scale.json``, and where released ``evaluation_xyz.json`` /
``evaluation_verts.json``).

**HO3D** (``root/``): ``train/SEQ/rgb/FRAME.png`` (v2; ``.jpg`` in v3), ``train/SEQ/depth/FRAME.png`` and
``train/SEQ/meta/FRAME.pkl``. Depth PNGs hold the depth in two 8-bit channels: ``(R + 256 G) ×
0.00012498664727900177`` metres, as the dataset's own ``read_depth_img`` decodes them (blue is unused). Meta pickles
hold NumPy arrays: ``handJoints3D`` (21 × 3, m, **OpenGL frame**: y up, z backwards; MANO joint order with the
tips appended), ``camMat`` (3 × 3), ``handBoundingBox`` (evaluation split: ``[x0, y0, x1, y1]`` px). They are read
with :func:`safe_pickle_load`, which refuses every global but NumPy's array reconstruction.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainwell.engine.task import DataError, MissingDataError

FREIHAND_NUM_UNIQUE = 32_560
"""Distinct hands of FreiHAND's training split (the rgb folder holds 4 colour versions of each)."""
HO3D_DEPTH_SCALE_M = 0.00012498664727900177
"""Metres per unit of HO3D's ``R + 256 G`` depth encoding."""
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])
"""HO3D's OpenGL camera frame (y up, z backwards) → the pack's (y down, z forward); its own inverse."""
HO3D_TO_PACK = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
"""``pack[j] = ho3d[HO3D_TO_PACK[j]]``: HO3D (MANO) order is wrist, index/middle/pinky/ring/thumb 3 joints each, then
the tips thumb, index, middle, ring, pinky; the pack's is the FreiHAND/OpenPose order."""
PACK_TO_HO3D = tuple(int(i) for i in np.argsort(HO3D_TO_PACK))
"""``ho3d[i] = pack[PACK_TO_HO3D[i]]``."""

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles (HO3D's) store array bytes as latin-1 text; encode makes no code run
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds NumPy arrays, dicts, lists and scalars, and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load global '{module}.{name}': only NumPy arrays and plain containers are allowed"
        )


def safe_pickle_load(path: Path) -> Any:
    """Load a pickle of NumPy arrays and containers; any other global (code) raises ``UnpicklingError`` unrun."""
    data = Path(path).read_bytes()
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f"{path}: {err}. The file is not an HO3D meta pickle, or was tampered with."
        ) from err


def _pil():
    try:
        from PIL import Image
    except ImportError as err:  # an optional dependency of the pack
        raise ImportError("Reading images needs Pillow: pip install 'trainwell[hand_pose]'") from err
    return Image


def read_rgb(path: Path) -> torch.Tensor:
    """An image file as float RGB ``(3, H, W)`` in [0, 1]."""
    image = np.asarray(_pil().open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def decode_ho3d_depth_mm(encoded: np.ndarray) -> np.ndarray:
    """HO3D's depth PNG ``(H, W, 3)`` uint8 RGB → ``(H, W)`` float32 mm: ``(R + 256 G) × scale`` (m) × 1000."""
    value = encoded[..., 0].astype(np.float64) + 256.0 * encoded[..., 1].astype(np.float64)
    return (value * HO3D_DEPTH_SCALE_M * 1000.0).astype(np.float32)


def read_ho3d_depth_mm(path: Path) -> torch.Tensor:
    """An HO3D depth PNG as ``(1, H, W)`` millimetres (0 where the sensor had no return)."""
    encoded = np.asarray(_pil().open(path).convert("RGB"))
    return torch.from_numpy(decode_ho3d_depth_mm(encoded))[None]


def ho3d_joints_to_pack_mm(joints_gl_m: np.ndarray) -> np.ndarray:
    """``(21, 3)`` HO3D joints (OpenGL frame, HO3D order, m) → the pack's (OpenCV frame, pack order, mm)."""
    joints = np.asarray(joints_gl_m, dtype=np.float64) @ OPENGL_TO_OPENCV.T * 1000.0
    return joints[list(HO3D_TO_PACK)]


def pack_joints_to_ho3d_m(joints_mm: np.ndarray) -> np.ndarray:
    """Inverse of :func:`ho3d_joints_to_pack_mm`: ``(..., 21, 3)`` pack joints → HO3D order, OpenGL frame, m."""
    joints = np.asarray(joints_mm, dtype=np.float64)[..., list(PACK_TO_HO3D), :]
    return joints @ OPENGL_TO_OPENCV.T / 1000.0


class DatasetLayoutError(MissingDataError):
    """A dataset on disk is not laid out as its readers expect (a missing or unreadable file, named in the message)."""


def ho3d_evaluation_frames(root: Path, split: str = "evaluation") -> list[tuple[str, str]]:
    """``(sequence, frame)`` pairs in the order of ``root/<split>.txt`` — the order HO3D's server scores ``pred.json``.

    Each listed frame must have ``<split>/SEQ/meta/FRAME.pkl``, ``rgb/FRAME.png`` (or ``.jpg``) and
    ``depth/FRAME.png``; the first one missing is a :class:`DatasetLayoutError` naming it and its line.
    """
    listing = Path(root) / f"{split}.txt"
    if not listing.is_file():
        raise DatasetLayoutError(f"{listing} is missing: an HO3D root holds {split}.txt, one SEQ/FRAME per line.")
    frames: list[tuple[str, str]] = []
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        seq, _, frame = name.partition("/")
        if not seq or not frame or "/" in frame:
            raise DatasetLayoutError(f"{listing} line {number}: expected SEQ/FRAME, got '{name}'.")
        folder = Path(root) / split / seq
        needed = [folder / "meta" / f"{frame}.pkl", folder / "depth" / f"{frame}.png"]
        rgb = [folder / "rgb" / f"{frame}{ext}" for ext in (".png", ".jpg")]
        missing = [p for p in needed if not p.is_file()] + ([] if any(p.is_file() for p in rgb) else [rgb[0]])
        if missing:
            raise DatasetLayoutError(
                f"{listing} line {number} lists frame '{name}', but {missing[0]} is missing. The server scores "
                f"pred.json by this list's order, so every listed frame is needed: restore the file (or the list)."
            )
        frames.append((seq, frame))
    if not frames:
        raise DatasetLayoutError(f"{listing} lists no frames.")
    return frames


def _json(path: Path) -> Any:
    if not path.is_file():
        raise MissingDataError(f"FreiHAND file {path} is missing; expected the dataset's layout (see readers.py).")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"FreiHAND file '{path}' is not valid JSON ({err}); copy it again from the dataset.") from None


def _annotation(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """``path``'s array, which must be ``(N, *shape)``: a ragged or mis-shaped file is named, not broadcast."""
    try:
        array = np.asarray(_json(path), dtype=np.float64)
    except ValueError as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"FreiHAND file '{path}' is not an N × {' × '.join(map(str, shape))} array ({err}).") from None
    if array.ndim != len(shape) + 1 or array.shape[1:] != shape:
        raise DataError(
            f"FreiHAND file '{path}': expected N × {' × '.join(map(str, shape))} values, got shape {array.shape}."
        )
    return array


def _check_annotation_lengths(arrays: dict[Path, np.ndarray | None]) -> None:
    """FreiHAND's annotation files hold one entry per hand: files of different lengths would mislabel samples."""
    lengths = {path: len(array) for path, array in arrays.items() if array is not None}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"'{path}' has {n}" for path, n in lengths.items())
        raise DataError(
            f"FreiHAND annotation files disagree on the number of hands: {listed}. They must hold one entry per "
            f"hand each; a partial copy or files from two splits would mislabel samples. Copy them again."
        )


class FreiHANDReader:
    """FreiHAND's ``training`` or ``evaluation`` split: ``reader[i]`` is a sample dict in the pack's units.

    Keys: ``rgb (3, 224, 224)``, ``intrinsics (3, 3)``, and where annotated ``joints_cam_mm (21, 3)``,
    ``vertices_cam_mm (778, 3)``; ``image_path``.
    """

    def __init__(self, root: Path, split: str = "training") -> None:
        if split not in ("training", "evaluation"):
            raise ValueError(f"FreiHAND split must be 'training' or 'evaluation'; got '{split}'.")
        self.root, self.split = Path(root), split
        k_path = self.root / f"{split}_K.json"
        xyz, verts = self.root / f"{split}_xyz.json", self.root / f"{split}_verts.json"
        self.intrinsics = _annotation(k_path, (3, 3))
        self.joints_m = _annotation(xyz, (21, 3)) if xyz.is_file() else None
        self.vertices_m = _annotation(verts, (778, 3)) if verts.is_file() else None
        self.images = sorted((self.root / split / "rgb").glob("*.jpg"))
        if not self.images:
            raise MissingDataError(f"No images in {self.root / split / 'rgb'} (expected %08d.jpg files).")
        _check_annotation_lengths({k_path: self.intrinsics, xyz: self.joints_m, verts: self.vertices_m})
        self._check_image_ids()

    def _check_image_ids(self) -> None:
        """Image ``i`` uses annotation ``i % N``: on purpose for the 4 colour versions of the training set (4 N images,
        one annotation each), silently wrong for anything else, so the image count must be a whole multiple of N
        and every name a number below it."""
        num_hands, folder = len(self.intrinsics), self.root / self.split / "rgb"
        if len(self.images) % num_hands:
            raise DataError(
                f"FreiHAND folder '{folder}' holds {len(self.images)} images for {num_hands} annotations in "
                f"'{self.root / f'{self.split}_K.json'}': not a whole number of versions per hand (training: 4 × N, "
                f"evaluation: N). Images would be paired with the wrong annotations; check the download."
            )
        for path in self.images:
            if not path.stem.isdigit() or int(path.stem) >= len(self.images):
                raise DataError(
                    f"FreiHAND image '{path}': expected names 00000000.jpg … {len(self.images) - 1:08d}.jpg (the "
                    f"name is the annotation index modulo {num_hands}). Remove or rename the stray file."
                )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.images[index]
        hand = int(path.stem) % len(self.intrinsics)  # the 4 colour versions share one annotation
        sample: dict[str, Any] = {
            "rgb": read_rgb(path),
            "intrinsics": torch.tensor(self.intrinsics[hand], dtype=torch.float32),
            "image_path": str(path),
        }
        if self.joints_m is not None:
            sample["joints_cam_mm"] = torch.tensor(self.joints_m[hand] * 1000.0, dtype=torch.float32)
        if self.vertices_m is not None:
            sample["vertices_cam_mm"] = torch.tensor(self.vertices_m[hand] * 1000.0, dtype=torch.float32)
        return sample


class HO3DReader:
    """HO3D v2/v3 ``train`` or ``evaluation`` split: ``reader[i]`` is one frame in the pack's units.

    ``frames``: the ``(sequence, frame)`` pairs to read, in order (:func:`ho3d_evaluation_frames` for the evaluation
    split); by default every frame on disk, sorted.

    Keys: ``rgb (3, H, W)``, ``depth_mm (1, H, W)``, ``intrinsics (3, 3)``; where annotated ``joints_cam_mm (21, 3)``
    (converted frame, order and unit), or on the evaluation split ``root_cam_mm (3,)`` (the wrist HO3D gives),
    and ``bbox_px (4,)`` (``handBoundingBox``); ``sequence``, ``frame``.
    """

    def __init__(self, root: Path, split: str = "train", frames: list[tuple[str, str]] | None = None) -> None:
        self.root, self.split = Path(root), split
        if frames is None:  # every frame on disk, sorted (the evaluation order is evaluation.txt's, not this)
            frames = sorted((meta.parent.parent.name, meta.stem) for meta in (self.root / split).glob("*/meta/*.pkl"))
        self.frames = list(frames)
        if not self.frames:
            raise MissingDataError(f"No frames under {self.root / split} (expected SEQ/meta/FRAME.pkl).")

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        seq, frame = self.frames[index]
        folder = self.root / self.split / seq
        meta_path = folder / "meta" / f"{frame}.pkl"
        meta = safe_pickle_load(meta_path)
        if not isinstance(meta, dict) or meta.get("camMat") is None:
            got = f"keys {sorted(meta)[:10]}" if isinstance(meta, dict) else f"a {type(meta).__name__}"
            raise DataError(f"HO3D meta file '{meta_path}': expected a dict with 'camMat'; got {got}.")
        if np.asarray(meta["camMat"]).shape != (3, 3):
            raise DataError(
                f"HO3D meta file '{meta_path}': camMat must be 3 × 3, got {np.asarray(meta['camMat']).shape}."
            )
        rgb_path = next(
            (
                folder / "rgb" / f"{frame}{ext}"
                for ext in (".png", ".jpg")
                if (folder / "rgb" / f"{frame}{ext}").is_file()
            ),
            None,
        )
        if rgb_path is None:
            raise MissingDataError(f"No rgb/{frame}.png or .jpg in {folder}.")
        sample: dict[str, Any] = {
            "rgb": read_rgb(rgb_path),
            "depth_mm": read_ho3d_depth_mm(folder / "depth" / f"{frame}.png"),
            "intrinsics": torch.tensor(np.asarray(meta["camMat"], dtype=np.float64), dtype=torch.float32),
            "sequence": seq,
            "frame": frame,
        }
        joints = meta.get("handJoints3D")
        if joints is not None and np.asarray(joints).shape == (21, 3):
            sample["joints_cam_mm"] = torch.tensor(ho3d_joints_to_pack_mm(joints), dtype=torch.float32)
        elif joints is not None and np.asarray(joints).shape == (3,):  # evaluation split: the wrist only
            root = np.asarray(joints, dtype=np.float64) @ OPENGL_TO_OPENCV.T * 1000.0
            sample["root_cam_mm"] = torch.tensor(root, dtype=torch.float32)
        elif joints is not None:  # neither a hand nor a wrist: dropping it would train this frame unlabelled
            raise DataError(
                f"HO3D meta file '{meta_path}': handJoints3D must be 21 × 3 (train) or 3 (evaluation, the wrist), "
                f"got shape {np.asarray(joints).shape}."
            )
        if meta.get("handBoundingBox") is not None:
            sample["bbox_px"] = torch.tensor(np.asarray(meta["handBoundingBox"], dtype=np.float64), dtype=torch.float32)
        return sample
