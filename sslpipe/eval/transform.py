"""Evaluation collators: the same decode path as pretraining, no randomness at test time.

:class:`EvalCollator` (features for probes, kNN, the fine-tuning test set): collect (decode,
grayscale to 3 channels) -> resize the shorter side to ``size`` and centre-crop a
``size x size`` square (uint8) -> normalize.

:class:`TrainCollator` (fine-tuning's training set): random resized crop to ``size`` + random
horizontal flip -> normalize.

Resize policy for small images: every image is resized so that its centre square on the
shorter side becomes ``size x size``, upsampling when the source is smaller (FashionMNIST 28 px
-> 32 px by default). A table compares methods only at one ``size``, which is recorded in every
result file's config, so every method sees exactly the same pixels.
"""

from __future__ import annotations

from typing import Any

import torch

from sslpipe.batch import Batch, HostBatch
from sslpipe.eval.defaults import DEFAULT_SIZE
from sslpipe.ops.color import IMAGENET_MEAN, IMAGENET_STD, normalize
from sslpipe.ops.geometry import (
    center_square_boxes,
    hflip,
    random_resized_crop_boxes,
    resized_crop,
)
from sslpipe.ops.images import collect
from sslpipe.tasks.base import SeededStream, check_positive


class EvalCollator:
    """Deterministic collator: centre square, resize to ``size``, normalize.

    Args:
        size: output side in pixels (> 0).
        mean, std: per-channel normalisation (RGB in [0, 1]).

    Calling it on a list of samples (``image`` / ``(image, label)`` / webdataset dicts) or a
    uint8 ``B x C x H x W`` tensor returns ``Batch(inputs, targets=None, labels)`` with
    ``inputs`` float32 ``B x 3 x size x size`` (normalized) on the images' device and
    ``labels`` int64 ``B`` (or None when the samples carry none).
    """

    def __init__(
        self,
        size: int = DEFAULT_SIZE,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        check_positive("size", size)
        self.size = int(size)
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, samples: Any, generator: torch.Generator | None = None) -> Batch:
        """Resize and normalise a batch (no randomness: ``generator`` is accepted, as
        ``create_loader`` passes one to every collator, and unused)."""
        return self.device_stage(self.host_stage(samples, generator))

    def host_stage(self, samples: Any, generator: torch.Generator | None = None) -> HostBatch:
        """Decode and centre-crop to ``size`` in uint8 (see :class:`~sslpipe.tasks.base.Collator`
        for the two stages)."""
        images = collect(samples)
        boxes = center_square_boxes(images.sizes())
        return HostBatch({"crops": resized_crop(images.images, boxes, self.size)}, images.labels,
                         size=len(images))

    def device_stage(self, host: HostBatch) -> Batch:
        """Normalise on the device of ``host.pixels``."""
        x = host.pixels["crops"]
        if "flip" in host.meta:
            x = hflip(x, host.meta["flip"])
        inputs = normalize(x, self.mean, self.std)
        device = inputs.device
        labels = None if host.labels is None else host.labels.to(device, non_blocking=True)
        meta = {k: v.to(device, non_blocking=True) for k, v in host.meta.items()}
        return Batch(inputs, None, labels, meta, size=host.size)

    def config(self) -> dict[str, Any]:
        """What a result file records about the input pipeline."""
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std),
                "resize": "centre square on the shorter side, bilinear (antialiased) to size"}


class TrainCollator(EvalCollator):
    """Fine-tuning augmentation: random resized crop (``scale``) to ``size`` + flip (p=0.5).

    Args:
        size, mean, std: as :class:`EvalCollator`.
        scale: area fraction range of the random crop, in (0, 1].
        seed: makes the crops reproducible (None: torch's global RNG).

    Returns the same Batch layout as :class:`EvalCollator`; ``meta`` holds ``boxes``
    (float ``B x 4``) and ``flip`` (bool ``B``).
    """

    def __init__(
        self,
        size: int = DEFAULT_SIZE,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        scale: tuple[float, float] = (0.2, 1.0),
        seed: int | None = None,
    ) -> None:
        super().__init__(size, mean, std)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1. Got {scale!r}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.seed = seed
        self._stream = SeededStream(seed) if seed is not None else None

    def host_stage(self, samples: Any, generator: torch.Generator | None = None) -> HostBatch:
        """Random resized crop in uint8 and the flips drawn; ``generator`` (as ``create_loader``
        passes one per step) overrides the collator's own seeded stream."""
        images = collect(samples)
        gen = generator if generator is not None else (self._stream() if self._stream else None)
        boxes = random_resized_crop_boxes(images.sizes(), gen, scale=self.scale)
        x = resized_crop(images.images, boxes, self.size)
        flip = torch.rand(len(images), generator=gen) < 0.5
        return HostBatch({"crops": x}, images.labels, {"boxes": boxes, "flip": flip},
                         size=len(images))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "train_augment": {"random_resized_crop_scale": list(self.scale),
                                                      "hflip": 0.5}}
