"""The check before every save: which tensors of the model, optimizer state and loss sums hold NaN/Inf."""

from __future__ import annotations

import torch
from torch import nn

from trainwell.engine.checkpoint.finite import nonfinite_names, state_tensors


def _reference(named: list[tuple[str, torch.Tensor]]) -> list[str]:
    """Element by element, the plain way."""
    return [n for n, t in named if t.is_floating_point() and not all(map(torch.isfinite, t.flatten()))]


def test_names_exactly_the_nonfinite_tensors_and_not_huge_finite_ones() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    meter = [torch.tensor([1.0, 2.0]), torch.tensor([0.5], dtype=torch.bfloat16)]
    assert nonfinite_names(state_tensors(model, optimizer, meter)) == []

    with torch.no_grad():
        model[0].weight[1, 2] = 3e38  # finite, but its sum of squares overflows float32
        model[2].bias[0] = float("nan")
    optimizer.state[model[1].weight]["exp_avg_sq"][3] = float("inf")
    meter.append(torch.tensor([float("-inf")], dtype=torch.bfloat16))
    named = list(state_tensors(model, optimizer, meter))
    found = nonfinite_names(named)
    assert found == _reference(named)
    assert found == ["model.2.bias", "optimizer state 'exp_avg_sq' of 1.weight", "loss sums (2)"]
