"""RNG states survive a checkpoint: python, NumPy and torch streams continue exactly after a restore."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from trainwell.engine.checkpoint import atomic_save, load_checkpoint
from trainwell.engine.checkpoint.rng import capture_rng_state, gather_rng_states, loader_seed, restore_own_rng_state
from trainwell.engine.distributed import DistEnv

CPU = torch.device("cpu")


def _draw() -> tuple[list[float], list[float], torch.Tensor, float]:
    return (
        [random.random() for _ in range(3)],
        np.random.standard_normal(3).tolist(),  # also exercises the cached Gaussian
        torch.rand(5),
        random.gauss(0.0, 1.0),
    )


def test_streams_continue_exactly_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    _draw()
    random.gauss(0.0, 1.0)  # leave a cached python gauss value in the state
    np.random.standard_normal(1)  # and a cached NumPy one
    atomic_save({"rng": gather_rng_states(DistEnv(), CPU)}, tmp_path / "rng.pt")
    expected = _draw()

    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    states = load_checkpoint(tmp_path / "rng.pt")["rng"]
    assert restore_own_rng_state(states, DistEnv(), CPU)
    again = _draw()
    assert again[0] == expected[0] and again[1] == expected[1] and again[3] == expected[3]
    assert torch.equal(again[2], expected[2])


def _saved_states(seeds: list[int]) -> list[dict]:
    """The states two (or more) processes would have saved, each after its own draws."""
    states = []
    for seed in seeds:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        _draw()
        states.append(capture_rng_state(CPU))
    return states


def _resumed_draw(states: list[dict], rank: int, world_size: int) -> tuple:
    torch.manual_seed(12345)  # whatever the process held before: the restore replaces it
    assert not restore_own_rng_state(states, DistEnv(rank=rank, world_size=world_size), CPU)  # not bitwise
    drawn = _draw()
    return drawn[0], drawn[1], drawn[2].tolist(), drawn[3]


def test_another_world_size_carries_the_saved_streams_forward_per_rank() -> None:
    saved = _saved_states([10, 11])  # two processes saved
    on_three = [_resumed_draw(saved, rank, 3) for rank in range(3)]
    assert len({repr(draw) for draw in on_three}) == 3  # no two new ranks share a stream
    assert [_resumed_draw(saved, rank, 3) for rank in range(3)] == on_three  # the same checkpoint, the same draws
    # Derived from the saved states, not from a fixed seed: another history (one rank's draws differ) moves them.
    other = _saved_states([10, 99])
    assert _resumed_draw(other, 0, 3) != on_three[0]
    # A fresh start from these seeds is not what the resumed ranks draw either.
    torch.manual_seed(0)
    assert torch.rand(5).tolist() != on_three[0][2]


def test_loader_seeds_differ_by_epoch_and_rank() -> None:
    seeds = {loader_seed(0, epoch, rank) for epoch in range(50) for rank in range(8)}
    assert len(seeds) == 400
    assert loader_seed(7, 3, 1) == loader_seed(7, 3, 1)
    assert all(0 <= s < 2**63 for s in (loader_seed(2**62, 10**6, 7), loader_seed(-5, 0, 0)))
