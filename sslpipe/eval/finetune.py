"""Fine-tuning: freeze the backbone up to a stage, train the rest and a linear classifier.

Training batches are augmented (random resized crop + horizontal flip,
:class:`~sslpipe.eval.transform.TrainCollator`); test batches are not
(:class:`~sslpipe.eval.transform.EvalCollator`). Frozen stages keep their BatchNorm
statistics (``sslpipe.models.freeze_until``). SGD with momentum 0.9, Nesterov, weight decay
and a cosine learning-rate schedule over all steps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.batch import Batch
from sslpipe.devices import default_device
from sslpipe.eval.linear import topk_accuracy
from sslpipe.eval.probes import Data, as_batches
from sslpipe.eval.transform import DEFAULT_SIZE, TrainCollator
from sslpipe.tasks.base import check_positive
from sslpipe.tasks.heads import feature_dim


@dataclass(frozen=True)
class FinetuneOptions:
    """Fine-tuning settings.

    Attributes:
        freeze: the last frozen stage (a name from ``sslpipe.models.stage_names``, e.g.
            ``"stage2"`` or ``"layer2"``), or None to train every layer.
        epochs: passes over the training data.
        steps: when set, the number of optimizer steps instead: training passes over the data
            as often as it takes (the last pass cut short), so that a run's cost does not grow
            with its label budget.
        min_steps, max_steps: bounds on the steps that ``epochs`` gives (None: unbounded), for
            a budget sweep: a few hundred labels get enough steps to fit them, the full set
            a capped cost (see :func:`finetune_steps`). Not with ``steps``.
        lr: peak learning rate (cosine decay to 0).
        weight_decay: L2 penalty of SGD.
        batch_size: images per step.
        size: image side (both sets).
        seed: classifier initialisation and augmentation.
    """

    freeze: str | None = None
    epochs: int = 10
    lr: float = 0.05
    weight_decay: float = 5e-4
    batch_size: int = 128
    size: int = DEFAULT_SIZE
    seed: int = 0
    steps: int | None = None
    min_steps: int | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        check_positive("epochs", self.epochs)
        for name in ("steps", "min_steps", "max_steps"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        if self.steps is not None and (self.min_steps is not None or self.max_steps is not None):
            raise ValueError(f"steps={self.steps} sets the steps exactly; min_steps and max_steps "
                             f"bound the steps of epochs, so they cannot be given with it")
        if (self.min_steps is not None and self.max_steps is not None
                and self.min_steps > self.max_steps):
            raise ValueError(f"min_steps must be <= max_steps. Got {self.min_steps} > "
                             f"{self.max_steps}")
        check_positive("lr", self.lr)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_positive("batch_size", self.batch_size)
        check_positive("size", self.size)


def finetune_steps(options: FinetuneOptions, steps_per_epoch: int) -> int:
    """The optimizer steps a fine-tuning run takes: ``options.steps`` when set, else
    ``options.epochs * steps_per_epoch`` clamped to ``[min_steps, max_steps]``.

    With ``epochs=5, min_steps=150, max_steps=470`` and batches of 128, 600 labels (5 batches
    per epoch) train 150 steps (30 passes), 6,000 labels 5 epochs (235 steps) and 60,000
    labels 470 steps (one pass)."""
    if options.steps is not None:
        return options.steps
    steps = options.epochs * max(1, steps_per_epoch)
    if options.min_steps is not None:
        steps = max(steps, options.min_steps)
    if options.max_steps is not None:
        steps = min(steps, options.max_steps)
    return steps


def finetune(
    backbone: nn.Module,
    train: Data,
    test: Data,
    options: FinetuneOptions | None = None,
    num_classes: int | None = None,
    workers: int | None = 0,
    device: torch.device | str | None = None,
    backend: str = "auto",
) -> dict[str, object]:
    """Fine-tune ``backbone`` (modified in place) with a new linear classifier.

    Args:
        backbone: timm model with ``num_classes=0``.
        train: a shard directory (augmented with ``TrainCollator``) or a re-iterable of
            labelled Batches (used as given, once per epoch).
        test: a shard directory or an iterable of labelled Batches.
        options: :class:`FinetuneOptions`.
        num_classes: default: the manifest's class count, else ``max(train label) + 1``.
        workers: DataLoader workers for shard directories.
        device: default CUDA when available, else CPU.
        backend: decode backend for shard directories (``create_loader``'s), as pretraining.

    Returns:
        ``{"top1": %, "top5": %, "frozen": [module paths], "steps": n, "images": m}`` (the
        optimizer steps taken and the training images they saw, repeats counted).
    """
    from sslpipe.models import freeze_until

    opt = options or FinetuneOptions()
    dev = default_device(device)
    if isinstance(train, (str, os.PathLike)):
        from sslpipe.data import create_loader

        # the training input path: shards and samples reshuffled every epoch (set_epoch)
        train_batches: Iterable[Batch] = create_loader(
            os.fspath(train), TrainCollator(opt.size, seed=opt.seed), opt.batch_size,
            device=dev, backend=backend, num_workers=workers, seed=opt.seed, drop_last=False)
    else:
        train_batches = train
    classes = num_classes or _num_classes(train, train_batches)
    frozen = freeze_until(backbone, opt.freeze) if opt.freeze else []
    gen = torch.Generator().manual_seed(opt.seed)
    head = nn.Linear(feature_dim(backbone), classes)
    with torch.no_grad():
        head.weight.normal_(0, 0.01, generator=gen)
        head.bias.zero_()
    model = nn.Sequential(backbone, head).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    sgd = torch.optim.SGD(params, lr=opt.lr, momentum=0.9, nesterov=True,
                          weight_decay=opt.weight_decay)
    per_epoch = _steps_per_epoch(train_batches)
    steps = finetune_steps(opt, per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        sgd, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    done, images = 0, 0
    for epoch in range(math.ceil(steps / per_epoch)):
        model.train()
        if hasattr(train_batches, "set_epoch"):
            train_batches.set_epoch(epoch)
        for batch in train_batches:
            if done >= steps:
                break
            inputs, labels = _unpack(batch, dev)
            loss = F.cross_entropy(model(inputs), labels)
            sgd.zero_grad(set_to_none=True)
            loss.backward()
            sgd.step()
            sched.step()
            done += 1
            images += int(labels.shape[0])
    result = evaluate(model, as_batches(test, opt.size, opt.batch_size, workers, dev, backend),
                      dev)
    return {**result, "frozen": frozen, "steps": done, "images": images}


def evaluate(model: nn.Module, batches: Iterable[Batch], device: torch.device) -> dict[str, float]:
    """Top-1 / top-5 (in %, 2 decimals) of a classifier ``model`` over labelled batches."""
    model.eval()
    logits, labels = [], []
    with torch.inference_mode():
        for batch in batches:
            inputs, y = _unpack(batch, device)
            logits.append(model(inputs).float().cpu())
            labels.append(y.cpu())
    if not logits:
        raise ValueError("test: expected at least one batch. Got none")
    return topk_accuracy(torch.cat(logits), torch.cat(labels))


def _unpack(batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch.inputs, torch.Tensor) or batch.labels is None:
        raise ValueError("finetune needs Batches with one input tensor B x 3 x H x W and labels")
    return batch.inputs.to(device, non_blocking=True), batch.labels.to(device, non_blocking=True)


def _steps_per_epoch(batches: Iterable[Batch]) -> int:
    try:
        return max(1, len(batches))  # type: ignore[arg-type]
    except TypeError:
        return max(1, sum(1 for _ in batches))


def _num_classes(train: Data, batches: Iterable[Batch]) -> int:
    if isinstance(train, (str, os.PathLike)):
        from sslpipe.data.manifest import read_manifest

        return len(read_manifest(train)["classes"])
    top = max(int(b.labels.max()) for b in batches if b.labels is not None)
    return top + 1
