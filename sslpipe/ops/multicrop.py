"""Multi-crop in one batch: several random resized crops of every image, at several sizes.

SwAV (Caron et al. 2020) and DINO (Caron et al. 2021) train on two *global* crops of 224 px
and several small *local* crops of 96 px per image. Done per image on a CPU (torchvision's
``RandomResizedCrop`` eight times, then the colour ops on each crop) this is where a pipeline
starves the GPU. Here the crops of a whole batch are made together, in two stages:

* host (:func:`sample_crop_sets`): every box and every colour parameter drawn on the CPU
  generator, each image decoded **once** (a JPEG at the largest DCT reduction that every one
  of its crops allows, so that no crop is upscaled by the reduction), and the crops of one
  output size made together (:func:`multi_crop`): uint8, channels-last antialiased resizes on
  the CPU, one ``roi_align`` over every crop of the size group on a GPU
  (:func:`sslpipe.ops.crops.crop_views`);
* device (:func:`apply_crop_sets`): flips, colour matrices fused with the normalisation, blur
  and solarisation, one batched call per crop set (:func:`sslpipe.ops.augment.apply_view`).

A :class:`CropSet` is crops of one kind (DINO's two global crops, or its local crops): one
output size, one scale range, and a colour policy per crop. Its pixels and parameters are
stacked crop-major: row ``k * B + i`` is crop ``k`` of image ``i``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sslpipe.ops.augment import ViewAugment, apply_view, sample_view
from sslpipe.ops.crops import crop_views
from sslpipe.ops.decoding import EncodedImage
from sslpipe.ops.geometry import random_resized_crop_boxes
from sslpipe.ops.images import ImageList, image_sizes

__all__ = ["CropSet", "apply_crop_sets", "local_size_for", "multi_crop", "sample_crop_sets"]


@dataclass(frozen=True)
class CropSet:
    """Crops of one kind: ``len(augments)`` random resized crops per image at one size.

    Attributes:
        name: the key of its pixels (``HostBatch.pixels[name]``) and the prefix of its
            parameters in ``meta`` (``{name}_boxes``, ``{name}_flip``, ...).
        size: output side in pixels.
        scale: range of the crop's area as a fraction of the image's (RandomResizedCrop's
            ``scale``: DINO's global crops (0.4, 1), its local ones (0.05, 0.4)).
        augments: the colour and blur policy of each crop (one entry per crop; all with the
            same ``blur_kernel``, as one batched blur serves the set).
        ratio: range of the aspect ratio (log-uniform), RandomResizedCrop's ``ratio``.
    """

    name: str
    size: int
    scale: tuple[float, float]
    augments: tuple[ViewAugment, ...]
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"CropSet {self.name!r}: size must be >= 1. Got {self.size}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"CropSet {self.name!r}: scale must be (lo, hi) with "
                             f"0 < lo <= hi <= 1. Got {self.scale}")
        if not self.augments:
            raise ValueError(f"CropSet {self.name!r}: needs at least one crop (augments)")
        if len({a.blur_kernel for a in self.augments}) > 1:
            raise ValueError(f"CropSet {self.name!r}: every crop must have the same blur_kernel")

    @property
    def count(self) -> int:
        """Crops per image."""
        return len(self.augments)


def local_size_for(size: int, reference: tuple[int, int] = (224, 96)) -> int:
    """The local-crop side that keeps SwAV's and DINO's ratio ``96 / 224`` at ``size`` (at least
    1 px): 96 at 224, 27 at 64, 14 at 32."""
    return max(1, round(size * reference[1] / reference[0]))


def sample_crop_sets(
    images: ImageList, sets: Sequence[CropSet], generator: torch.Generator | None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The host stage of multi-crop: every crop of every set, in uint8, and its parameters.

    Draws, in this order on the CPU ``generator``: the boxes of every crop of every set (set
    by set, crop by crop, :func:`~sslpipe.ops.geometry.random_resized_crop_boxes`), then each
    crop's colour parameters (:func:`~sslpipe.ops.augment.sample_view`), set by set.

    Args:
        images: uint8 ``B x 3 x H x W`` or a list of ``3 x H_i x W_i`` tensors, or lazy
            :class:`~sslpipe.ops.images.EncodedImage` entries (decoded here, once each).
        sets: the crop sets; their names must differ.
        generator: a CPU generator (None: torch's global RNG).

    Returns:
        ``(pixels, meta)``: ``pixels[set.name]`` uint8 ``count*B x 3 x size x size``
        (crop-major), on the images' device; ``meta`` (CPU) with, per set, ``{name}_boxes``
        (float ``count*B x 4``, ``(x0, y0, x1, y1)`` in source pixels) and every parameter of
        :func:`~sslpipe.ops.augment.sample_view` as ``{name}_{param}`` (``count*B`` rows), and
        ``decode_scale`` (int64 ``B``: the JPEG DCT reduction used; 1 for decoded inputs).
    """
    names = [s.name for s in sets]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"sets must be one or more crop sets with distinct names. Got {names}")
    sizes = image_sizes(images)
    boxes = [[random_resized_crop_boxes(sizes, generator, s.scale, s.ratio)
              for _ in s.augments] for s in sets]
    crops, scale = multi_crop(images, [b for bs in boxes for b in bs],
                              [s.size for s in sets for _ in s.augments])
    pixels: dict[str, torch.Tensor] = {}
    meta: dict[str, torch.Tensor] = {}
    first = 0
    for s, set_boxes in zip(sets, boxes):
        mine = crops[first:first + s.count]
        first += s.count
        pixels[s.name] = mine[0] if s.count == 1 else torch.cat(mine)
        meta[f"{s.name}_boxes"] = torch.cat(set_boxes)
        params = [sample_view(len(sizes), aug, generator) for aug in s.augments]
        meta.update({f"{s.name}_{k}": torch.cat([p[k] for p in params]) for k in params[0]})
    meta["decode_scale"] = scale
    return pixels, meta


def apply_crop_sets(
    pixels: dict[str, torch.Tensor],
    meta: dict[str, torch.Tensor],
    sets: Sequence[CropSet],
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> list[torch.Tensor]:
    """The device stage of multi-crop: each set's uint8 crops flipped, colour-jittered, turned
    gray, blurred, solarised and normalised as its parameters in ``meta`` say, in one batched
    :func:`~sslpipe.ops.augment.apply_view` per set.

    Returns:
        one float32 ``count*B x 3 x size x size`` normalised tensor per set, in ``sets``'
        order, on the pixels' device.
    """
    out = []
    for s in sets:
        prefix = f"{s.name}_"
        params = {k[len(prefix):]: v for k, v in meta.items() if k.startswith(prefix)}
        out.append(apply_view(pixels[s.name], s.augments[0], params, mean, std))
    return out


def multi_crop(
    images: ImageList, boxes: Sequence[torch.Tensor], sizes: Sequence[int]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """uint8 crops of several output sizes from one decode per image.

    Args:
        images: uint8 ``B x 3 x H x W``, or a list of ``3 x H_i x W_i`` tensors or
            :class:`~sslpipe.ops.images.EncodedImage` entries.
        boxes: one float ``B x 4`` box tensor per crop, ``(x0, y0, x1, y1)`` in source pixels.
        sizes: the output side of each crop (as many as ``boxes``).

    Returns:
        ``(crops, decode_scale)``: one uint8 ``B x 3 x s x s`` tensor per box tensor, and the
        JPEG DCT reduction used per image (int64 ``B``). An encoded JPEG is decoded at the
        largest reduction ``r`` in (8, 4, 2) with every one of its boxes at least ``r`` times
        its crop's output side (else in full): the rule of
        :func:`~sslpipe.ops.crops.crop_views` with each crop held to its own size. The crops
        of one size are made by one :func:`~sslpipe.ops.crops.crop_views` call (one
        ``roi_align`` on a GPU).
    """
    if len(boxes) != len(sizes) or not boxes:
        raise ValueError(f"boxes and sizes must be non-empty and as many. Got {len(boxes)} "
                         f"and {len(sizes)}")
    decoded, scale, factors = _decode_once(images, boxes, sizes)
    out: list[torch.Tensor | None] = [None] * len(boxes)
    for size in dict.fromkeys(sizes):  # size groups, in first-seen order
        which = [k for k, s in enumerate(sizes) if s == size]
        crops, _ = crop_views(decoded, [boxes[k] * factors for k in which], size)
        for k, crop in zip(which, crops):
            out[k] = crop
    return [c for c in out if c is not None], scale


def _decode_once(
    images: ImageList, boxes: Sequence[torch.Tensor], sizes: Sequence[int]
) -> tuple[ImageList, torch.Tensor, torch.Tensor]:
    """The images decoded (lazy JPEGs at the reduction every crop allows), the reduction per
    image (int64 ``B``) and the ``B x 4`` factors that carry boxes into decoded pixels."""
    n = len(images)
    if isinstance(images, torch.Tensor) or not any(isinstance(im, EncodedImage)
                                                   for im in images):
        return images, torch.ones(n, dtype=torch.int64), torch.ones(n, 4)
    stacked = torch.stack(list(boxes), 1)  # B x V x 4
    sides = torch.minimum(stacked[..., 2] - stacked[..., 0], stacked[..., 3] - stacked[..., 1])
    room = (sides / torch.tensor(sizes, dtype=torch.float32)).amin(1).tolist()
    decoded: list[torch.Tensor | EncodedImage] = []
    factors = []
    for image, fits in zip(images, room):
        if isinstance(image, EncodedImage):
            r = next((r for r in (8, 4, 2) if fits >= r), 1) if image.format == "JPEG" else 1
            pixels = image.decode(r)
            factors.append((pixels.shape[-1] / image.width, pixels.shape[-2] / image.height))
        else:
            pixels = image
            factors.append((1.0, 1.0))
        decoded.append(pixels)
    f = torch.tensor(factors, dtype=torch.float32).repeat(1, 2)  # fx, fy, fx, fy
    scale = torch.round(1.0 / f[:, 0]).to(torch.int64)
    return decoded, scale, f

