"""Each pack's declared ``metric_names()`` are exactly the keys its evaluator's ``compute()`` returns on a tiny
evaluation (an untrained model, a few validation samples), so the declaration that checks ``eval.best_metric``
before training cannot drift from what the evaluator reports."""

import contextlib
from pathlib import Path

import pytest
import torch

from trainwell.config.expressions import parse_metric_expression
from trainwell.engine.distributed import DistEnv
from trainwell.engine.evaluation import evaluate
from trainwell.experiment import load_experiment

ROOT = Path(__file__).resolve().parents[2]
CASES = [
    ("configs/examples/regression.yaml", ["data.val_size=5"]),
    ("configs/hand_pose/tiny.yaml", ["data.val_size=6"]),
    ("configs/hand_pose/rgbd_tiny.yaml", ["data.val_size=3"]),
    ("configs/captioning/tiny.yaml", ["data.val_size=4"]),
    ("configs/detection3d/tiny.yaml", ["data.val_size=2"]),
    ("examples/openpcdet_style/config.yaml", ["data.val_size=4"]),
    ("examples/viecap_style/config.yaml", ["data.val_size=4"]),
]


@pytest.mark.parametrize(
    ("config", "overrides"), CASES, ids=[Path(c).parent.name + "/" + Path(c).stem for c, _ in CASES]
)
def test_declared_metric_names_equal_what_compute_returns(
    config: str, overrides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if config.startswith("examples/"):
        monkeypatch.syspath_prepend(str(ROOT / Path(config).parent))  # as its README runs it: PYTHONPATH=.
    torch.manual_seed(0)
    cfg, task_cls = load_experiment(ROOT / config, overrides)
    task = task_cls(cfg.task, cfg.data)
    declared = task.metric_names()
    assert declared, f"{task_cls.__name__} declares no metric names"
    _, val_set = task.build_datasets()
    result = evaluate(
        task=task,
        model=task.build_model().eval(),
        dataset=val_set,
        evaluator=task.build_evaluator(),
        batch_size=4,
        device=torch.device("cpu"),
        env=DistEnv(),
        autocast=contextlib.nullcontext,
        progress_mode="off",
    )
    # Every key compute() returned is declared; what is declared but absent can only be a data-dependent group
    # (a view-angle bin the few validation samples do not reach).
    assert set(result.metrics) <= declared
    assert all("_by_view/" in name for name in declared - set(result.metrics)), declared - set(result.metrics)
    # The config's own best_metric uses only declared names (the check the engine runs at startup passes).
    assert parse_metric_expression(cfg.eval.best_metric).names <= declared
