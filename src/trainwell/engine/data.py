"""The training batches of each process: shuffled fixed-size batches or the task's own, sharded exactly.

Every epoch's batches are a pure function of ``(train.seed, epoch)`` (and, for a task's batch sampler, of
what it computes from them), so a resumed run rebuilds the epoch and skips the batches already done, and a
non-finite batch can be re-read by index.

* Default: one global permutation of the dataset, padded by wrapping to a multiple of the world size, dealt
  ``rank::world_size`` (so W processes with batch B/W see the samples one process with batch B would), then
  cut into per-process batches of ``train.batch_size``; ``data.drop_last`` drops each process's last,
  incomplete batch.
* ``Task.build_batch_sampler``: the list of all micro-batches of the epoch; batch ``i`` goes to process
  ``i % world_size``, and a tail that would leave some process without a batch is dropped (every process must
  take the same number of steps, or DDP hangs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainwell.config.schema import ExperimentConfig
from trainwell.engine.distributed import DistEnv, require_same_on_all_ranks
from trainwell.engine.meters import StepStats
from trainwell.engine.task import Task, require_capability

BatchPlan = Callable[[int], Sequence[list[int]] | None]
"""``epoch → all micro-batches of the epoch (every process's)``: a task's batch sampler; ``None`` for an epoch means
shuffled fixed-size batches (as :meth:`Task.build_batch_sampler` documents)."""


class TrainBatches(Sampler[list[int]]):
    """This process's training batches of the current epoch, from ``start`` on (a DataLoader batch sampler)."""

    def __init__(
        self,
        num_samples: int,
        *,
        batch_size: int,
        seed: int,
        env: DistEnv,
        drop_last: bool = False,
        plan: BatchPlan | None = None,
    ) -> None:
        if num_samples <= 0:
            raise ValueError(f"The training set is empty (len {num_samples}); nothing to train on.")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.env = env
        self.drop_last = drop_last
        self.plan = plan
        self.epoch = 0
        self.start = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch; begin ``start`` batches into it (a resumed epoch)."""
        self.epoch = epoch
        self.start = start

    def batches(self, epoch: int) -> list[list[int]]:
        """All of this process's batches of ``epoch`` (cached for the current epoch)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        everyone = self.plan(epoch) if self.plan is not None else None
        mine = self._deal(epoch, everyone) if everyone is not None else self._default(epoch)
        self._cache = (epoch, mine)
        return mine

    def _default(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_samples, generator=generator)
        world = self.env.world_size
        per_process = -(-self.num_samples // world)
        if per_process * world > self.num_samples:
            # Wrap around (several times when the set is smaller than the number of processes).
            order = order.repeat(-(-per_process * world // self.num_samples))[: per_process * world]
        shard = order[self.env.rank :: world].tolist()
        batches = [shard[i : i + self.batch_size] for i in range(0, len(shard), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def _deal(self, epoch: int, planned: Sequence[list[int]]) -> list[list[int]]:
        everyone = [list(map(int, batch)) for batch in planned]
        usable = len(everyone) - len(everyone) % self.env.world_size
        for i, batch in enumerate(everyone):
            bad = [j for j in batch if not 0 <= j < self.num_samples]
            if bad or not batch:
                what = f"indices {bad[:5]} outside 0…{self.num_samples - 1}" if bad else "no index"
                raise ValueError(f"Task.build_batch_sampler: batch {i} of epoch {epoch} has {what}.")
        return everyone[self.env.rank : usable : self.env.world_size]

    def dropped_tail(self, epoch: int) -> int:
        """How many planned batches of ``epoch`` no process takes (task batch samplers only)."""
        everyone = self.plan(epoch) if self.plan is not None else None
        return 0 if everyone is None else len(everyone) % self.env.world_size

    def batch_indices(self, epoch: int, batch: int) -> list[int]:
        """Dataset indices of this process's batch ``batch`` of ``epoch`` (to re-read a bad batch)."""
        return list(self.batches(epoch)[batch])

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches(self.epoch)[self.start :])

    def __len__(self) -> int:
        return max(0, len(self.batches(self.epoch)) - self.start)


def build_train_loader(
    cfg: ExperimentConfig, task: Task, train_set: Dataset[Any], env: DistEnv, device: torch.device
) -> tuple[TrainBatches, DataLoader[Any], torch.Generator]:
    """The training batches of this process (:class:`TrainBatches`), the DataLoader over them and its generator
    (re-seeded every epoch by ``rng.loader_seed``, so a resumed epoch draws the same worker seeds)."""
    # Different lengths would give the processes different step counts: a hang, not an error.
    require_same_on_all_ranks(len(train_set), "len(train dataset)", env)  # type: ignore[arg-type]
    custom = type(task).build_batch_sampler is not Task.build_batch_sampler
    plan = (
        (lambda epoch: task.build_batch_sampler(train_set, cfg.train.batch_size, epoch, cfg.train.seed))
        if custom
        else None
    )
    batches = TrainBatches(
        len(train_set),  # type: ignore[arg-type]
        batch_size=cfg.train.batch_size,
        seed=cfg.train.seed,
        env=env,
        drop_last=cfg.data.drop_last,
        plan=plan,
    )
    # Workers hold copies of the dataset: with on_epoch_start the task changes it each epoch, so fresh workers.
    switches_augmentation = cfg.data.disable_augmentation_last_epochs > 0
    if switches_augmentation:
        require_capability(task, "set_augmentation", "data.disable_augmentation_last_epochs")
    epoch_hook = type(task).on_epoch_start is not Task.on_epoch_start or switches_augmentation
    generator = torch.Generator()
    loader = DataLoader(
        train_set,
        batch_sampler=batches,
        num_workers=cfg.data.num_workers,
        collate_fn=task.collate_fn(),
        pin_memory=cfg.data.pin_memory and device.type == "cuda",
        persistent_workers=cfg.data.persistent_workers and cfg.data.num_workers > 0 and not epoch_hook,
        generator=generator,
    )
    return batches, loader, generator


def accumulation_groups(
    loader: Iterable[Any], start: int, accum_steps: int, batches_per_epoch: int, stats: StepStats
) -> Iterator[list[tuple[int, Any]]]:
    """The epoch's micro-batches ``(index in epoch, batch)`` from ``start``, grouped by optimizer step.

    A group ends every ``accum_steps`` micro-batches and at the epoch's end (a shorter last group); the time
    spent waiting for the loader is added to ``stats.data_wait_s``.
    """
    group: list[tuple[int, Any]] = []
    micro = start
    batches = iter(loader)
    while True:
        wait_started = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            return
        stats.data_wait_s += time.perf_counter() - wait_started
        group.append((micro, batch))
        micro += 1
        if micro % accum_steps == 0 or micro == batches_per_epoch:
            yield group
            group = []
