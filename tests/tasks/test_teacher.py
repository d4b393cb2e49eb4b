"""Momentum teachers: the EMA update, BYOL's cosine schedule, StepInfo."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sslpipe.tasks.base import StepInfo
from sslpipe.tasks.teacher import MomentumPair, cosine_momentum, update_momentum_pairs


def _pair(seed: int = 0) -> MomentumPair:
    torch.manual_seed(seed)
    return MomentumPair(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)))


def test_the_target_starts_as_a_frozen_copy():
    pair = _pair()
    for (name, a), (_, b) in zip(pair.online.named_parameters(), pair.target.named_parameters()):
        assert torch.equal(a, b) and a is not b, name
        assert a.requires_grad and not b.requires_grad
    keys = list(pair.state_dict())
    assert "online.0.weight" in keys and "target.0.weight" in keys


def test_update_is_the_ema_written_out():
    pair = _pair()
    with torch.no_grad():
        for p in pair.online.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in pair.target.named_parameters()}
    online = dict(pair.online.named_parameters())
    pair.update(0.75)
    for name, value in pair.target.named_parameters():
        expected = 0.75 * before[name] + 0.25 * online[name].detach()
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-7, msg=name)
    pair.update(0.0)  # momentum 0: the online network itself
    for (name, a), (_, b) in zip(pair.online.named_parameters(), pair.target.named_parameters()):
        assert torch.equal(a.detach(), b), name
    with pytest.raises(ValueError, match="tau must be in"):
        pair.update(1.5)


def test_buffers_are_the_targets_own():
    # BatchNorm running statistics follow each network's own forward passes, not the EMA
    pair = _pair()
    pair.online(torch.randn(8, 3) * 5 + 3)
    stats = pair.target[1].running_mean.clone()
    pair.update(0.0)
    assert torch.equal(pair.target[1].running_mean, stats)
    assert not torch.equal(pair.online[1].running_mean, stats)


def test_update_momentum_pairs_finds_every_pair():
    model = nn.ModuleDict({"a": _pair(0), "b": nn.Sequential(nn.ReLU(), _pair(1))})
    assert update_momentum_pairs(model, 0.5) == 2
    assert update_momentum_pairs(nn.Linear(2, 2), 0.5) == 0


def test_cosine_momentum_is_byols_schedule():
    base = 0.996
    for progress in (0.0, 0.1, 0.5, 0.9, 1.0):
        expected = 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2
        assert cosine_momentum(base, progress) == pytest.approx(expected, abs=1e-15)
    assert cosine_momentum(base, 0.0) == pytest.approx(base)
    assert cosine_momentum(base, 1.0) == 1.0
    assert cosine_momentum(base, 2.0) == 1.0 and cosine_momentum(base, -1) == pytest.approx(base)
    assert cosine_momentum(0.5, 0.5, final=0.9) == pytest.approx(0.7)


def test_step_info():
    info = StepInfo(step=150, total_steps=400, steps_per_epoch=100)
    assert info.progress == 0.375 and info.epoch == 1.5
    assert StepInfo(500, 400, 100).progress == 1.0
