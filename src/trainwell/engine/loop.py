"""The training loop: ``fit`` → epochs → accumulation groups → ``train_step(group)``, each component called by name.

Where does the learning rate change? ``engine.step.optimizer_step`` → ``scheduler.step()`` after an applied step (the
curve: ``engine.schedule``). Where is the best checkpoint chosen? ``BestTracker.update`` (``engine/best.py``), called
from ``Trainer._evaluate_and_save``. Where are validation samples gathered? ``engine.evaluation.gather_results``.
Where is a loss component logged? ``Trainer._log_train`` (``loss/<name>``). What does a checkpoint hold?
``Run.run_state.parts`` (``engine/checkpoint/state.py``). Where do loss values reach the host? ``_log_train``, once
per ``train.log_every``; never in between. The doctor (``trainwell.doctor.live``) only observes.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, NoReturn

import torch

from trainwell.engine import distributed as D
from trainwell.engine.amp import autocast
from trainwell.engine.checkpoint.rng import loader_seed
from trainwell.engine.data import accumulation_groups
from trainwell.engine.evaluation import EvalResult, evaluate
from trainwell.engine.fsdp import gradient_sync_paused
from trainwell.engine.intervals import Interval
from trainwell.engine.logging import ProgressBar
from trainwell.engine.losses import split_loss_values
from trainwell.engine.optim import GroupHyperparameters, group_hyperparameters
from trainwell.engine.profiling import StepProfiler
from trainwell.engine.run import FitResult, Run
from trainwell.engine.signals import TrainingInterrupted
from trainwell.engine.step import optimizer_step
from trainwell.engine.tensors import move_to_device

_NO_OP = contextlib.nullcontext()
"""A reusable do-nothing context (no object per step on the hot path)."""


class Trainer:
    """Trains one run: ``Trainer(run).fit()``.

    ``run`` holds every part, made once by ``build_run(cfg, task)`` (``engine/build.py``; ``trainwell.build_run``
    attaches the doctor): model, optimizer, schedule, data, checkpoints, observer. This class is the loop only.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self._used_hyper: GroupHyperparameters | None = None  # the LR / β1 of the update a log line reports
        self.profiler: StepProfiler | None = None

    # -- the loop -----------------------------------------------------------------------------
    def fit(self) -> FitResult:
        """Train for the plan's epochs / ``train.max_steps``, evaluating and checkpointing as configured.

        Raises:
            TrainingInterrupted: SIGTERM / SIGINT / SIGUSR1 stopped the run; ``last.pt`` holds that step.
            NonFiniteLossError: the loss went NaN/Inf under ``diagnostics.nonfinite=stop``.
        """
        run = self.run
        started = time.perf_counter()
        for line in run.start_banner():
            run.log.info(line)
        profile = run.cfg.train.profile if run.env.is_main else None  # rank 0 profiles
        self.profiler = StepProfiler(profile, run.out.run_dir, run.device, run.log)
        with run.recording_outcome(), self.profiler:  # status.json on every exit path; the lock goes back
            for epoch in range(run.state.epoch, run.plan.epochs):
                if self.budget_spent():
                    break
                self._run_epoch(epoch)
        for line in run.end_banner(time.perf_counter() - started):
            run.log.info(line)
        return FitResult(run_dir=run.out.run_dir, state=run.state, metrics=run.state.last_metrics)

    def _run_epoch(self, epoch: int) -> None:
        """One epoch: train, then (at its end) evaluate, checkpoint and summarise."""
        run = self.run
        epoch_started = time.perf_counter()
        run.augmentation.apply(epoch)
        run.task.on_epoch_start(epoch)
        train_loss = self.train_epoch(epoch)
        run.nonfinite.check([train_loss], None, run.state.global_step, describe=run.env.is_main)
        run.doctor.on_epoch_end()
        if run.stop_request.agreed:  # a signal ended the epoch early, at an optimizer-step boundary
            self._stop_on_signal(save=True)
        complete = run.state.batch_in_epoch >= run.plan.batches_per_epoch
        # Step intervals whose step is the epoch's last were left for here (read before the position resets).
        eval_step, periodic_step = self._fires(run.plan.eval_every), self._fires(run.plan.periodic)
        if complete:
            run.state.epoch, run.state.batch_in_epoch = epoch + 1, 0
        last = self.budget_spent() or run.state.epoch == run.plan.epochs
        evaluate_now = last or eval_step or (complete and run.plan.eval_every.fires_at_epoch_end(epoch + 1))
        evaluate_now = evaluate_now and not run.stopping.evaluated_at(run.state.global_step)  # early stop: done
        periodic = f"step_{run.state.global_step:08d}.pt" if periodic_step else None
        if complete and run.plan.periodic.fires_at_epoch_end(epoch + 1):
            periodic = f"epoch_{epoch + 1:04d}.pt"
        result = self._evaluate_and_save(epoch, evaluate=evaluate_now, periodic=periodic)
        run.log.info(f"{run.epoch_line(epoch, train_loss, result)} | {time.perf_counter() - epoch_started:.1f} s")
        if not last and run.stop_request.should_stop(global_step=run.state.global_step, sync=True):
            self._stop_on_signal(save=False)  # last.pt was just written

    def train_epoch(self, epoch: int) -> float:
        """Train on this process's batches of ``epoch`` (from where a resumed run stopped); the epoch's mean loss."""
        run = self.run
        run.train_model.train()
        run.batches.set_epoch(epoch, start=run.state.batch_in_epoch)
        # The DataLoader's own generator seeds its workers: a resumed epoch draws the same worker seeds.
        run.loader_generator.manual_seed(loader_seed(run.cfg.train.seed, epoch, run.env.rank))
        if not run.state.mid_epoch:  # a resumed epoch keeps the sums restored from the checkpoint
            run.meter.reset()
        bar = ProgressBar(
            total=run.plan.batches_per_epoch,
            description=f"epoch {epoch + 1}/{run.plan.epochs}",
            mode=run.cfg.train.progress_bar,
            enabled=run.env.is_main,
        )
        bar.update(run.state.batch_in_epoch)
        accum, start = run.cfg.train.grad_accum_steps, run.state.batch_in_epoch
        for group in accumulation_groups(run.loader, start, accum, run.plan.batches_per_epoch, run.stats):
            self.train_step(group, epoch)
            bar.update(len(group))
            if self._after_step(epoch, bar):
                break
        bar.close()
        sums, count = run.meter.read_total()
        components, _ = split_loss_values(sums)
        # The mean over all processes, like the log lines (one small collective per epoch).
        mean = torch.tensor([sum(components.values()) / max(1, count)], dtype=torch.float64)
        return float(D.all_reduce_mean(mean, run.env)[0])

    def train_step(self, group: list[tuple[int, Any]], epoch: int) -> None:
        """One optimizer step over an accumulation group: forward + backward per micro-batch, then the update."""
        run = self.run
        size = len(group)
        for k, (micro, batch) in enumerate(group):
            run.doctor.maybe_inspect_batch(batch, epoch, micro)  # first batches only (their host reads are fine)
            if run.device.type != "cpu":
                batch = move_to_device(batch, run.device, channels_last=run.cfg.train.channels_last)
            run.doctor.maybe_debug_losses(run.model, batch)  # only under diagnostics.debug_loss
            # No gradient all-reduce (DDP) / reduce-scatter (FSDP) on micro-batches that do not end the group.
            no_sync = gradient_sync_paused(run.ddp_model) if run.env.is_distributed and k < size - 1 else _NO_OP
            with no_sync:
                names, total, stacked = self._forward(batch)
                if run.state.global_step == 0:  # the untrained model's loss: the doctor's reference, no recompute
                    run.doctor.note_initial_loss(total)
                if size > 1:
                    total = total / size  # k micro-batches must give the gradient of one k-times larger batch
                run.scaler.scale(total).backward()  # type: ignore[no-untyped-call]
            if run.nonfinite.observe(names, stacked, epoch=epoch, micro=micro, step=run.state.global_step + 1):
                run.meter.add(names, stacked)
            run.state.batch_in_epoch = micro + 1
        should_log = self._fires(run.plan.log_every, ahead=1)
        if should_log:  # the LR (and β1/momentum) this update uses; the scheduler moves them on after it
            self._used_hyper = group_hyperparameters(run.optimizer, run.group_names)
        # ‖Δw‖/‖w‖ on logging steps (and at the peak LR): a parameter copy, no sync
        with run.doctor.watch_update(run.model, step=run.state.global_step + 1, log_step=should_log):
            optimizer_step(
                model=run.model,
                optimizer=run.optimizer,
                scheduler=run.scheduler,
                scaler=run.scaler,
                clip_grad_norm=run.cfg.train.clip_grad_norm,
                stats=run.stats,
                measure_norm=should_log,
                skip_nonfinite=run.nonfinite.skips,
                step_on_skipped=run.cfg.schedule.step_on_skipped,
            )
        run.state.global_step += 1
        run.maybe_update_ema()  # train.ema: two foreach kernels on update steps, no host read

    def _forward(self, batch: Any) -> tuple[tuple[str, ...], torch.Tensor, torch.Tensor]:
        """``(names, total, stacked)`` of the task's losses on ``batch`` (:meth:`LossCollector.collect`)."""
        run = self.run
        with autocast(run.device, run.amp_dtype):
            output = run.task.compute_losses(run.train_model, batch)
        return run.losses.collect(output)

    def _fires(self, interval: Interval, ahead: int = 0) -> bool:
        """Whether ``interval`` fires after the step ``ahead`` steps from now (0: the step just taken)."""
        run = self.run
        # Optimizer steps done in this epoch once the current group is applied (its last group may be shorter).
        step_in_epoch = -(-run.state.batch_in_epoch // run.cfg.train.grad_accum_steps)
        return interval.fires_at_step(run.state.global_step + ahead, step_in_epoch)

    def _after_step(self, epoch: int, bar: ProgressBar) -> bool:
        """Logging, mid-epoch evaluation and checkpoints, callbacks, signals; ``True`` ends the epoch now."""
        run = self.run
        if self.profiler is not None:
            self.profiler.step()
        logged = self._fires(run.plan.log_every)
        if logged:
            self._log_train(epoch, bar)
        at_epoch_end = run.state.batch_in_epoch >= run.plan.batches_per_epoch
        spent = self.budget_spent()
        if not at_epoch_end and not spent:
            evaluate_now = self._fires(run.plan.eval_every)
            periodic = self._fires(run.plan.periodic)
            if evaluate_now or periodic:
                self._evaluate_and_save(
                    epoch, evaluate=evaluate_now, periodic=f"step_{run.state.global_step:08d}.pt" if periodic else None
                )
                spent = self.budget_spent()  # an evaluation may have decided an early stop; saves take time
            elif self._fires(run.plan.latest) or (logged and run.wall_clock.due()):
                self.run.save_checkpoint()
                spent = self.budget_spent()
        for callback in run.callbacks:
            callback.on_step_end(run)
        if run.callbacks:
            spent = self.budget_spent()
        # Processes agree on a signal only on logging steps (they sync there anyway).
        return spent or run.stop_request.should_stop(global_step=run.state.global_step, sync=logged)

    def budget_spent(self) -> bool:
        """Whether the plan's steps are all taken, or early stopping / ``train.max_time`` ends the run here."""
        run = self.run
        return run.state.global_step >= run.plan.total_steps or run.stopping.should_stop(run.state.global_step)

    # -- logging ------------------------------------------------------------------------------
    def _log_train(self, epoch: int, bar: ProgressBar) -> dict[str, Any]:
        """One log line + ``metrics.jsonl`` record: interval means of every component and logged value (one host
        sync), every param group's LR, grad norm, throughput. Returns the record (every process)."""
        run = self.run
        sums, count = run.meter.read_interval()  # host sync: once per log_every steps
        sums.update(run.losses.host_interval_sums())
        names = list(sums)
        means = torch.tensor([sums[n] / max(1, count) for n in names], dtype=torch.float64)
        values = dict(zip(names, D.all_reduce_mean(means, run.env).tolist(), strict=True))
        components, logged = split_loss_values(values)
        used = self._used_hyper or group_hyperparameters(run.optimizer, run.group_names)
        lrs = used.lrs
        record: dict[str, Any] = {
            "loss": sum(components.values()),
            **values,
            **used.record(run.scheduler_moves_momentum),
        }
        record.update(run.stats.read_and_reset(run.cfg.train.clip_grad_norm))
        record.update(run.doctor.interval_values())  # update_ratio
        bar.set_values({"loss": record["loss"], **{n: logged[n] for n in run.losses.progress_names if n in logged}})
        if run.env.is_main:
            run.log.info(run.format_train_line(epoch, record, components, logged, lrs))
            run.out.metrics.write("train", epoch + 1, run.state.global_step, record, "Train")
        # Every process decides together (the values are all-reduced): a non-finite loss stops all of them.
        losses = [record["loss"], *components.values()]
        run.nonfinite.check(losses, record.get("grad_norm"), run.state.global_step, describe=True)
        run.doctor.on_train_log(record, run.model, epoch=epoch, step=run.state.global_step)
        return record

    # -- evaluation and checkpoints -------------------------------------------------------------
    def evaluate(self, epoch: int | None = None) -> EvalResult:
        """Score the validation set exactly once across all processes and log the metrics."""
        run = self.run
        result = evaluate(
            task=run.task,
            model=run.eval_model(),  # a bare module: no collectives inside the evaluation loop
            dataset=run.val_set,
            evaluator=run.task.build_evaluator(),
            batch_size=run.cfg.eval.batch_size,
            device=run.device,
            env=run.env,
            autocast=lambda: autocast(run.device, run.amp_dtype),
            num_workers=run.cfg.data.num_workers,
            log=run.log.info,
            progress_mode=run.cfg.train.progress_bar,
            outputs_dir=run.out.run_dir / "predictions" if run.out.is_writer and run.out.run_dir else None,
        )
        run.state.last_metrics = dict(result.metrics)
        if epoch is not None:
            record = {"num_samples": result.num_samples, **result.metrics}
            run.out.metrics.write("val", epoch + 1, run.state.global_step, record, "Val")
            run.doctor.on_validation({"kind": "val", "epoch": epoch + 1, "step": run.state.global_step, **record})
            run.doctor.report(result.findings)  # the evaluator's own observations (empty captions, …)
        return result

    def _evaluate_and_save(self, epoch: int, *, evaluate: bool, periodic: str | None) -> dict[str, float] | None:
        """Evaluate (if due), choose the best (one place: ``BestTracker.update``), write the checkpoints."""
        run = self.run
        result = self.evaluate(epoch) if evaluate else None
        best = result is not None and run.best.update(result.metrics, epoch=epoch + 1, step=run.state.global_step)
        self.run.save_checkpoint(periodic=periodic, best=best)
        if best and run.out.is_writer:
            run.log.info(
                f"Saved best model ({run.best.rule} = {run.state.best_value:.6g}) to {run.written_checkpoint('best')}"
            )
        return result.metrics if result is not None else None

    def _stop_on_signal(self, *, save: bool) -> NoReturn:
        """Write ``last.pt`` at this step boundary (unless the epoch end just did) and stop every process."""
        run = self.run
        path = self.run.save_checkpoint() if save else run.written_checkpoint("last")
        run.stop_request.wait_for_all()  # no process exits (and gets the others killed) while rank 0 writes
        assert run.stop_request.agreed is not None
        stop = TrainingInterrupted(run.stop_request.agreed, path, run.position(), run.state.global_step)
        if run.env.is_main:
            run.log.warning(str(stop))
        raise stop
