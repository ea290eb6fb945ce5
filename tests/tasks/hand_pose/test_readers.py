"""FreiHAND and HO3D readers on fixtures written in the datasets' exact layouts; the unpickler refuses code."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainwell.tasks.hand_pose.readers import FreiHANDReader, HO3DReader, safe_pickle_load

# HO3D's own map from its (MANO + tips) order to the OpenPose order, as its evaluation code writes it.
MANO_TO_SIMPLE = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]
RNG = np.random.default_rng(0)


def test_freihand_training_split(tmp_path: Path) -> None:
    xyz_m = RNG.normal(0, 0.05, (2, 21, 3)) + np.array([0, 0, 0.6])
    verts_m = RNG.normal(0, 0.05, (2, 778, 3)) + np.array([0, 0, 0.6])
    k = [[[480.0, 0, 112], [0, 480.0, 112], [0, 0, 1]]] * 2
    for name, value in (("xyz", xyz_m), ("verts", verts_m), ("K", np.array(k))):
        (tmp_path / f"training_{name}.json").write_text(json.dumps(value.tolist()))
    (tmp_path / "training" / "rgb").mkdir(parents=True)
    ramp = np.linspace(0, 1, 224)
    smooth = np.stack(
        [ramp[None, :] * np.ones((224, 1)), ramp[:, None] * np.ones((1, 224)), 0.5 * np.ones((224, 224))], -1
    )
    pixels = np.stack([(smooth * (0.4 + 0.2 * i) * 255).astype(np.uint8) for i in range(4)])  # jpeg keeps smooth images
    for i in range(4):  # images 2 and 3 are colour versions of hands 0 and 1
        Image.fromarray(pixels[i]).save(tmp_path / "training" / "rgb" / f"{i:08d}.jpg", quality=95)
    reader = FreiHANDReader(tmp_path, "training")
    assert len(reader) == 4
    sample = reader[3]
    assert sample["rgb"].shape == (3, 224, 224) and 0 <= float(sample["rgb"].min()) <= float(sample["rgb"].max()) <= 1
    assert np.allclose(sample["joints_cam_mm"].numpy(), xyz_m[1] * 1000, atol=1e-3)  # mm, same (OpenPose) order
    assert np.allclose(sample["vertices_cam_mm"].numpy(), verts_m[1] * 1000, atol=1e-3)
    assert np.abs(sample["rgb"].permute(1, 2, 0).numpy() * 255 - pixels[3]).mean() < 3  # the same image (jpeg)


def write_ho3d_frame(root: Path, seq: str, frame: str, joints_gl_m: np.ndarray, depth_m: np.ndarray) -> None:
    for sub in ("rgb", "depth", "meta"):
        (root / "train" / seq / sub).mkdir(parents=True, exist_ok=True)
    h, w = depth_m.shape
    Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "train" / seq / "rgb" / f"{frame}.png")
    # HO3D's encoding: value = depth / scale in 16 bits, low byte in red, high byte in green (cv2 reads BGR).
    value = np.round(depth_m / 0.00012498664727900177).astype(np.uint16)
    encoded = np.stack(
        [(value & 0xFF).astype(np.uint8), (value >> 8).astype(np.uint8), np.zeros_like(value, np.uint8)], -1
    )
    Image.fromarray(encoded).save(root / "train" / seq / "depth" / f"{frame}.png")
    meta = {
        "handJoints3D": joints_gl_m,
        "camMat": np.array([[614.0, 0, 320], [0, 614.0, 240], [0, 0, 1]]),
        "handBoundingBox": np.array([100.0, 80.0, 300.0, 260.0]),
        "objName": "003_cracker_box",
    }
    with open(root / "train" / seq / "meta" / f"{frame}.pkl", "wb") as f:
        pickle.dump(meta, f, protocol=2)


def test_ho3d_train_frame(tmp_path: Path) -> None:
    joints_cv_pack_m = RNG.normal(0, 0.04, (21, 3)) + np.array([0.0, 0.0, 0.5])  # what the reader must return (÷ 1000)
    # Build HO3D's file from it independently: pack → MANO order (inverse map), OpenCV → OpenGL.
    joints_mano = np.zeros_like(joints_cv_pack_m)
    joints_mano[MANO_TO_SIMPLE] = joints_cv_pack_m
    joints_gl = joints_mano * [1, -1, -1]
    depth_m = RNG.uniform(0.3, 1.2, (48, 64))
    write_ho3d_frame(tmp_path, "ABF10", "0000", joints_gl, depth_m)
    sample = HO3DReader(tmp_path, "train")[0]
    assert (sample["sequence"], sample["frame"]) == ("ABF10", "0000")
    assert np.allclose(sample["joints_cam_mm"].numpy(), joints_cv_pack_m * 1000, atol=1e-3)
    assert np.allclose(sample["depth_mm"][0].numpy(), depth_m * 1000, atol=0.07)  # within the 0.125 mm step
    assert sample["bbox_px"].tolist() == [100.0, 80.0, 300.0, 260.0]
    assert sample["intrinsics"][0, 0] == 614.0
    # The evaluation split gives only the wrist (OpenGL frame): the reader returns it in the pack's frame, mm.
    write_ho3d_frame(tmp_path, "SM1", "0001", joints_gl[0], depth_m)
    evaluation = HO3DReader(tmp_path, "train")[1]
    assert "joints_cam_mm" not in evaluation
    assert np.allclose(evaluation["root_cam_mm"].numpy(), joints_cv_pack_m[0] * 1000, atol=1e-3)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_meta_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "0000.pkl"
    path.write_bytes(pickle.dumps({"camMat": _Exploit(marker)}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        safe_pickle_load(path)
    assert not marker.exists()
    # The same unpickler reads a genuine meta pickle's arrays.
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps({"camMat": np.eye(3), "n": 3}))
    assert np.array_equal(safe_pickle_load(good)["camMat"], np.eye(3))


def test_missing_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"training_K\.json"):
        FreiHANDReader(tmp_path, "training")
    with pytest.raises(FileNotFoundError, match="meta"):
        HO3DReader(tmp_path, "train")
    assert torch.is_tensor(torch.zeros(1))
