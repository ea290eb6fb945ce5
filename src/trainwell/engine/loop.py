"""The training loop: ``fit`` → epochs → accumulation groups → ``train_step(group)``, each component called by name.

Where does the learning rate change? ``engine.step.optimizer_step`` → ``scheduler.step()`` after an applied step (the
curve: ``engine.schedule``). Where is the best checkpoint chosen? ``BestTracker.update`` (``engine/best.py``), called
from ``Trainer._evaluate_and_save``. Where are validation samples gathered? ``engine.evaluation.gather_results``.
Where is a loss component logged? ``Trainer._log_train`` (``loss/<name>``). What does a checkpoint hold?
``self.run_state.parts`` (``engine/checkpoint/state.py``). Where do loss values reach the host? ``_log_train``, once
per ``train.log_every``; never in between. The doctor (``trainwell.doctor.live``) only observes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch

from trainwell.engine import distributed as D
from trainwell.engine.amp import autocast
from trainwell.engine.checkpoint import BEST, LAST, TrainState
from trainwell.engine.checkpoint.rng import loader_seed
from trainwell.engine.evaluation import EvalResult, evaluate
from trainwell.engine.logging import ProgressBar, epoch_line
from trainwell.engine.nonfinite import NonFiniteLossError
from trainwell.engine.optim import group_hyperparameters
from trainwell.engine.profiling import StepProfiler
from trainwell.engine.setup import RunComponents
from trainwell.engine.signals import TrainingInterrupted
from trainwell.engine.step import optimizer_step
from trainwell.engine.tensors import move_to_device

_NO_OP = contextlib.nullcontext()
"""A reusable do-nothing context (no object per step on the hot path)."""


@dataclass(frozen=True)
class FitResult:
    """What ``fit`` hands back: the run directory, the final state and the last validation metrics."""

    run_dir: Path | None
    state: TrainState
    metrics: dict[str, float]


class Trainer(RunComponents):
    """Trains one run: ``fit()``.

    ``Trainer(cfg, task, env=None, write_outputs=True, callbacks=())`` builds every component once
    (:class:`~trainwell.engine.setup.RunComponents`: model, optimizer, schedule, data, checkpoints, doctor); this
    class is the loop that calls them.
    """

    # -- the loop -----------------------------------------------------------------------------
    def fit(self) -> FitResult:
        """Train for the plan's epochs / ``train.max_steps``, evaluating and checkpointing as configured.

        Raises:
            TrainingInterrupted: SIGTERM / SIGINT / SIGUSR1 stopped the run; ``last.pt`` holds that step.
            NonFiniteLossError: the loss went NaN/Inf under ``diagnostics.nonfinite=stop``.
        """
        started = time.perf_counter()
        for line in self.start_banner():
            self.log.info(line)
        self.stop_request.install()
        self.doctor.on_fit_start(resumed=self.state.global_step > 0 or self.state.mid_epoch)
        self._status("running")
        profile = self.cfg.train.profile if self.env.is_main else None  # rank 0 profiles
        self.profiler = StepProfiler(profile, self.out.run_dir, self.device, self.log)
        try:
            for epoch in range(self.state.epoch, self.plan.epochs):
                if self.budget_spent():
                    break
                self._run_epoch(epoch)
        except TrainingInterrupted as stop:
            self._status("stopped_by_signal", signal=stop.signum)
            raise
        except NonFiniteLossError as err:
            self._status("nonfinite_stop", error=str(err))
            raise
        except BaseException as err:
            self._status("crashed", error=f"{type(err).__name__}: {err}")
            raise
        else:
            self._status(self.stopping.reason or "finished", **self.stopping.details())
        finally:
            self.profiler.finish()
            self.stop_request.uninstall()
            self.doctor.finish([self.nonfinite.finding] if self.nonfinite.finding else [])
            self.close()  # metrics writers, then the run directory's lock: on every exit path
        for line in self.end_banner(time.perf_counter() - started):
            self.log.info(line)
        return FitResult(run_dir=self.out.run_dir, state=self.state, metrics=self.state.last_metrics)

    def _run_epoch(self, epoch: int) -> None:
        """One epoch: train, then (at its end) evaluate, checkpoint and summarise."""
        epoch_started = time.perf_counter()
        self.augmentation.apply(epoch)
        self.task.on_epoch_start(epoch)
        train_loss = self.train_epoch(epoch)
        self.nonfinite.check([train_loss], None, self.state.global_step, describe=self.env.is_main)
        self.doctor.on_epoch_end()
        if self.stop_request.agreed:  # a signal ended the epoch early, at an optimizer-step boundary
            self._stop_on_signal(save=True)
        complete = self.state.batch_in_epoch >= self.plan.batches_per_epoch
        # Step intervals whose step is the epoch's last were left for here (read before the position resets).
        eval_step, periodic_step = self._fires(self.plan.eval_every), self._fires(self.plan.periodic)
        if complete:
            self.state.epoch, self.state.batch_in_epoch = epoch + 1, 0
        last = self.budget_spent() or self.state.epoch == self.plan.epochs
        evaluate_now = last or eval_step or (complete and self.plan.eval_every.fires_at_epoch_end(epoch + 1))
        evaluate_now = evaluate_now and not self.stopping.evaluated_at(self.state.global_step)  # early stop: done
        periodic = f"step_{self.state.global_step:08d}.pt" if periodic_step else None
        if complete and self.plan.periodic.fires_at_epoch_end(epoch + 1):
            periodic = f"epoch_{epoch + 1:04d}.pt"
        result = self._evaluate_and_save(epoch, evaluate=evaluate_now, periodic=periodic)
        units = {name: spec.unit for name, spec in self.task.metric_specs().items()}
        lr = self.scheduler.get_last_lr()[0]
        line = epoch_line(
            epoch=epoch, epochs=self.plan.epochs, train_loss=train_loss, metrics=result, units=units, lr=lr
        )
        self.log.info(f"{line} | {time.perf_counter() - epoch_started:.1f} s")
        if not last and self.stop_request.should_stop(global_step=self.state.global_step, sync=True):
            self._stop_on_signal(save=False)  # last.pt was just written

    def train_epoch(self, epoch: int) -> float:
        """Train on this process's batches of ``epoch`` (from where a resumed run stopped); the epoch's mean loss."""
        self.train_model.train()
        self.batches.set_epoch(epoch, start=self.state.batch_in_epoch)
        # The DataLoader's own generator seeds its workers: a resumed epoch draws the same worker seeds.
        self.loader_generator.manual_seed(loader_seed(self.cfg.train.seed, epoch, self.env.rank))
        if not self.state.mid_epoch:  # a resumed epoch keeps the sums restored from the checkpoint
            self.meter.reset()
        bar = ProgressBar(
            total=self.plan.batches_per_epoch,
            description=f"epoch {epoch + 1}/{self.plan.epochs}",
            mode=self.cfg.train.progress_bar,
            enabled=self.env.is_main,
        )
        bar.update(self.state.batch_in_epoch)
        for group in self._accumulation_groups():
            self.train_step(group, epoch)
            bar.update(len(group))
            if self._after_step(epoch, bar):
                break
        bar.close()
        sums, count = self.meter.read_total()
        losses = [v for k, v in sums.items() if k.startswith("loss/")]
        # The mean over all processes, like the log lines (one small collective per epoch).
        mean = torch.tensor([sum(losses) / max(1, count)], dtype=torch.float64)
        return float(D.all_reduce_mean(mean, self.env)[0])

    def _accumulation_groups(self) -> Iterator[list[tuple[int, Any]]]:
        """The epoch's micro-batches ``(index in epoch, batch)``, grouped by optimizer step."""
        accum, total = self.cfg.train.grad_accum_steps, self.plan.batches_per_epoch
        group: list[tuple[int, Any]] = []
        micro = self.state.batch_in_epoch
        batches = iter(self.loader)
        while True:
            wait_started = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                return
            self.stats.data_wait_s += time.perf_counter() - wait_started
            group.append((micro, batch))
            micro += 1
            # A group ends every `accum` micro-batches, and at the epoch's end (a shorter last group).
            if micro % accum == 0 or micro == total:
                yield group
                group = []

    def train_step(self, group: list[tuple[int, Any]], epoch: int) -> None:
        """One optimizer step over an accumulation group: forward + backward per micro-batch, then the update."""
        size = len(group)
        for k, (micro, batch) in enumerate(group):
            self.doctor.maybe_inspect_batch(batch, epoch, micro)  # first batches only (their host reads are fine)
            if self.device.type != "cpu":
                batch = move_to_device(batch, self.device, channels_last=self.cfg.train.channels_last)
            self.doctor.maybe_debug_losses(self.model, batch)  # only under diagnostics.debug_loss
            # Skip DDP's gradient all-reduce on micro-batches that do not end the group.
            no_sync = self.ddp_model.no_sync() if self.env.is_distributed and k < size - 1 else _NO_OP  # type: ignore[operator]
            with no_sync:
                names, total, stacked = self._forward(batch)
                if size > 1:
                    total = total / size  # k micro-batches must give the gradient of one k-times larger batch
                self.scaler.scale(total).backward()
            if self.nonfinite.observe(names, stacked, epoch=epoch, micro=micro, step=self.state.global_step + 1):
                self.meter.add(names, stacked)
            self.state.batch_in_epoch = micro + 1
        should_log = self._fires(self.plan.log_every, ahead=1)
        if should_log:  # the LR (and β1/momentum) this update uses; the scheduler moves them on after it
            self._used_hyper = group_hyperparameters(self.optimizer, self.group_names)
        # ‖Δw‖/‖w‖ on logging steps (and at the peak LR): a parameter copy, no sync
        with self.doctor.watch_update(self.model, step=self.state.global_step + 1, log_step=should_log):
            optimizer_step(
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
                clip_grad_norm=self.cfg.train.clip_grad_norm,
                stats=self.stats,
                measure_norm=should_log,
                skip_nonfinite=self.nonfinite.skips,
                step_on_skipped=self.cfg.schedule.step_on_skipped,
            )
        self.state.global_step += 1
        self.maybe_update_ema()  # train.ema: two foreach kernels on update steps, no host read

    def _forward(self, batch: Any) -> tuple[tuple[str, ...], torch.Tensor, torch.Tensor]:
        """``(names, total, stacked)`` of the task's losses on ``batch`` (:meth:`LossCollector.collect`)."""
        with autocast(self.device, self.amp_dtype):
            output = self.task.compute_losses(self.train_model, batch)
        return self.losses.collect(output)

    def _fires(self, interval: Any, ahead: int = 0) -> bool:
        """Whether ``interval`` fires after the step ``ahead`` steps from now (0: the step just taken)."""
        # Optimizer steps done in this epoch once the current group is applied (its last group may be shorter).
        step_in_epoch = -(-self.state.batch_in_epoch // self.cfg.train.grad_accum_steps)
        return interval.fires_at_step(self.state.global_step + ahead, step_in_epoch)

    def _after_step(self, epoch: int, bar: ProgressBar) -> bool:
        """Logging, mid-epoch evaluation and checkpoints, callbacks, signals; ``True`` ends the epoch now."""
        self.profiler.step()
        logged = self._fires(self.plan.log_every)
        if logged:
            self._log_train(epoch, bar)
        at_epoch_end = self.state.batch_in_epoch >= self.plan.batches_per_epoch
        if not at_epoch_end and not self.budget_spent():
            evaluate_now = self._fires(self.plan.eval_every)
            periodic = self._fires(self.plan.periodic)
            if evaluate_now or periodic:
                self._evaluate_and_save(
                    epoch, evaluate=evaluate_now, periodic=f"step_{self.state.global_step:08d}.pt" if periodic else None
                )
            elif self._fires(self.plan.latest) or (logged and self.wall_clock.due()):
                self._save()
        for callback in self.callbacks:
            callback.on_step_end(self)
        # Processes agree on a signal only on logging steps (they sync there anyway).
        return self.budget_spent() or self.stop_request.should_stop(global_step=self.state.global_step, sync=logged)

    def budget_spent(self) -> bool:
        """Whether the plan's steps are all taken, or early stopping / ``train.max_time`` ends the run here."""
        return self.state.global_step >= self.plan.total_steps or self.stopping.should_stop(self.state.global_step)

    # -- logging ------------------------------------------------------------------------------
    def _log_train(self, epoch: int, bar: ProgressBar) -> dict[str, Any]:
        """One log line + ``metrics.jsonl`` record: interval means of every component and logged value (one host
        sync), every param group's LR, grad norm, throughput. Returns the record (every process)."""
        sums, count = self.meter.read_interval()  # host sync: once per log_every steps
        sums.update(self.losses.host_interval_sums())
        names = list(sums)
        means = torch.tensor([sums[n] / max(1, count) for n in names], dtype=torch.float64)
        values = dict(zip(names, D.all_reduce_mean(means, self.env).tolist(), strict=True))
        components = {n[5:]: v for n, v in values.items() if n.startswith("loss/")}
        logged = {n: v for n, v in values.items() if not n.startswith("loss/")}
        used = self._used_hyper or group_hyperparameters(self.optimizer, self.group_names)
        lrs = used.lrs
        record: dict[str, Any] = {"loss": sum(components.values()), **values, "lr": next(iter(lrs.values()))}
        if len(lrs) > 1:
            record.update({f"lr/{name}": lr for name, lr in lrs.items()})
        if self.scheduler_moves_momentum:  # OneCycle's β1 / momentum, as this update used it
            record.update(used.momentum_record())
        record.update(self.stats.read_and_reset(self.cfg.train.clip_grad_norm))
        record.update(self.doctor.interval_values())  # update_ratio
        bar.set_values({"loss": record["loss"], **{n: logged[n] for n in self.losses.progress_names if n in logged}})
        if self.env.is_main:
            self.log.info(self.format_train_line(epoch, record, components, logged, lrs))
            self.out.metrics.write("train", epoch + 1, self.state.global_step, record, "Train")
        # Every process decides together (the values are all-reduced): a non-finite loss stops all of them.
        losses = [record["loss"], *components.values()]
        self.nonfinite.check(losses, record.get("grad_norm"), self.state.global_step, describe=True)
        self.doctor.on_train_log(record, self.model, epoch=epoch, step=self.state.global_step)
        return record

    # -- evaluation and checkpoints -------------------------------------------------------------
    def evaluate(self, epoch: int | None = None) -> EvalResult:
        """Score the validation set exactly once across all processes and log the metrics."""
        result = evaluate(
            task=self.task,
            model=self.eval_model(),  # a bare module: no collectives inside the evaluation loop
            dataset=self.val_set,
            evaluator=self.task.build_evaluator(),
            batch_size=self.cfg.eval.batch_size,
            device=self.device,
            env=self.env,
            autocast=lambda: autocast(self.device, self.amp_dtype),
            num_workers=self.cfg.data.num_workers,
            log=self.log.info,
            progress_mode=self.cfg.train.progress_bar,
            outputs_dir=self.out.run_dir / "predictions" if self.out.is_writer and self.out.run_dir else None,
        )
        self.state.last_metrics = dict(result.metrics)
        if epoch is not None:
            record = {"num_samples": result.num_samples, **result.metrics}
            self.out.metrics.write("val", epoch + 1, self.state.global_step, record, "Val")
            self.doctor.on_validation({"kind": "val", "epoch": epoch + 1, "step": self.state.global_step, **record})
            self.doctor.report(result.findings)  # the evaluator's own observations (empty captions, …)
        return result

    def _evaluate_and_save(self, epoch: int, *, evaluate: bool, periodic: str | None) -> dict[str, float] | None:
        """Evaluate (if due), choose the best (one place: ``BestTracker.update``), write the checkpoints."""
        result = self.evaluate(epoch) if evaluate else None
        best = result is not None and self.best.update(result.metrics, epoch=epoch + 1, step=self.state.global_step)
        self._save(periodic=periodic, best=best)
        if best and self.out.is_writer:
            self.log.info(
                f"Saved best model ({self.best.rule} = {self.state.best_value:.6g}) to {self.checkpoint_dir / BEST}"
            )
        return result.metrics if result is not None else None

    def _save(self, *, periodic: str | None = None, best: bool = False) -> Path | None:
        """``last.pt`` (+ a periodic file, + ``best.pt``); every process calls it (it gathers the RNG states)."""
        if self.checkpoints is None:
            return None
        payload = self.checkpoint_payload()  # refuses a NaN/Inf state: the previous last.pt stays the newest
        self.wall_clock.saved()
        if not self.out.is_writer:
            return None
        with self.stop_request.saving():  # a second Ctrl-C waits for the file to be complete
            self.checkpoints.save(payload, periodic=periodic, best=best, scored=self.best.take_scored())
        return self.checkpoint_dir / LAST

    def _stop_on_signal(self, *, save: bool) -> NoReturn:
        """Write ``last.pt`` at this step boundary (unless the epoch end just did) and stop every process."""
        path = self._save() if save else (self.checkpoint_dir / LAST if self.out.is_writer else None)
        self.stop_request.wait_for_all()  # no process exits (and gets the others killed) while rank 0 writes
        assert self.stop_request.agreed is not None
        stop = TrainingInterrupted(self.stop_request.agreed, path, self.position(), self.state.global_step)
        if self.env.is_main:
            self.log.warning(str(stop))
        raise stop
