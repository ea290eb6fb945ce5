"""A Velodyne file that is not a whole number of points is refused by name and size, never truncated."""

from pathlib import Path

import numpy as np
import pytest

from trainwell.engine.task import DataError
from trainwell.tasks.detection3d.kitti import read_velodyne, write_velodyne


@pytest.mark.parametrize("extra_bytes", [4, 6, 12])
def test_velodyne_size_not_a_multiple_of_16_bytes(extra_bytes: int, tmp_path: Path) -> None:
    points = np.arange(40, dtype=np.float32).reshape(10, 4)
    path = tmp_path / "000007.bin"
    write_velodyne(path, points)
    assert np.array_equal(read_velodyne(path), points)  # the whole file is 10 points of 16 bytes
    # 4 extra bytes: 41 floats (the old check caught it); 12: 43 floats; 6: 41.5 floats, np.fromfile drops the half
    path.write_bytes(path.read_bytes() + b"\x00" * extra_bytes)
    size = 160 + extra_bytes
    with pytest.raises(DataError, match=rf"'{path}' is {size} bytes, not a multiple of 16"):
        read_velodyne(path)


def test_truncated_velodyne_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "000001.bin"
    write_velodyne(path, np.ones((5, 4), np.float32))
    path.write_bytes(path.read_bytes()[:-8])  # a copy cut off mid-point: 18 floats would read as 4.5 points
    with pytest.raises(DataError, match=r"000001\.bin' is 72 bytes"):
        read_velodyne(path)


def test_frame_listed_without_its_files_is_named(tmp_path: Path) -> None:
    from trainwell.engine.task import MissingDataError
    from trainwell.tasks.detection3d.kitti import load_kitti_frame

    (tmp_path / "training" / "calib").mkdir(parents=True)
    (tmp_path / "training" / "calib" / "000003.txt").write_text("")
    with pytest.raises(MissingDataError, match=r"KITTI frame '000003' .* no file '.*velodyne/000003\.bin'"):
        load_kitti_frame(tmp_path, "000003")


def _kitti_dir(root: Path, frames: list[str]) -> None:
    """A KITTI object directory with ``frames`` in both splits: points in front of the car, no objects."""
    from trainwell.tasks.detection3d.kitti import synthetic_calib, write_calib, write_label

    (root / "ImageSets").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "ImageSets" / f"{split}.txt").write_text("\n".join(frames) + "\n")
    for sub in ("velodyne", "calib", "label_2"):
        (root / "training" / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for frame in frames:
        xyz = rng.uniform([5.0, -8.0, -1.5], [25.0, 8.0, 0.5], (300, 3))
        write_velodyne(root / "training" / "velodyne" / f"{frame}.bin", np.c_[xyz, rng.uniform(0, 1, 300)])
        write_calib(root / "training" / "calib" / f"{frame}.txt", synthetic_calib())
        write_label(root / "training" / "label_2" / f"{frame}.txt", [])


@pytest.mark.parametrize("num_workers", [0, 1])
def test_cli_names_the_damaged_velodyne_file(
    num_workers: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Read in the main process or in a DataLoader worker: one line naming the file, no traceback, exit 1."""
    from trainwell.cli import main

    root = tmp_path / "kitti"
    _kitti_dir(root, ["000000", "000001"])
    bad = root / "training" / "velodyne" / "000001.bin"
    bad.write_bytes(bad.read_bytes() + b"\x00" * 6)
    args = [f"data.root={root}", f"data.num_workers={num_workers}", "train.batch_size=2", "train.device=cpu"]
    assert main(["train", "configs/detection3d/tiny.yaml", *args, f"run.dir={tmp_path / 'run'}"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert err.startswith(f"trainwell: data error: Velodyne file '{bad}' is {300 * 16 + 6} bytes")
