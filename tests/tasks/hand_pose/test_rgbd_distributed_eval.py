"""RGB-D evaluation on 1, 2 and 3 gloo processes (UTNet trains on 4 GPUs): the same metrics, mesh errors and
benchmark files, whatever the number of processes (7 crops: uneven shards).

Convolutions may round differently for a different batch (another kernel blocking), so values agree to float32
rounding rather than bitwise; a sample lost, doubled or put in the wrong place would differ by millimetres.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "distributed"))
from distributed_helpers import evaluate_as_rank, spawn

from trainwell.tasks.hand_pose.image_model import RGBDNetConfig
from trainwell.tasks.hand_pose.rgbd_task import RGBDDataConfig, RGBDHandPoseTask, RGBDTaskConfig


def _score(rank: int, world_size: int, out_dir: Path) -> None:
    model_cfg = RGBDNetConfig(
        width=8, blocks=[1, 1, 1, 1], head_width=16, global_context=True, refine_width=32, vertex_head="skinned"
    )
    data = RGBDDataConfig(crop_size_px=32, num_unique=1, val_size=7, view_tilt_deg=30.0, palm_tone=0.6)
    task = RGBDHandPoseTask(RGBDTaskConfig(model=model_cfg), data)
    val = task.build_val_dataset()
    torch.manual_seed(0)
    outputs = out_dir / f"w{world_size}"
    result = evaluate_as_rank(task, task.build_model(), val, rank, world_size, outputs)
    (out_dir / f"w{world_size}_r{rank}.json").write_text(json.dumps(result.metrics))


@pytest.mark.slow
def test_metrics_and_benchmark_files_do_not_depend_on_the_number_of_processes(tmp_path: Path) -> None:
    _score(0, 1, tmp_path)  # one process: no process group, in this process
    for world_size in (2, 3):
        spawn(_score, world_size, tmp_path)
    reference = json.loads((tmp_path / "w1_r0.json").read_text())
    assert {"mpjpe", "pa_mpjpe", "mpvpe", "pa_mpvpe"} <= set(reference)
    assert 0 < reference["pa_mpjpe"] < reference["mpjpe"]  # an untrained model: errors, but finite ones
    for world_size in (2, 3):
        for rank in range(world_size):
            metrics = json.loads((tmp_path / f"w{world_size}_r{rank}.json").read_text())
            assert metrics == pytest.approx(reference, rel=1e-6)
    files = {w: sorted((tmp_path / f"w{w}").rglob("pred.json")) for w in (1, 2, 3)}
    assert [p.relative_to(tmp_path / "w1").as_posix() for p in files[1]] == ["freihand/pred.json", "ho3d/pred.json"]
    joints, _ = json.loads(files[1][0].read_text())
    assert len(joints) == 7  # every crop exactly once
    for w in (2, 3):
        for mine, single in zip(files[w], files[1], strict=True):
            for a, b in zip(json.loads(mine.read_text()), json.loads(single.read_text()), strict=True):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)  # metres
