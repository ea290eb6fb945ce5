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


def test_a_different_world_size_restores_nothing() -> None:
    state = capture_rng_state(CPU)
    assert not restore_own_rng_state([state], DistEnv(rank=0, world_size=2), CPU)


def test_loader_seeds_differ_by_epoch_and_rank() -> None:
    seeds = {loader_seed(0, epoch, rank) for epoch in range(50) for rank in range(8)}
    assert len(seeds) == 400
    assert loader_seed(7, 3, 1) == loader_seed(7, 3, 1)
    assert all(0 <= s < 2**63 for s in (loader_seed(2**62, 10**6, 7), loader_seed(-5, 0, 0)))
