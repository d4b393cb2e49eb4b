"""Linear classifiers on frozen features: standardised inputs, mini-batch SGD, top-1 / top-5.

Features are standardised with the training set's per-dimension mean and standard deviation
(folded into each mini-batch, so a float16 ``N x D`` matrix is never copied to float32 whole),
then a ``Linear(D, classes)`` is trained with SGD (momentum 0.9, Nesterov) and a cosine
learning-rate schedule. With several weight decays, 10% of the training set (fixed by ``seed``)
picks the best one, which is then trained on the whole training set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.devices import default_device
from sslpipe.tasks.base import check_positive


@dataclass(frozen=True)
class LinearOptions:
    """Training settings of one linear probe.

    Attributes:
        epochs: passes over the training features.
        batch_size: mini-batch size (``>= N`` trains full-batch).
        lr: peak SGD learning rate (cosine decay to 0).
        weight_decays: L2 penalties to try; more than one runs the validation sweep.
        seed: initialisation, shuffling and the validation split.
    """

    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.1
    weight_decays: tuple[float, ...] = (5e-4,)
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive("epochs", self.epochs)
        check_positive("batch_size", self.batch_size)
        check_positive("lr", self.lr)
        if not self.weight_decays or any(wd < 0 for wd in self.weight_decays):
            raise ValueError(f"weight_decays must be one or more values >= 0. "
                             f"Got {self.weight_decays!r}")


def train_linear(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    options: LinearOptions | None = None,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Train a linear classifier on ``train_x`` and measure it on ``test_x``.

    Args:
        train_x, test_x: float (16 or 32) ``N x D`` features.
        train_y, test_y: int64 ``N`` class indices in ``0 .. num_classes - 1``.
        options: :class:`LinearOptions` (defaults when None).
        num_classes: default ``max(label) + 1`` over both sets.
        device: where to train (default: CUDA when available, else CPU).

    Returns:
        ``{"top1": %, "top5": %, "weight_decay": chosen}`` with accuracies in [0, 100]
        rounded to 2 decimals (top-5 is top-``min(5, classes)``).
    """
    opt = options or LinearOptions()
    _check_pair("train", train_x, train_y)
    _check_pair("test", test_x, test_y)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train and test features must have the same width. Got "
                         f"{train_x.shape[1]} and {test_x.shape[1]}")
    classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    dev = default_device(device)
    wd = opt.weight_decays[0]
    if len(opt.weight_decays) > 1:
        wd = _sweep(train_x, train_y, opt, classes, dev)
    model, mean, std = _fit(train_x, train_y, opt, wd, classes, dev)
    result = evaluate_linear(model, mean, std, test_x, test_y, dev)
    return {**result, "weight_decay": wd}


def evaluate_linear(model: nn.Module, mean: torch.Tensor, std: torch.Tensor, x: torch.Tensor,
                    y: torch.Tensor, device: torch.device, chunk: int = 4096) -> dict[str, float]:
    """Top-1 / top-5 (in %, 2 decimals) of ``model((x - mean) / std)`` against ``y``."""
    logits = []
    with torch.no_grad():
        for start in range(0, len(x), chunk):
            xb = (x[start:start + chunk].to(device).float() - mean) / std
            logits.append(model(xb).cpu())
    return topk_accuracy(torch.cat(logits), y.cpu())


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor,
                  ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": %, "top5": %}`` of ``N x K`` scores against int64 ``N`` labels.

    ``k`` larger than ``K`` is clipped to ``K`` (every answer is then in the top-k).
    Accuracies are in [0, 100] and rounded to 2 decimals.
    """
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits must be N x K with N = len(labels) = {labels.shape[0]}. "
                         f"Got {tuple(logits.shape)}")
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels.view(-1, 1)
    return {f"top{k}": round(100.0 * hits[:, :k].any(1).float().mean().item(), 2) for k in ks}


def _fit(x: torch.Tensor, y: torch.Tensor, opt: LinearOptions, wd: float, classes: int,
         dev: torch.device) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(opt.seed)
    mean, std = _moments(x, dev)
    model = nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        model.weight.normal_(0, 0.01, generator=gen)
        model.bias.zero_()
    model.to(dev)
    sgd = torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=0.9, nesterov=True,
                          weight_decay=wd)
    n = len(x)
    bs = min(opt.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, opt.epochs * steps_per_epoch)
    x_dev = x.to(dev) if dev.type == "cuda" else x
    y_dev = y.to(dev)
    for _ in range(opt.epochs):
        order = torch.randperm(n, generator=gen).to(x_dev.device)
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            xb = (x_dev[idx].to(dev).float() - mean) / std
            loss = F.cross_entropy(model(xb), y_dev[idx.to(dev)])
            sgd.zero_grad(set_to_none=True)
            loss.backward()
            sgd.step()
            sched.step()
    return model.eval(), mean, std


def _sweep(x: torch.Tensor, y: torch.Tensor, opt: LinearOptions, classes: int,
           dev: torch.device) -> float:
    gen = torch.Generator().manual_seed(opt.seed + 1)
    order = torch.randperm(len(x), generator=gen)
    n_val = max(1, len(x) // 10)
    val, fit = order[:n_val], order[n_val:]
    scores = []
    for wd in opt.weight_decays:
        model, mean, std = _fit(x[fit], y[fit], opt, wd, classes, dev)
        scores.append(evaluate_linear(model, mean, std, x[val], y[val], dev)["top1"])
    return opt.weight_decays[max(range(len(scores)), key=scores.__getitem__)]


def _moments(x: torch.Tensor, dev: torch.device, chunk: int = 8192) -> tuple[torch.Tensor, ...]:
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=dev)
    total_sq = torch.zeros_like(total)
    for start in range(0, len(x), chunk):
        xb = x[start:start + chunk].to(dev).double()
        total += xb.sum(0)
        total_sq += (xb * xb).sum(0)
    mean = total / len(x)
    var = (total_sq / len(x) - mean * mean).clamp_min(0)
    # constant dimensions (dead ReLUs) get std 1 instead of a division by ~0
    std = torch.where(var > 1e-12, var.sqrt(), torch.ones_like(var))
    return mean.float(), std.float()


def _check_pair(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"{name} features must be N x D with N = len(labels) > 0. Got "
                         f"{tuple(x.shape)} features and {tuple(y.shape)} labels")
    if not x.is_floating_point() or y.dtype != torch.int64:
        raise ValueError(f"{name}: features must be float and labels int64. Got {x.dtype} and "
                         f"{y.dtype}")


def options_dict(opt: LinearOptions) -> dict[str, object]:
    """The options as JSON-ready values (for result files)."""
    out = asdict(opt)
    out["weight_decays"] = list(opt.weight_decays)
    return out
