"""Turning what a DataLoader hands a collator into uint8 image tensors.

A collator accepts (docs/design.md, "Collator"):

* a ``B x C x H x W`` uint8 tensor on any device, or
* a list of samples, each ``image`` or ``(image, label)`` (also ``{"image"|"jpg"|"png": ...,
  "cls"|"label": ...}`` as webdataset gives them), where ``image`` is a PIL image, an
  ``H x W x C`` or ``H x W`` uint8 numpy array, a ``C x H x W`` uint8 tensor, or encoded
  JPEG/PNG bytes. Sizes may differ within a batch.

:func:`collect` returns :class:`Images`: a uint8 ``B x 3 x H x W`` tensor when every image has
the same size, else a list of ``3 x H_i x W_i`` uint8 tensors ("ragged"), plus labels.
Grayscale becomes 3 channels, alpha is dropped.

How bytes and PIL images become pixels (EXIF orientation, modes, damage, size limits) is the
decode policy of :mod:`sslpipe.ops.decoding`; ``decode``, ``EncodedImage``,
``DamagedImageWarning`` and ``DEFAULT_MAX_PIXELS`` are re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import torch
from PIL import Image

from sslpipe.ops.decoding import (
    DEFAULT_MAX_PIXELS,
    DamagedImageWarning,
    EncodedImage,
    decode,
    orient,
    pil_to_tensor,
    upright,
)

__all__ = ["DEFAULT_MAX_PIXELS", "DamagedImageWarning", "EncodedImage", "ImageList", "Images",
           "collect", "decode", "image_sizes", "orient", "sample_index", "stack_channels_last",
           "to_chw_uint8"]

# a uint8 B x 3 x H x W batch, or a ragged list (EncodedImage: bytes kept for lazy decoding)
ImageList: TypeAlias = "torch.Tensor | list[torch.Tensor | EncodedImage]"

_IMAGE_KEYS = ("image", "jpg", "jpeg", "png", "webp", "img")
_LABEL_KEYS = ("cls", "label", "target")


@dataclass
class Images:
    """uint8 images of one batch and their dataset labels (None when no sample had one)."""

    images: ImageList
    labels: torch.Tensor | None

    @property
    def device(self) -> torch.device:
        return (
            self.images.device if isinstance(self.images, torch.Tensor) else (self.images[0].device)
        )

    def __len__(self) -> int:
        return len(self.images)

    def sizes(self) -> list[tuple[int, int]]:
        """``(H, W)`` of each image."""
        return image_sizes(self.images)

    def labels_on(self, device: torch.device) -> torch.Tensor | None:
        """The labels moved to ``device`` (None when the samples had none)."""
        return None if self.labels is None else self.labels.to(device)


def collect(samples: Any, *, min_size: int | tuple[int, int] = 1, decode: bool = True,
            max_pixels: int = DEFAULT_MAX_PIXELS) -> Images:
    """Convert a collator's input to :class:`Images` (see module docstring).

    Args:
        samples: a uint8 ``B x C x H x W`` tensor or a sequence of samples.
        min_size: smallest ``(H, W)`` (or side) the caller can work with; a smaller image
            raises ValueError naming the sample.
        decode: with False, encoded bytes are kept as :class:`EncodedImage` (size read from the
            header, pixels decoded later by the caller, e.g. at a reduced DCT scale chosen from
            its crop boxes); the result is then a list (never stacked) whenever one is present.
        max_pixels: largest image (H x W) accepted from encoded bytes, checked on the header.

    Raises:
        ValueError: empty input, an unsupported type or dtype, or an image that is too small.
    """
    min_hw = (min_size, min_size) if isinstance(min_size, int) else tuple(min_size)
    if isinstance(samples, torch.Tensor):
        batch = _from_tensor(samples)
        if batch.shape[-2] < min_hw[0] or batch.shape[-1] < min_hw[1]:
            raise ValueError(
                f"samples: images must be at least {min_hw[0]}x{min_hw[1]} (H x W) for this "
                f"task. Got a batch of {batch.shape[-2]}x{batch.shape[-1]}"
            )
        return Images(batch, None)
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence):
        raise ValueError(
            "samples: expected a uint8 B x C x H x W tensor or a list of samples "
            f"(image or (image, label)). Got {type(samples).__name__}"
        )
    if len(samples) == 0:
        raise ValueError("samples: expected at least one sample. Got an empty list")
    images: list[torch.Tensor | EncodedImage] = []
    labels: list[int] = []
    for i, sample in enumerate(samples):
        image, label = _split_sample(sample, i)
        tensor: torch.Tensor | EncodedImage
        if not decode and isinstance(image, (bytes, bytearray, memoryview)):
            tensor = EncodedImage(bytes(image), where=f"samples[{i}]", max_pixels=max_pixels)
        else:
            tensor = to_chw_uint8(image, where=f"samples[{i}]", max_pixels=max_pixels)
        if tensor.shape[-2] < min_hw[0] or tensor.shape[-1] < min_hw[1]:
            raise ValueError(
                f"samples[{i}]: image is {tensor.shape[-2]}x{tensor.shape[-1]} (H x W), smaller "
                f"than the {min_hw[0]}x{min_hw[1]} this task needs; resize it or lower `size`"
            )
        images.append(tensor)
        if label is not None:
            labels.append(int(label))
    if labels and len(labels) != len(images):
        raise ValueError(
            f"samples: either every sample has a label or none does. Got {len(labels)} labels "
            f"for {len(images)} images"
        )
    devices = {im.device for im in images}
    if len(devices) > 1:
        raise ValueError(
            f"samples: all images must be on one device. Got {sorted(map(str, devices))}"
        )
    label_tensor = torch.tensor(labels, dtype=torch.int64) if labels else None
    shapes = {tuple(im.shape) for im in images}
    decoded = [im for im in images if isinstance(im, torch.Tensor)]
    if len(shapes) == 1 and len(decoded) == len(images):
        return Images(stack_channels_last(decoded), label_tensor)
    return Images(images, label_tensor)


def sample_index(where: str) -> int | None:
    """The index ``i`` of a ``"samples[i]"`` name (as :func:`collect` names samples)."""
    match = re.fullmatch(r"samples\[(\d+)\]", where)
    return int(match.group(1)) if match else None


def stack_channels_last(images: list[torch.Tensor]) -> torch.Tensor:
    """Stack ``3 x H x W`` images into a ``B x 3 x H x W`` tensor in channels-last memory
    (what uint8 resizes and the HWC decoders want)."""
    return torch.stack([im.permute(1, 2, 0) for im in images]).permute(0, 3, 1, 2)


def image_sizes(images: ImageList) -> list[tuple[int, int]]:
    """``(H, W)`` of each image of a uint8 batch tensor or a (ragged, maybe lazy) list."""
    if isinstance(images, torch.Tensor):
        h, w = images.shape[-2:]
        return [(int(h), int(w))] * images.shape[0]
    return [(int(im.shape[-2]), int(im.shape[-1])) for im in images]


def to_chw_uint8(image: Any, where: str = "image", *,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """One image (PIL, numpy HWC/HW, tensor CHW/HW, or encoded bytes) as ``3 x H x W`` uint8.

    Encoded bytes and PIL images follow the module's decode policy (EXIF orientation, modes).
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode(bytes(image), where=where, max_pixels=max_pixels)
    if isinstance(image, Image.Image):
        return pil_to_tensor(upright(image, where))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"{where}: numpy images must be uint8. Got {image.dtype}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise ValueError(
                f"{where}: numpy images must be H x W or H x W x C with C in 1, 3, 4. "
                f"Got shape {image.shape}"
            )
        if not image.flags.writeable:  # torch warns on read-only arrays (e.g. np.asarray(PIL))
            image = image.copy()
        return _to_rgb(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), where)
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise ValueError(f"{where}: image tensors must be uint8 (0-255). Got {image.dtype}")
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3:
            raise ValueError(
                f"{where}: image tensors must be C x H x W. Got shape {tuple(image.shape)}"
            )
        return _to_rgb(image, where)
    raise ValueError(
        f"{where}: expected a PIL image, a uint8 numpy array, a uint8 tensor or encoded "
        f"JPEG/PNG bytes. Got {type(image).__name__}"
    )


def _from_tensor(x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.uint8:
        raise ValueError(f"samples: a batch tensor must be uint8 (0-255). Got {x.dtype}")
    if x.ndim != 4 or x.shape[1] not in (1, 3, 4):
        raise ValueError(
            f"samples: a batch tensor must be B x C x H x W with C in 1, 3, 4. Got shape "
            f"{tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError("samples: expected at least one image. Got a batch of 0")
    if x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    return x[:, :3]


def _to_rgb(x: torch.Tensor, where: str) -> torch.Tensor:
    c = x.shape[0]
    if c == 1:
        return x.expand(3, -1, -1)
    if c in (3, 4):
        return x[:3]
    raise ValueError(f"{where}: image must have 1, 3 or 4 channels. Got {c}")


def _split_sample(sample: Any, index: int) -> tuple[Any, Any]:
    if isinstance(sample, dict):
        image = next((sample[k] for k in _IMAGE_KEYS if k in sample), None)
        if image is None:
            raise ValueError(
                f"samples[{index}]: a dict sample needs one of the keys {list(_IMAGE_KEYS)}. "
                f"Got keys {sorted(sample)}"
            )
        label = next((sample[k] for k in _LABEL_KEYS if k in sample), None)
        return image, _as_label(label, index)
    if isinstance(sample, (tuple, list)):
        if len(sample) == 2:
            return sample[0], _as_label(sample[1], index)
        if len(sample) == 1:
            return sample[0], None
        raise ValueError(
            f"samples[{index}]: expected image or (image, label). Got a {type(sample).__name__} "
            f"of length {len(sample)}"
        )
    return sample, None


def _as_label(label: Any, index: int) -> int | None:
    if label is None:
        return None
    if isinstance(label, (bytes, bytearray)):
        label = label.decode().strip()
    try:
        return int(label)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"samples[{index}]: label must be an integer class index. Got {label!r}"
        ) from err
