"""Optimizers and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sslpipe.train import TrainConfig
from sslpipe.train.optim import base_lr, create_optimizer, lr_at


def test_warmup_then_cosine():
    config = TrainConfig(epochs=10, lr=0.4, warmup_epochs=1, schedule="cosine", min_lr=0.0)
    assert lr_at(config, 0, 100) == pytest.approx(0.4 / 100)
    assert lr_at(config, 99, 100) == pytest.approx(0.4)
    middle = 100 + 450
    assert lr_at(config, middle, 100) == pytest.approx(0.2)
    assert lr_at(config, 999, 100) == pytest.approx(0.2 * (1 + math.cos(math.pi * 899 / 900)))


def test_step_schedule_and_scaling():
    config = TrainConfig(epochs=10, lr=0.1, schedule="step", step_epochs=(3, 6), step_gamma=0.1,
                         batch_size=512, scale_lr=True)
    assert base_lr(config) == pytest.approx(0.2)
    assert [lr_at(config, s, 10) for s in (29, 30, 60)] == pytest.approx([0.2, 0.02, 0.002])


@pytest.mark.parametrize("name", ["sgd", "adamw", "lars"])
def test_bias_and_norm_excluded_from_weight_decay(name):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)  # frozen parameters are left out
    optimizer = create_optimizer(TrainConfig(optimizer=name, weight_decay=0.05), [model])
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.05 and [p.shape for p in decay["params"]] == [(2, 4)]
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim == 1 for p in no_decay["params"])
    assert len(no_decay["params"]) == 4  # conv bias, BN weight and bias, linear bias


@pytest.mark.parametrize("weight_decay", [1e-6, 0.0])
def test_lars_adapts_weights_only_whatever_the_weight_decay(weight_decay):
    # LARS (You et al. 2017): step = lr * eta * |w| / (|g| + wd |w|) * (g + wd w), eta 1e-3;
    # bias and norm parameters get neither decay nor adaptation. weight_decay=0 used to turn
    # the adaptation off for every weight (timm's Lars adapts only decayed groups)
    from timm.optim import Lars

    weight = nn.Parameter(torch.full((2, 2), 10.0))
    bias = nn.Parameter(torch.zeros(2))
    model = nn.Module()
    model.weight, model.bias = weight, bias
    optimizer = create_optimizer(TrainConfig(optimizer="lars", lr=1.0, momentum=0.0,
                                             weight_decay=weight_decay), [model])
    assert isinstance(optimizer, Lars)
    weight.grad, bias.grad = torch.ones(2, 2), torch.ones(2)
    optimizer.step()
    g = torch.ones(2, 2) + weight_decay * 10.0
    trust = 1e-3 * 20.0 / (2.0 + weight_decay * 20.0)  # |w| = 20, |g| = 2 (Frobenius)
    torch.testing.assert_close(weight.detach(), 10.0 - trust * g)
    torch.testing.assert_close(bias.detach(), torch.full((2,), -1.0))
