"""Optimizers (SGD, AdamW, LARS) with bias/norm exclusion, and the learning-rate schedule.

Biases and normalisation parameters (every parameter with fewer than 2 dimensions) get no
weight decay, and under LARS no trust-ratio adaptation either, as in SimCLR, BYOL and
solo-learn. The two exclusions are separate switches: the weights keep LARS adaptation
whatever the weight decay (``weight_decay=0`` included: timm's ``Lars`` otherwise adapts only
groups with a non-zero decay, which silently turned LARS into SGD).

The schedule is a pure function of the optimizer step (:func:`lr_at`), so resuming needs no
scheduler object: the step number in the checkpoint is the scheduler's whole state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from sslpipe.train.config import TrainConfig

__all__ = ["base_lr", "create_optimizer", "lr_at", "set_lr"]


def create_optimizer(config: TrainConfig, modules: Iterable[nn.Module]) -> torch.optim.Optimizer:
    """The optimizer of ``config.optimizer`` over the trainable parameters of ``modules``.

    Each parameter group stores its ``lr_scale`` (1.0); :func:`set_lr` sets
    ``lr = lr_scale * lr_at(step)``.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    if config.optimizer == "lars":  # adaptation on for the weights, off for bias/norm
        groups[0]["always_adapt"], groups[1]["always_adapt"] = True, False
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters (is everything frozen?)")
    lr = base_lr(config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    from timm.optim import Lars

    return Lars(groups, lr=lr, momentum=config.momentum)


def base_lr(config: TrainConfig) -> float:
    """``config.lr``, times ``batch_size / 256`` when ``scale_lr`` is set (global batch)."""
    return config.lr * config.batch_size / 256 if config.scale_lr else config.lr


def lr_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at optimizer ``step`` (0-based): linear warm-up, then the schedule."""
    peak = base_lr(config)
    total = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return peak * (step + 1) / warmup
    if config.schedule == "constant":
        return peak
    if config.schedule == "step":
        epoch = step / steps_per_epoch
        return peak * config.step_gamma ** sum(epoch >= m for m in config.step_epochs)
    progress = (step - warmup) / max(1, total - warmup)
    return config.min_lr + (peak - config.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to ``lr * group['lr_scale']``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
