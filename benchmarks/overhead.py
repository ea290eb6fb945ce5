"""Per-step engine overhead: a hand-written loop vs trainwell (Python API) vs Lightning, same job, one process.

All three train the same MLP on the same in-memory data with AdamW and a warmup + cosine schedule; runs alternate
(hand, trainwell, Lightning, hand, …) and the figure reported is the median of back-to-back ratios, so a machine
whose speed drifts affects every side alike. trainwell runs as a user run does: default logging (console +
train.log + metrics.jsonl + TensorBoard every ``train.log_every`` steps), the doctor on, the non-finite policy on,
``last.pt`` written and the validation set scored at the end (64 samples). Lightning (installed for this benchmark
only, ``make bench``) runs with its logger, progress bar and checkpointing off — its fastest setting.

Two sizes: ``tiny`` (MLP 42→16→16→16→63, batch 16: the fixed cost per step dominates) and ``wide`` (512 wide,
batch 256: the model dominates).

    python benchmarks/overhead.py [--size tiny|wide|both] [--steps 1500] [--repeats 5]
    python benchmarks/overhead.py --ablate [--steps 3000]   # where the tiny job's overhead goes
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainwell.api import build_run
from trainwell.config.schema import ExperimentConfig, ScheduleConfig
from trainwell.engine.distributed import DistEnv
from trainwell.engine.loop import Trainer
from trainwell.engine.schedule import build_scheduler
from trainwell.engine.task import DataConfig, Task, TaskConfig


@dataclass(frozen=True)
class Size:
    widths: tuple[int, ...]
    batch: int


SIZES = {"tiny": Size((42, 16, 16, 16, 63), 16), "wide": Size((42, 512, 512, 512, 63), 256)}


def make_model(widths: tuple[int, ...]) -> nn.Module:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def make_data(size: Size, steps: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(steps * size.batch, size.widths[0], generator=generator)
    w = torch.randn(size.widths[0], size.widths[-1], generator=generator) / size.widths[0] ** 0.5
    return TensorDataset(x, x @ w)


class _Evaluator:
    def reset(self) -> None:
        self.rows: list[torch.Tensor] = []
        self.idx: list[torch.Tensor] = []

    def update(self, err: torch.Tensor, indices: torch.Tensor) -> None:
        self.rows.append(err.detach().cpu())
        self.idx.append(indices.cpu())

    def local_results(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return torch.cat(self.idx), {"mse": torch.cat(self.rows)}

    def load_results(self, indices: torch.Tensor, results: dict[str, torch.Tensor]) -> None:
        self.idx, self.rows = [indices], [results["mse"]]

    def compute(self) -> dict[str, float]:
        return {"mse": float(torch.cat(self.rows).mean())}


class BenchTask(Task):
    """The benchmark job as a trainwell task (tuples from a TensorDataset, one MSE component)."""

    def __init__(self, size: Size, train: TensorDataset, val: TensorDataset) -> None:
        super().__init__(TaskConfig(class_path="benchmarks.overhead:BenchTask"), DataConfig())
        self.size, self.train, self.val = size, train, val

    def build_model(self) -> nn.Module:
        torch.manual_seed(0)
        return make_model(self.size.widths)

    def build_datasets(self) -> tuple[TensorDataset, TensorDataset]:
        return self.train, self.val

    def build_evaluator(self) -> _Evaluator:
        return _Evaluator()

    def compute_losses(self, model: nn.Module, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"mse": nn.functional.mse_loss(model(x), y)}

    def eval_step(
        self, model: nn.Module, batch: list[torch.Tensor], indices: torch.Tensor, evaluator: _Evaluator
    ) -> None:
        x, y = batch
        evaluator.update((model(x) - y).pow(2).mean(dim=1), indices)


def _schedule() -> ScheduleConfig:
    return ScheduleConfig(warmup_steps=50, decay="cosine", min_lr_ratio=0.1)


def hand_written(size: Size, data: TensorDataset) -> float:
    """The loop people write by hand; returns steps per second."""
    torch.manual_seed(0)
    model = make_model(size.widths)
    loader = DataLoader(data, batch_size=size.batch, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = build_scheduler(opt, _schedule(), len(loader))
    model.train()
    started = time.perf_counter()
    done = 0
    for x, y in loader:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        done += 1
    return done / (time.perf_counter() - started)


def with_trainwell(
    size: Size, data: TensorDataset, val: TensorDataset, change: Callable[[ExperimentConfig], None] | None = None
) -> float:
    """The same job through ``Trainer.fit`` (default logging, doctor on, last.pt and eval at the end); ``change``
    edits the config first (the ablation)."""
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = ExperimentConfig()
        cfg.train.epochs, cfg.train.batch_size, cfg.train.progress_bar = 1, size.batch, "off"
        cfg.optim.lr, cfg.schedule = 1e-3, _schedule()
        cfg.eval.every_epochs, cfg.eval.batch_size = 0, 64
        cfg.run.dir = run_dir
        if change is not None:
            change(cfg)
        trainer = Trainer(build_run(cfg, BenchTask(size, data, val), env=DistEnv()))
        logging.getLogger("trainwell").setLevel(logging.WARNING)  # keep the benchmark's output readable
        started = time.perf_counter()
        result = trainer.fit()
        elapsed = time.perf_counter() - started
    return result.state.global_step / elapsed


def with_lightning(size: Size, data: TensorDataset) -> float | None:
    """The same job as a LightningModule with logging, progress bar and checkpoints off; ``None`` if absent."""
    try:
        import lightning as L
    except ImportError:
        return None

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = make_model(size.widths)

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self) -> dict:
            opt = torch.optim.AdamW(self.parameters(), lr=1e-3)
            steps = len(data) // size.batch
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": build_scheduler(opt, _schedule(), steps), "interval": "step"},
            }

    loader = DataLoader(data, batch_size=size.batch, shuffle=True)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = Module()
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        trainer.fit(module, loader)
    return len(loader) / (time.perf_counter() - started)


def run_size(name: str, steps: int, repeats: int) -> None:
    size = SIZES[name]
    data, short = make_data(size, steps), make_data(size, steps // 4)
    val = TensorDataset(torch.randn(64, size.widths[0]), torch.randn(64, size.widths[-1]))
    warm = make_data(size, 100)
    hand_written(size, warm), with_trainwell(size, warm, val), with_lightning(size, warm)  # warm-up
    hand: list[float] = []
    engine: list[float] = []
    light: list[float] = []
    slope_ratio: list[float] = []
    for _ in range(repeats):
        hand.append(hand_written(size, data))
        engine.append(with_trainwell(size, data, val))
        lit = with_lightning(size, data)
        if lit is not None:
            light.append(lit)
        # Per-step cost without the fixed cost of a run (start-up banner, the final evaluation, last.pt): the slope
        # between a run of N and one of N/4 steps, for both sides, back to back.
        n_long, n_short = steps, steps // 4
        hand_slope = (n_long / hand[-1] - n_short / hand_written(size, short)) / (n_long - n_short)
        engine_slope = (n_long / engine[-1] - n_short / with_trainwell(size, short, val)) / (n_long - n_short)
        slope_ratio.append(hand_slope / engine_slope)
    ratio = statistics.median(e / h for e, h in zip(engine, hand, strict=True))
    per_step = statistics.median(slope_ratio)
    hand_step_us = 1e6 / statistics.median(hand)
    print(f"[{name}] MLP {'→'.join(map(str, size.widths))}, batch {size.batch}, {steps} steps, {repeats} repeats")
    print(f"  hand-written: {statistics.median(hand):8.1f} steps/s ({hand_step_us:.0f} µs/step)")
    print(f"  trainwell:    {statistics.median(engine):8.1f} steps/s  ratio {ratio:.3f} (whole runs, median of pairs)")
    print(
        f"  trainwell per step, fixed run costs excluded: ratio {per_step:.3f} "
        f"≈ {hand_step_us * (1 / per_step - 1):.0f} µs/step"
    )
    if light:
        lratio = statistics.median(lt / h for lt, h in zip(light, hand, strict=True))
        print(f"  Lightning:    {statistics.median(light):8.1f} steps/s  ratio {lratio:.3f}")
    else:
        print("  Lightning: not installed (make bench installs it)")


def _no_doctor(cfg: ExperimentConfig) -> None:
    cfg.diagnostics.enabled = False


def _rare_logs(cfg: ExperimentConfig) -> None:
    cfg.train.log_every = 10**6


def _neither(cfg: ExperimentConfig) -> None:
    _no_doctor(cfg)
    _rare_logs(cfg)


def ablation(steps: int, repeats: int) -> None:
    """The tiny job with the doctor off, with (almost) no log lines, and both: what each costs per step."""
    size = SIZES["tiny"]
    data = make_data(size, steps)
    val = TensorDataset(torch.randn(64, size.widths[0]), torch.randn(64, size.widths[-1]))
    variants: dict[str, Callable[[ExperimentConfig], None] | None] = {
        "default": None,
        "diagnostics.enabled=false": _no_doctor,
        "train.log_every=1000000": _rare_logs,
        "both": _neither,
    }
    hand_written(size, make_data(size, 100)), with_trainwell(size, make_data(size, 100), val)  # warm-up
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    hand_us: list[float] = []
    for _ in range(repeats):
        for name, change in variants.items():  # each variant right after its own hand-written run
            hand = hand_written(size, data)
            hand_us.append(1e6 / hand)
            ratios[name].append(with_trainwell(size, data, val, change) / hand)
    step_us = statistics.median(hand_us)
    print(f"[ablation] tiny job, {steps} steps, {repeats} repeats, whole runs; hand-written {step_us:.0f} µs/step")
    for name, values in ratios.items():
        ratio = statistics.median(values)
        print(f"  {name:28s} ratio {ratio:.3f} ≈ {step_us * (1 / ratio - 1):.0f} µs/step over the hand loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "wide", "both"], default="both")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ablate", action="store_true", help="where the tiny job's overhead goes")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.ablate:
        ablation(args.steps, args.repeats)
        return
    for name in ("tiny", "wide") if args.size == "both" else (args.size,):
        run_size(name, args.steps if name == "tiny" else max(100, args.steps // 5), args.repeats)


if __name__ == "__main__":
    main()
