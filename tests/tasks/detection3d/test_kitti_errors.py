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
