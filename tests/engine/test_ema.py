"""``ModelEma`` on a model with BatchNorm: parameters averaged, buffers copied, the optional decay warm-up."""

from __future__ import annotations

import torch
from torch import nn

from trainwell.config.training import EmaConfig
from trainwell.engine.ema import ModelEma, ema_decay


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    loss = model(torch.randn(8, 3)).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_parameters_are_averaged_and_buffers_copied() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = ModelEma(model, EmaConfig(decay=0.5, every=1, start_step=0))
    assert ema.maybe_start(0)
    reference = {n: p.detach().clone() for n, p in model.named_parameters()}
    for step in range(1, 4):
        _train_step(model, optimizer)
        assert ema.maybe_update(step)
        reference = {n: 0.5 * reference[n] + 0.5 * p.detach() for n, p in model.named_parameters()}
    averaged = dict(ema.module.named_parameters())
    for name, value in reference.items():
        torch.testing.assert_close(averaged[name], value)
    for (name, live), (_, copied) in zip(model.named_buffers(), ema.module.named_buffers(), strict=True):
        assert torch.equal(live, copied), name  # running_mean / running_var / num_batches_tracked: the model's
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_warmup_follows_the_tensorflow_rule_and_is_off_by_default() -> None:
    assert [ema_decay(EmaConfig(decay=0.99), n) for n in (1, 100)] == [0.99, 0.99]
    warm = EmaConfig(decay=0.99, warmup=True)
    assert ema_decay(warm, 1) == 2 / 11 and ema_decay(warm, 8) == 9 / 18 and ema_decay(warm, 10_000) == 0.99


def test_nothing_happens_before_start_step_or_between_updates() -> None:
    model = _model()
    ema = ModelEma(model, EmaConfig(decay=0.9, every=3, start_step=2))
    assert not ema.maybe_update(1) and not ema.started
    assert ema.maybe_update(2) and ema.started_at == 2
    assert [ema.maybe_update(s) for s in (3, 4, 5, 6, 7, 8)] == [False, False, True, False, False, True]
    assert ema.num_updates == 2
