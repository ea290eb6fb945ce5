"""Single-process checks of the pieces that decide who sees which sample (no process group needed)."""

import pytest
import torch

from trainwell.engine.data import TrainBatches
from trainwell.engine.distributed import DistEnv, gather_rows, shard_range
from trainwell.engine.evaluation import CoverageError, gather_results, verify_coverage


def _shards(num_samples: int, world_size: int, epoch: int, seed: int = 7) -> list[list[int]]:
    shards = []
    for rank in range(world_size):
        batches = TrainBatches(num_samples, batch_size=1, seed=seed, env=DistEnv(rank=rank, world_size=world_size))
        batches.set_epoch(epoch)
        shards.append([i for batch in batches for i in batch])
        assert len(batches) == len(shards[-1])
    return shards


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_train_batches_global_batches_match_one_process(world_size: int) -> None:
    # W processes with per-process batch B/W take, at step k, exactly the samples of one process's batch k.
    per_process_batch, num_samples = 4, 120  # 120 = 10 global batches of 12, divisible by 1, 2, 3
    single = _shards(num_samples, 1, epoch=3)[0]
    shards = _shards(num_samples, world_size, epoch=3)
    global_batch = per_process_batch * world_size
    for k in range(num_samples // global_batch):
        union = sorted(i for s in shards for i in s[k * per_process_batch : (k + 1) * per_process_batch])
        assert union == sorted(single[k * global_batch : (k + 1) * global_batch])


def test_train_batches_is_a_function_of_seed_and_epoch() -> None:
    first = _shards(50, 2, epoch=0)
    assert _shards(50, 2, epoch=0) == first  # a restarted job sees the same order
    assert _shards(50, 2, epoch=1) != first
    assert _shards(50, 2, epoch=0, seed=8) != first
    assert sorted(first[0] + first[1]) == list(range(50))


@pytest.mark.parametrize(("num_samples", "world_size"), [(10, 3), (2, 5), (1, 4)])
def test_train_batches_pads_to_equal_shards(num_samples: int, world_size: int) -> None:
    shards = _shards(num_samples, world_size, epoch=0)
    assert len({len(s) for s in shards}) == 1  # DDP needs the same number of steps everywhere
    assert set().union(*map(set, shards)) == set(range(num_samples))


def test_train_batches_start_continues_mid_epoch_and_drop_last_drops_only_the_tail() -> None:
    batches = TrainBatches(40, batch_size=3, seed=1, env=DistEnv(rank=1, world_size=2))
    batches.set_epoch(2)
    full = list(batches)
    assert [len(b) for b in full] == [3] * 6 + [2]  # 20 samples per process
    batches.set_epoch(2, start=2)
    assert list(batches) == full[2:] and len(batches) == len(full) - 2
    dropping = TrainBatches(40, batch_size=3, seed=1, env=DistEnv(rank=1, world_size=2), drop_last=True)
    dropping.set_epoch(2)
    assert list(dropping) == full[:-1]


def test_a_batch_sampler_may_leave_an_epoch_to_the_default_shuffle() -> None:
    """``Task.build_batch_sampler`` may return ``None`` (documented): that epoch gets shuffled fixed-size batches."""
    env = DistEnv(rank=1, world_size=2)
    fixed = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]  # 5 global batches: the 5th is dropped, rank 1 takes 1 and 3

    def plan(epoch: int) -> list[list[int]] | None:
        return fixed if epoch % 2 == 0 else None

    planned = TrainBatches(10, batch_size=2, seed=3, env=env, plan=plan)
    default = TrainBatches(10, batch_size=2, seed=3, env=env)
    assert planned.batches(0) == [[2, 3], [6, 7]] and planned.dropped_tail(0) == 1
    assert planned.batches(1) == default.batches(1) and planned.dropped_tail(1) == 0
    planned.set_epoch(1)
    assert list(planned) == default.batches(1)


@pytest.mark.parametrize(("num_samples", "world_size"), [(101, 1), (101, 2), (101, 3), (2, 3), (0, 2), (7, 7)])
def test_shard_range_tiles_the_dataset(num_samples: int, world_size: int) -> None:
    shards = [shard_range(num_samples, DistEnv(rank=r, world_size=world_size)) for r in range(world_size)]
    assert [i for s in shards for i in s] == list(range(num_samples))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_verify_coverage_accepts_a_permutation() -> None:
    verify_coverage(torch.randperm(101), 101)


@pytest.mark.parametrize(
    ("indices", "expected"),
    [
        ([0, 1, 3], r"1 of 4 samples missing \(e\.g\. indices \[2\]\), 0 duplicated"),
        ([0, 1, 2, 3, 2], r"0 of 4 samples missing .* 1 duplicated \(1 extra results, e\.g\. indices \[2\]\)"),
        ([0, 1, 2, 3, 4], r"0 duplicated .* 1 out of range \(e\.g\. \[4\]\)"),
        # A negative index is out of range; it must not be counted as a duplicate of index 0.
        ([0, 1, 2, 3, -1], r"0 of 4 samples missing .* 0 duplicated .* 1 out of range"),
        ([], r"4 of 4 samples missing"),
    ],
)
def test_verify_coverage_names_what_is_wrong(indices: list[int], expected: str) -> None:
    with pytest.raises(CoverageError, match=expected):
        verify_coverage(torch.tensor(indices, dtype=torch.int64), 4)


def test_gather_results_single_process_sorts_by_index() -> None:
    indices = torch.tensor([2, 0, 1])
    results = {"err": torch.tensor([2.0, 0.0, 1.0]), "joints": torch.arange(18.0).reshape(3, 3, 2)}
    gathered = gather_results(indices, results, DistEnv())
    assert gathered is not None
    all_indices, merged = gathered
    assert all_indices.tolist() == [0, 1, 2]
    assert merged["err"].tolist() == [0.0, 1.0, 2.0]
    assert torch.equal(merged["joints"], results["joints"][[1, 2, 0]])


def test_gather_rows_rejects_ragged_results() -> None:
    with pytest.raises(ValueError, match="same first dimension"):
        gather_rows({"a": torch.zeros(3), "b": torch.zeros(2)}, DistEnv())
