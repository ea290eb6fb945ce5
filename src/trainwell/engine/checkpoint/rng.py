"""Random streams that survive a restart: per-process RNG states in checkpoints, and DataLoader seeds.

Dropout masks and any other random op in the training step draw from the global python, NumPy and
torch (CPU and CUDA) generators of *each process*. A checkpoint stores all of them, for every rank, as
tensors and plain numbers (so weights-only loading opens them), and a resumed process puts its own
rank's state back: the masks continue exactly where they stopped.

The DataLoader draws its workers' base seed from a generator at every ``iter(loader)``. Without a
generator of its own it would draw from the global torch RNG at the start of each epoch — a draw that a
run resumed mid-epoch would not repeat — so the loop hands it :func:`loader_generator`, re-seeded from
``(train.seed, epoch, rank)`` each epoch, which also makes worker seeds reproducible.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from trainwell.engine import distributed as D


def capture_rng_state(device: torch.device) -> dict[str, Any]:
    """This process's python, NumPy, torch CPU and (if used) CUDA generator states."""
    version, internal, gauss_next = random.getstate()
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "python": {
            "version": version,
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Put back what :func:`capture_rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(
        ("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def gather_rng_states(env: D.DistEnv, device: torch.device) -> list[dict[str, Any]]:
    """Every process's RNG state, in rank order (a collective: all processes must call it together)."""
    return D.all_gather_object(capture_rng_state(device), env)


def restore_own_rng_state(states: list[dict[str, Any]], env: D.DistEnv, device: torch.device) -> bool:
    """Restore this rank's entry; returns False (and restores nothing) if the world size changed."""
    if len(states) != env.world_size:
        return False
    restore_rng_state(states[env.rank], device)
    return True


def loader_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the training DataLoader's generator for ``epoch`` on ``rank`` (hence of its workers' seeds)."""
    return ((seed * 1_000_003 + epoch) * 1_009 + rank + 0x5EED) % 2**63
