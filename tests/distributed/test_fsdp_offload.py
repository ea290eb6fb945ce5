"""``distributed.fsdp.cpu_offload``: FSDP2's ``CPUOffloadPolicy`` reaches every sharded unit, and training with it
gives the same weights as without (on a CPU run the shards already live in host memory, so the two must agree bit
for bit; on a GPU the policy moves them to the host — that side needs a GPU and is not tested here)."""

from __future__ import annotations

from pathlib import Path

import torch
from distributed_helpers import spawn
from torch import nn

from trainwell.config.distributed import FsdpConfig
from trainwell.engine.fsdp import select_units, shard_model


def _train_two_steps(rank: int, world_size: int, out: Path, offload: bool) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    shard_model(model, select_units(model, None), FsdpConfig(cpu_offload=offload), None, torch.device("cpu"))
    # FSDP2 keeps the policy on each parameter's private FSDPParam: the only place that shows it was applied.
    groups = [unit._get_fsdp_state()._fsdp_param_group for unit in (model[0], model[2])]
    flags = [param.offload_to_cpu for group in groups for param in group.fsdp_params]
    assert flags == [offload] * 4, flags
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(rank)
    for _ in range(2):
        x = torch.randn(5, 8, generator=generator)
        model(x).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    full = {name: value.full_tensor() for name, value in model.state_dict().items()}
    if rank == 0:
        torch.save(full, out)


def test_cpu_offload_is_applied_and_trains_the_same_weights(tmp_path: Path) -> None:
    spawn(_train_two_steps, 2, tmp_path / "plain.pt", False)
    spawn(_train_two_steps, 2, tmp_path / "offloaded.pt", True)
    plain = torch.load(tmp_path / "plain.pt", weights_only=True)
    offloaded = torch.load(tmp_path / "offloaded.pt", weights_only=True)
    assert plain.keys() == offloaded.keys() and len(plain) == 4
    for name in plain:
        assert torch.equal(plain[name], offloaded[name]), name
