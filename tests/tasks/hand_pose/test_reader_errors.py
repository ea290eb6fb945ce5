"""FreiHAND files that would pair images with the wrong annotations are refused, naming the files and lengths."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainwell.engine.task import DataError
from trainwell.tasks.hand_pose.readers import FreiHANDReader

K = [[480.0, 0, 112], [0, 480.0, 112], [0, 0, 1]]


def _layout(root: Path, hands: dict[str, int], images: int) -> None:
    """FreiHAND's training layout with ``hands[name]`` entries in ``training_<name>.json`` and ``images`` jpgs."""
    shapes = {"K": None, "xyz": (21, 3), "verts": (778, 3)}
    for name, n in hands.items():
        value = [K] * n if name == "K" else np.zeros((n, *shapes[name])).tolist()
        (root / f"training_{name}.json").write_text(json.dumps(value))
    (root / "training" / "rgb").mkdir(parents=True)
    for i in range(images):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "training" / "rgb" / f"{i:08d}.jpg")


def test_four_versions_per_hand_is_the_legitimate_modulo(tmp_path: Path) -> None:
    _layout(tmp_path, {"K": 2, "xyz": 2, "verts": 2}, images=8)
    assert len(FreiHANDReader(tmp_path, "training")) == 8


@pytest.mark.parametrize(("short", "n"), [("xyz", 3), ("verts", 1), ("K", 3)])
def test_annotation_files_of_different_lengths(short: str, n: int, tmp_path: Path) -> None:
    hands = {"K": 4, "xyz": 4, "verts": 4} | {short: n}
    _layout(tmp_path, hands, images=16)
    with pytest.raises(DataError) as err:
        FreiHANDReader(tmp_path, "training")
    message = str(err.value)
    assert f"'{tmp_path / f'training_{short}.json'}' has {n}" in message
    assert f"'{tmp_path / 'training_K.json'}' has {hands['K']}" in message


def test_image_count_not_a_multiple_of_the_annotations(tmp_path: Path) -> None:
    _layout(tmp_path, {"K": 4, "xyz": 4}, images=6)  # 6 images for 4 hands: images 4, 5 would reuse hands 0, 1
    with pytest.raises(DataError, match=r"holds 6 images for 4 annotations"):
        FreiHANDReader(tmp_path, "training")


def test_stray_image_name_is_named(tmp_path: Path) -> None:
    _layout(tmp_path, {"K": 2, "xyz": 2}, images=3)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "training" / "rgb" / "00000009.jpg")
    with pytest.raises(DataError, match=r"00000009\.jpg"):
        FreiHANDReader(tmp_path, "training")


def test_misshaped_and_invalid_annotation_files(tmp_path: Path) -> None:
    _layout(tmp_path, {"K": 2, "xyz": 2}, images=2)
    (tmp_path / "training_xyz.json").write_text(json.dumps(np.zeros((2, 20, 3)).tolist()))
    with pytest.raises(DataError, match=r"training_xyz\.json': expected N × 21 × 3 values, got shape \(2, 20, 3\)"):
        FreiHANDReader(tmp_path, "training")
    (tmp_path / "training_xyz.json").write_text("[[[0.1, 0.2")
    with pytest.raises(DataError, match=r"training_xyz\.json' is not valid JSON"):
        FreiHANDReader(tmp_path, "training")


def test_ho3d_joints_of_another_shape_are_refused_not_dropped(tmp_path: Path) -> None:
    from test_readers import write_ho3d_frame

    from trainwell.tasks.hand_pose.readers import HO3DReader

    write_ho3d_frame(tmp_path, "ABF10", "0000", np.zeros((20, 3)), np.full((48, 64), 0.5))
    with pytest.raises(DataError, match=r"ABF10/meta/0000\.pkl': handJoints3D must be 21 × 3 .* got shape \(20, 3\)"):
        HO3DReader(tmp_path, "train")[0]
