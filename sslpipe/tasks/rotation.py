"""Rotation prediction (Gidaris et al., "Unsupervised Representation Learning by Predicting
Image Rotations", ICLR 2018).

Each image is rotated by 0, 90, 180 or 270 degrees and the network predicts which. Following
RotNet, the default puts all four rotations of every image in the batch (``4B`` inputs, target
``k`` means ``k * 90`` degrees counter-clockwise); ``mode="random"`` draws one rotation per image.

Crops (resized to ``size`` x ``size``): by default torchvision's random resized crop (area 8-100%,
aspect ratio 3/4-4/3) and a horizontal flip with probability 1/2, the official ImageNet setting
(``gidariss/FeatureLearningRotNet``, ``config/ImageNet_RotNet_AlexNet.py``:
``random_sized_crop=True``; ``dataloader.py``: ``RandomSizedCrop(224)``,
``RandomHorizontalFlip()``). ``crop="center"`` keeps the centre square on the shorter side and
``crop="random"`` a random square along the longer side. The output is square, and rotating a
square loses no pixels, so the rotation cannot be read off the image's outline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.batch import Batch, HostBatch
from sslpipe.ops.color import normalize
from sslpipe.ops.geometry import (
    all_rotations,
    hflip,
    random_resized_crop_boxes,
    resized_crop,
    rot90,
    square_boxes,
)
from sslpipe.ops.images import Images
from sslpipe.registry import register_task
from sslpipe.tasks.base import (
    Collator,
    CollatorOptions,
    Task,
    check_choice,
    check_positive,
    check_probability,
    labels_on,
    meta_on,
)
from sslpipe.tasks.heads import BackboneWithHead, classifier_head, feature_dim

NUM_ROTATIONS = 4


@dataclass(frozen=True)
class RotationOptions(CollatorOptions):
    """Options of the rotation task.

    Attributes:
        size: output side in pixels (images are square).
        mode: ``"all"`` (all four rotations of each image, 4B inputs, RotNet) or
            ``"random"`` (one random rotation per image, B inputs).
        crop: ``"random_resized"`` (torchvision's RandomResizedCrop with ``crop_scale`` and
            ``crop_ratio``: the official ImageNet setting), ``"center"`` (the centre square on
            the shorter side) or ``"random"`` (a random square of the shorter side).
        crop_scale: range of the crop's share of the image area (``"random_resized"``).
        crop_ratio: range of the crop's aspect ratio, log-uniform (``"random_resized"``).
        flip: probability of a horizontal flip before rotating (a flip keeps the rotation label
            valid); 0.5 as the official ``RandomHorizontalFlip``.
        head: ``"linear"`` or ``"mlp"`` on the pooled backbone features.
        hidden_dim: width of the MLP head.
    """

    size: int = 224
    mode: str = "all"
    crop: str = "random_resized"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    head: str = "linear"
    hidden_dim: int = 512

    def __post_init__(self) -> None:
        check_positive("size", self.size)
        check_choice("mode", self.mode, ("all", "random"))
        check_choice("crop", self.crop, ("random_resized", "center", "random"))
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must be (lo, hi) with 0 < lo <= hi <= 1. "
                             f"Got {self.crop_scale}")
        if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must be (lo, hi) with 0 < lo <= hi. "
                             f"Got {self.crop_ratio}")
        check_probability("flip", self.flip)
        check_choice("head", self.head, ("linear", "mlp"))


class RotationCollator(Collator):
    """Crop, resize, flip, rotate; targets are the rotation classes 0..3.

    Returns a Batch with ``inputs`` float ``N x 3 x size x size`` (N = 4B for ``mode="all"``,
    B otherwise), ``targets`` int64 ``N`` in 0..3, ``labels`` int64 ``B`` or None, and ``meta``:
    ``boxes`` (float ``B x 4`` crop boxes ``(x0, y0, x1, y1)`` in source pixels), ``flip``
    (bool ``B``: mirrored before rotating), ``rotation`` (int64 ``N``, the same as targets) and
    ``source`` (int64 ``N``, the index of each input's source image).
    """

    options: RotationOptions

    def make_host(self, images: Images, generator: torch.Generator | None) -> HostBatch:
        opt = self.options
        n = len(images)
        if opt.crop == "random_resized":
            boxes = random_resized_crop_boxes(images.sizes(), generator, opt.crop_scale,
                                              opt.crop_ratio)
        else:
            boxes = square_boxes(images.sizes(), opt.crop, generator)
        x = resized_crop(images.images, boxes, opt.size)
        flip = torch.rand(n, generator=generator) < opt.flip
        if opt.mode == "all":
            source = torch.arange(n).repeat_interleave(NUM_ROTATIONS)
            k = torch.arange(NUM_ROTATIONS).repeat(n)
        else:
            source = torch.arange(n)
            k = torch.randint(NUM_ROTATIONS, (n,), generator=generator)
        meta = {"boxes": boxes, "flip": flip, "rotation": k, "source": source}
        return HostBatch({"crops": x}, images.labels, meta)

    def make_device(self, host: HostBatch) -> Batch:
        meta = host.meta
        # Rotate in uint8 and NCHW memory, then normalise: a rotation transposes H and W, which
        # on channels-last floats is a slow strided copy; measured 1.7x faster than rotating
        # normalised floats, although it normalises four times as many pixels.
        x = hflip(host.pixels["crops"], meta["flip"]).contiguous()
        x = all_rotations(x) if self.options.mode == "all" else rot90(x, meta["rotation"])
        inputs = normalize(x, self.options.mean, self.options.std)
        device = inputs.device
        k = meta["rotation"].to(device, non_blocking=True)
        return Batch(inputs, k, labels_on(host, device), meta_on(meta, device))


@register_task(
    "rotation", "predict which of 4 rotations (0/90/180/270) was applied (Gidaris et al. 2018)"
)
class Rotation(Task):
    """Rotation prediction: 4-way classification of the applied rotation."""

    Options = RotationOptions
    Collator = RotationCollator
    options: RotationOptions

    def build(self, backbone: nn.Module) -> nn.Module:
        head = classifier_head(
            feature_dim(backbone), NUM_ROTATIONS, self.options.head, self.options.hidden_dim
        )
        return BackboneWithHead(backbone, head)

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return rotation_loss(outputs, batch.targets)  # type: ignore[arg-type]

    def metrics(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        targets = batch.targets
        if not isinstance(targets, torch.Tensor):
            return {}
        acc = torch.eq(outputs.argmax(1), targets).float().mean()
        return {"pretext_acc": acc}

    def visualize(self, batch: Batch, max_images: int = 8) -> list[tuple[str, torch.Tensor]]:
        """The first ``max_images`` source images: in mode ``"all"`` one row per rotation
        (each image's four inputs in a column), in mode ``"random"`` one row with its degrees."""
        from sslpipe.ops.color import denormalize

        inputs = cast(torch.Tensor, batch.inputs)
        rotation = cast(torch.Tensor, batch.targets)
        source = batch.meta.get("source", torch.arange(len(inputs), device=inputs.device))
        pictures = denormalize(inputs.float().cpu(), self.options.mean, self.options.std)
        shown = (source < max_images).cpu()
        if self.options.mode == "all":
            return [(f"rotated counter-clockwise by {90 * k} degrees",
                     pictures[shown & (rotation.cpu() == k)]) for k in range(NUM_ROTATIONS)]
        degrees = " ".join(str(90 * int(k)) for k in rotation[shown.to(rotation.device)])
        return [(f"inputs rotated counter-clockwise by (degrees): {degrees}", pictures[shown])]


def rotation_loss(logits: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the ``N x 4`` rotation logits."""
    return F.cross_entropy(logits, rotation)
