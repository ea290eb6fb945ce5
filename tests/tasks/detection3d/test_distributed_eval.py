"""Detection evaluation on 1, 2 and 3 gloo processes: the same KITTI metrics and result files (7 frames: uneven)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "distributed"))
from distributed_helpers import evaluate_as_rank, spawn

from trainwell.tasks.detection3d.scenes import SceneConfig
from trainwell.tasks.detection3d.task import Detection3DDataConfig, Detection3DTask, Detection3DTaskConfig


def _score(rank: int, world_size: int, out_dir: Path) -> None:
    data = Detection3DDataConfig(train_size=1, val_size=7, scene=SceneConfig(num_channels=16, azimuth_step_deg=0.5))
    task = Detection3DTask(Detection3DTaskConfig(), data)
    _, val = task.build_datasets()
    torch.manual_seed(2)  # an initialisation whose untrained head overlaps a labelled box (recall > 0 below)
    model = task.build_model()
    torch.nn.init.constant_(model.dense_head.conv_cls.bias, 0.0)  # untrained but detecting: scores near 0.5 everywhere
    outputs = out_dir / f"w{world_size}"
    result = evaluate_as_rank(task, model, val, rank, world_size, outputs)
    (out_dir / f"w{world_size}_r{rank}.json").write_text(json.dumps(result.metrics))


@pytest.mark.slow
def test_metrics_and_result_files_do_not_depend_on_the_number_of_processes(tmp_path: Path) -> None:
    _score(0, 1, tmp_path)  # one process: no process group, in this process
    for world_size in (2, 3):
        spawn(_score, world_size, tmp_path)
    reference = json.loads((tmp_path / "w1_r0.json").read_text())
    assert reference["recall_3d_30"] > 0  # the untrained head does find something
    for world_size in (2, 3):
        for rank in range(world_size):
            assert json.loads((tmp_path / f"w{world_size}_r{rank}.json").read_text()) == reference
    files = {w: sorted((tmp_path / f"w{w}").rglob("*.txt")) for w in (1, 2, 3)}  # 7 frames and result.txt
    assert len(files[1]) == 8
    for w in (2, 3):
        assert [p.read_text() for p in files[w]] == [p.read_text() for p in files[1]]
