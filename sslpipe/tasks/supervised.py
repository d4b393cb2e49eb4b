"""Supervised classification on the dataset's own labels: the baseline of every pretext task.

The collator does the standard ImageNet training augmentation in uint8 (RandomResizedCrop with
scale ``crop_scale``, then a horizontal flip with probability ``flip``) and normalises; the model
is the backbone with one linear classifier; the loss is cross-entropy against ``batch.labels``.
A pretext loss never reads labels; this task is the one that does, so a batch without labels is
an error here rather than a silent no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.batch import Batch, HostBatch
from sslpipe.ops.color import normalize
from sslpipe.ops.geometry import hflip, random_resized_crop_boxes, resized_crop
from sslpipe.ops.images import Images
from sslpipe.registry import register_task
from sslpipe.tasks.base import (
    Collator,
    CollatorOptions,
    Task,
    check_positive,
    check_probability,
    labels_on,
    meta_on,
)
from sslpipe.tasks.heads import BackboneWithHead, classifier_head, feature_dim


@dataclass(frozen=True)
class SupervisedOptions(CollatorOptions):
    """Options of the supervised task.

    Attributes:
        num_classes: number of dataset classes (outputs of the linear classifier).
        size: output side in pixels.
        crop_scale: ``(min, max)`` fraction of the image area a random resized crop covers.
        crop_ratio: ``(min, max)`` aspect ratio of the crop.
        flip: probability of a horizontal flip.
    """

    num_classes: int = 1000
    size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5

    def __post_init__(self) -> None:
        check_positive("num_classes", self.num_classes)
        check_positive("size", self.size)
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1. Got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max. Got {self.crop_ratio}")
        check_probability("flip", self.flip)


class SupervisedCollator(Collator):
    """RandomResizedCrop + flip in uint8, then normalise.

    Returns a Batch with ``inputs`` float ``B x 3 x size x size``, ``targets`` = ``labels`` =
    int64 ``B`` (the dataset classes), and ``meta``: ``boxes`` (float ``B x 4`` crop boxes in
    source pixels) and ``flip`` (bool ``B``).

    Raises:
        ValueError: when the samples carry no labels, or a label is outside
            ``0 .. num_classes - 1``.
    """

    options: SupervisedOptions

    def make_host(self, images: Images, generator: torch.Generator | None) -> HostBatch:
        opt = self.options
        if images.labels is None:
            raise ValueError(
                "samples: the supervised task needs (image, label) samples or shards with a "
                "`cls` entry. Got samples without labels"
            )
        labels = images.labels
        if int(labels.min()) < 0 or int(labels.max()) >= opt.num_classes:
            raise ValueError(
                f"labels must be in 0..{opt.num_classes - 1} (num_classes={opt.num_classes}). "
                f"Got labels in {int(labels.min())}..{int(labels.max())}"
            )
        n = len(images)
        boxes = random_resized_crop_boxes(images.sizes(), generator, opt.crop_scale, opt.crop_ratio)
        x = resized_crop(images.images, boxes, opt.size)
        flip = torch.rand(n, generator=generator) < opt.flip
        return HostBatch({"crops": x}, labels, {"boxes": boxes, "flip": flip})

    def make_device(self, host: HostBatch) -> Batch:
        inputs = normalize(hflip(host.pixels["crops"], host.meta["flip"]), self.options.mean,
                           self.options.std)
        device = inputs.device
        labels = labels_on(host, device)
        return Batch(inputs, labels, labels, meta_on(host.meta, device))


@register_task("supervised", "supervised classification on the dataset labels (the baseline)")
class Supervised(Task):
    """Supervised classification: linear classifier on the backbone, cross-entropy."""

    Options = SupervisedOptions
    Collator = SupervisedCollator
    options: SupervisedOptions

    def build(self, backbone: nn.Module) -> nn.Module:
        head = classifier_head(feature_dim(backbone), self.options.num_classes, "linear")
        return BackboneWithHead(backbone, head)

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        if batch.labels is None:
            raise ValueError("batch.labels: the supervised loss needs dataset labels. Got None")
        return F.cross_entropy(outputs, batch.labels)

    def metrics(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        labels = batch.labels if batch.labels is not None else outputs.new_empty(0)
        return {"train_acc": torch.eq(outputs.argmax(1), labels).float().mean()}
