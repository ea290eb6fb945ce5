"""The run's plan, resolved once the loader length and world size are known: steps, epochs and every interval.

It is printed in the start banner, so a budget or an interval that is not what the person meant shows before
the first step (``train.max_steps=1000`` with 125 steps per epoch: "1000 optimizer steps = 8 epochs").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from trainwell.config.schema import ExperimentConfig
from trainwell.engine.intervals import Interval, resolve_interval, resolve_milestone


class PlanError(ValueError):
    """The config cannot make a run of this data: a budget or a schedule that does not fit the resolved steps."""


@dataclass(frozen=True)
class RunPlan:
    """Step counts and intervals of one run (identical on every process)."""

    batches_per_epoch: int
    """Micro-batches per epoch per process."""
    steps_per_epoch: int
    """Optimizer steps per epoch (the last accumulation group of an epoch may be shorter)."""
    epochs: int
    total_steps: int
    """Exactly the optimizer steps that run; the schedule spans these."""
    log_every: Interval
    eval_every: Interval
    periodic: Interval
    """``epoch_NNNN.pt`` / ``step_NNNNNNNN.pt`` checkpoints."""
    latest: Interval
    """``last.pt`` inside an epoch."""
    milestones: tuple[int, ...] = ()
    epochs_from_budget: bool = False
    """``train.max_steps`` set the number of epochs (``train.epochs`` was not used)."""

    @classmethod
    def resolve(cls, cfg: ExperimentConfig, batches_per_epoch: int) -> RunPlan:
        """Resolve ``cfg``'s budget and intervals for ``batches_per_epoch``.

        Raises:
            PlanError: no batch per epoch, or a warmup longer than the whole run.
        """
        if batches_per_epoch <= 0:
            raise PlanError(
                "An epoch has no training batch on this process (is the training set smaller than "
                "train.batch_size with data.drop_last=true, or than the number of processes?)."
            )
        spe = -(-batches_per_epoch // cfg.train.grad_accum_steps)
        if cfg.train.max_steps is not None:
            total, epochs = cfg.train.max_steps, -(-cfg.train.max_steps // spe)
        else:
            total, epochs = spe * cfg.train.epochs, cfg.train.epochs
        _check_warmup_fits(cfg, total, spe)
        log = resolve_interval(cfg.train.log_every, spe)
        if log.epochs:  # "2ep" for logging: every 2 epochs' worth of steps
            log = Interval(steps=log.epochs * spe, text=f"every {log.epochs * spe} steps ({log.epochs} epochs)")
        eval_value = cfg.eval.every if cfg.eval.every is not None else f"{cfg.eval.every_epochs}ep"
        periodic_value = (
            cfg.checkpoint.every if cfg.checkpoint.every is not None else f"{cfg.checkpoint.every_epochs}ep"
        )
        latest_value = (
            cfg.checkpoint.latest_every
            if cfg.checkpoint.latest_every is not None
            else cfg.checkpoint.latest_every_steps
        )
        latest = resolve_interval(latest_value, spe)
        if latest.epochs:  # last.pt is written at every epoch end anyway
            latest = Interval()
        milestones = tuple(resolve_milestone(m, spe) for m in cfg.schedule.step_milestones)
        return cls(
            batches_per_epoch=batches_per_epoch,
            steps_per_epoch=spe,
            epochs=epochs,
            total_steps=total,
            log_every=log,
            eval_every=resolve_interval(eval_value, spe),
            periodic=resolve_interval(periodic_value, spe),
            latest=latest,
            milestones=milestones,
            epochs_from_budget=cfg.train.max_steps is not None,
        )

    def describe(self, cfg: ExperimentConfig) -> list[str]:
        """Banner lines: the budget, and each interval as resolved."""
        budget = f"{self.total_steps} optimizer steps = {self.epochs} epoch(s) of {self.steps_per_epoch} steps"
        if self.epochs_from_budget:
            last = self.total_steps - (self.epochs - 1) * self.steps_per_epoch
            budget += f" (train.max_steps; the last epoch runs {last} steps"
            budget += "; train.epochs is not used)" if cfg.train.epochs != self.epochs else ")"
        evaluation = "at the end" if self.eval_every.is_off else f"{self.eval_every.text} and at the end"
        latest = "" if self.latest.is_off else f", {self.latest.text}"
        return [
            f"plan: {budget}; {self.batches_per_epoch} micro-batches per epoch per process",
            f"plan: log {self.log_every.text}; evaluate {evaluation}; last.pt at epoch ends{latest}; "
            f"periodic checkpoints {self.periodic.text} (keep {cfg.checkpoint.keep})",
        ]


def _check_warmup_fits(cfg: ExperimentConfig, total_steps: int, steps_per_epoch: int) -> None:
    """A warmup longer than the run never reaches ``optim.lr`` and leaves no steps for the decay: refuse it."""
    warmup = cfg.schedule.warmup_steps
    if cfg.schedule.decay == "onecycle" or warmup <= total_steps:  # onecycle has its own rise (pct_start)
        return
    budget = (
        f"train.max_steps={cfg.train.max_steps}"
        if cfg.train.max_steps is not None
        else f"train.epochs={cfg.train.epochs} × {steps_per_epoch} optimizer steps per epoch"
    )
    raise PlanError(
        f"Config key 'schedule.warmup_steps' is {warmup}, more than the {total_steps} optimizer steps this run "
        f"takes ({budget}): the learning rate would never reach optim.lr. Lower schedule.warmup_steps to at most "
        f"{total_steps}, or train longer."
    )


def with_global_batch(cfg: ExperimentConfig, world_size: int) -> ExperimentConfig:
    """``cfg`` with ``train.batch_size`` derived from ``train.global_batch_size`` for ``world_size`` processes (a
    copy; ``cfg`` itself when the key is unset).

    Raises:
        PlanError: the global batch does not split into equal micro-batches over the processes and accumulation.
    """
    total = cfg.train.global_batch_size
    if total is None:
        return cfg
    parts = world_size * cfg.train.grad_accum_steps
    if total % parts:
        options = [w for w in range(1, min(total, 64) + 1) if total % (w * cfg.train.grad_accum_steps) == 0]
        raise PlanError(
            f"Config key 'train.global_batch_size' is {total}, which does not split into equal micro-batches over "
            f"{world_size} process(es) × train.grad_accum_steps={cfg.train.grad_accum_steps}. Run on a number of "
            f"processes in {options} (or change train.grad_accum_steps), or choose a global batch divisible by "
            f"{parts}."
        )
    train = dataclasses.replace(cfg.train, batch_size=total // parts)
    return dataclasses.replace(cfg, train=train)
