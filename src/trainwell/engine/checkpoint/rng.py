"""Random streams that survive a restart: per-process RNG states in checkpoints, and DataLoader seeds.

Dropout masks and any other random op in the training step draw from the global python, NumPy and
torch (CPU and CUDA) generators of *each process*. A checkpoint stores all of them, for every rank, as
tensors and plain numbers (so weights-only loading opens them), and a resumed process puts its own
rank's state back: the masks continue exactly where they stopped. Resumed on another number of processes, there is
no state of its own for each new rank: each derives its streams from *all* the saved states and its new rank
(:func:`derived_seed`), so the new streams carry the run's history forward — the same checkpoint resumed twice at the
same world size draws the same masks, and no two ranks share a stream.

The DataLoader draws its workers' base seed from a generator at every ``iter(loader)``. Without a
generator of its own it would draw from the global torch RNG at the start of each epoch — a draw that a
run resumed mid-epoch would not repeat — so the loop hands it :func:`loader_generator`, re-seeded from
``(train.seed, epoch, rank)`` each epoch, which also makes worker seeds reproducible.
"""

from __future__ import annotations

import hashlib
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


def derived_seed(states: list[dict[str, Any]], rank: int) -> int:
    """A 63-bit seed for process ``rank`` of a run resumed at another world size: a digest of every saved process's
    torch, NumPy and python states (in rank order) and the new rank."""
    digest = hashlib.sha256()
    for state in states:
        digest.update(state["torch"].cpu().numpy().tobytes())
        digest.update(state["numpy"]["keys"].cpu().numpy().tobytes())
        digest.update(int(state["numpy"]["pos"]).to_bytes(8, "little"))
        digest.update(state["python"]["internal"].cpu().numpy().tobytes())
        if state.get("cuda") is not None:
            digest.update(state["cuda"].cpu().numpy().tobytes())
    digest.update(rank.to_bytes(8, "little"))
    return int.from_bytes(digest.digest()[:8], "little") >> 1


def restore_own_rng_state(states: list[dict[str, Any]], env: D.DistEnv, device: torch.device) -> bool:
    """Restore this rank's entry; if the world size changed, seed every generator from :func:`derived_seed` instead
    and return False (the streams continue, but not bit for bit as the uninterrupted run's)."""
    if len(states) != env.world_size:
        seed = derived_seed(states, env.rank)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)  # CUDA's generators too
        return False
    restore_rng_state(states[env.rank], device)
    return True


def loader_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the training DataLoader's generator for ``epoch`` on ``rank`` (hence of its workers' seeds)."""
    return ((seed * 1_000_003 + epoch) * 1_009 + rank + 0x5EED) % 2**63
