"""Which modules ``distributed.strategy=fsdp`` shards as units (``engine/fsdp.py``), without a process group."""

import pytest
from torch import nn

from trainwell.engine.fsdp import select_units


def _model() -> nn.Module:
    model = nn.Module()
    model.stem = nn.Linear(2, 4)
    model.act = nn.ReLU()  # no parameters: never a unit by default
    model.blocks = nn.ModuleList([nn.Sequential(nn.Linear(4, 4), nn.ReLU()) for _ in range(3)])
    model.head = nn.Linear(4, 1)
    return model


def test_default_units_are_the_direct_children_with_parameters() -> None:
    model = _model()
    assert select_units(model, None) == [model.stem, model.blocks, model.head]


def test_patterns_match_module_names() -> None:
    model = _model()
    assert select_units(model, ["blocks.?"]) == list(model.blocks)
    assert select_units(model, ["head", "stem"]) == [model.stem, model.head]  # in the model's order


def test_patterns_that_match_nothing_name_the_modules() -> None:
    with pytest.raises(ValueError, match=r"matches no module.*stem, act, blocks"):
        select_units(_model(), ["layers.*"])
