"""The optimizer step: clipping, the fp16 skip path, and gradient accumulation."""

import warnings

import torch
from torch import nn

from trainwell.api import build_run
from trainwell.config.schema import ScheduleConfig
from trainwell.engine.distributed import DistEnv
from trainwell.engine.loop import Trainer
from trainwell.engine.meters import StepStats
from trainwell.engine.schedule import build_scheduler
from trainwell.engine.step import optimizer_step
from trainwell.experiment import build_task, load_config

CONFIG = "configs/examples/regression.yaml"


def _model_with_grads(seed: int = 0, scale: float = 100.0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    model(torch.randn(16, 4)).pow(2).sum().mul(scale).backward()
    return model


def test_pre_clip_norm_equals_clip_grad_norm_return_value() -> None:
    reference = _model_with_grads()
    expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)

    model = _model_with_grads()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = build_scheduler(opt, ScheduleConfig(decay="constant"), 10)
    stats = StepStats(torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    optimizer_step(
        model=model, optimizer=opt, scheduler=sched, scaler=scaler, clip_grad_norm=1.0, stats=stats, measure_norm=True
    )
    summary = stats.read_and_reset(1.0)
    assert expected.item() > 1.0  # the test would be vacuous without clipping
    assert summary["grad_norm"] == expected.item()
    assert summary["clip_rate"] == 1.0


def test_skipped_fp16_step_does_not_advance_schedule_or_warn() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(model(torch.randn(16, 4)).pow(2).mean()).backward()
    next(model.parameters()).grad[0, 0] = float("inf")  # what an fp16 overflow leaves behind
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = build_scheduler(opt, ScheduleConfig(warmup_steps=5, decay="cosine"), 20)
    lr_before = opt.param_groups[0]["lr"]
    stats = StepStats(torch.device("cpu"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        applied = optimizer_step(
            model=model, optimizer=opt, scheduler=sched, scaler=scaler, clip_grad_norm=1.0, stats=stats,
            measure_norm=True,
        )  # fmt: skip
    assert not applied
    assert sched.last_epoch == 0 and opt.param_groups[0]["lr"] == lr_before
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert scaler.get_scale() == 512.0
    assert stats.num_skipped == 1
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)], [str(w.message) for w in caught]

    # The next, finite step is applied and advances the schedule by exactly one.
    scaler.scale(model(torch.randn(3, 4)).sum()).backward()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert optimizer_step(
            model=model, optimizer=opt, scheduler=sched, scaler=scaler, clip_grad_norm=None, stats=stats,
            measure_norm=False,
        )  # fmt: skip
    assert sched.last_epoch == 1
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]


def _final_weights(overrides: list[str]) -> list[torch.Tensor]:
    cfg = load_config(CONFIG, ["train.epochs=1", "train.max_steps=6", "optim.name=sgd", *overrides])
    trainer = Trainer(build_run(cfg, build_task(cfg), env=DistEnv(), write_outputs=False))
    trainer.fit()
    return [p.detach().clone() for p in trainer.run.model.parameters()]


def test_gradient_accumulation_equals_one_larger_batch() -> None:
    # 4 micro-batches of 8 must give the same update as one batch of 32 (same samples, same order).
    common = ["train.clip_grad_norm=null", "task.loss_weights={mse: 1.0, l1: 0.0}", "eval.every_epochs=0"]
    accumulated = _final_weights(["train.batch_size=8", "train.grad_accum_steps=4", *common])
    single = _final_weights(["train.batch_size=32", "train.grad_accum_steps=1", *common])
    for a, b in zip(accumulated, single, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    moved = _final_weights(["train.batch_size=8", "train.grad_accum_steps=1", *common])
    assert not all(torch.allclose(a, b) for a, b in zip(moved, single, strict=True))  # the test can fail


def test_step_on_skipped_advances_the_schedule_as_viecap_and_openpcdet_do() -> None:
    # schedule.step_on_skipped: the skipped step still moves the LR on (their scheduler.step() is unconditional),
    # the weights stay, and PyTorch's "wrong order" warning is not raised for it.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(model(torch.randn(16, 4)).pow(2).mean()).backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = build_scheduler(opt, ScheduleConfig(warmup_steps=5, decay="cosine"), 20)
    assert abs(opt.param_groups[0]["lr"] - 0.1 * 1 / 5) < 1e-15  # update 1 of a 5-step linear warmup
    stats = StepStats(torch.device("cpu"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        applied = optimizer_step(
            model=model, optimizer=opt, scheduler=sched, scaler=scaler, clip_grad_norm=1.0, stats=stats,
            measure_norm=True, step_on_skipped=True,
        )  # fmt: skip
    assert not applied and stats.num_skipped == 1
    assert sched.last_epoch == 1 and abs(opt.param_groups[0]["lr"] - 0.1 * 2 / 5) < 1e-15
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not [w for w in caught if "lr_scheduler" in str(w.message)], [str(w.message) for w in caught]
