"""Batched geometric ops on uint8 images: crop boxes, flips, rot90.

Boxes are float ``B x 4`` tensors ``(x0, y0, x1, y1)`` in the pixel coordinates of each source
image (x1, y1 exclusive). Random box samplers take a CPU ``torch.Generator``: parameters are
drawn on the CPU (they are tiny), so a seed gives the same batch on every device.

The resized crops themselves (:func:`resized_crop`, :func:`crop_views`, and the ragged padding
they use) are in :mod:`sslpipe.ops.crops`, re-exported here.
"""

from __future__ import annotations

import math

import torch

from sslpipe.ops.crops import crop_views, pad_ragged, resized_crop, size_groups
from sslpipe.ops.images import ImageList, image_sizes

__all__ = ["all_rotations", "center_square_boxes", "crop_views", "hflip", "pad_ragged",
           "random_resized_crop_boxes", "random_square_boxes", "resized_crop", "rot90",
           "size_groups", "square_boxes", "square_crops"]


def center_square_boxes(sizes: list[tuple[int, int]]) -> torch.Tensor:
    """The largest centred square of each image, as ``B x 4`` boxes.

    This is sslpipe's policy for non-square inputs of tasks that need square images
    (rotation, jigsaw, ...): keep the centre square on the shorter side, then resize.
    """
    boxes = []
    for h, w in sizes:
        side = min(h, w)
        x0, y0 = (w - side) // 2, (h - side) // 2
        boxes.append((x0, y0, x0 + side, y0 + side))
    return torch.tensor(boxes, dtype=torch.float32)


def square_boxes(
    sizes: list[tuple[int, int]], crop: str, generator: torch.Generator | None
) -> torch.Tensor:
    """The square-crop policy of tasks that need square images, as ``B x 4`` boxes:
    ``crop="center"`` (:func:`center_square_boxes`) or ``"random"`` (:func:`random_square_boxes`).
    """
    if crop == "center":
        return center_square_boxes(sizes)
    if crop == "random":
        return random_square_boxes(sizes, generator)
    raise ValueError(f"crop must be 'center' or 'random'. Got {crop!r}")


def square_crops(
    images: ImageList, size: int, crop: str, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Square crops of every image under the square-crop policy (:func:`square_boxes`),
    resized to ``size``: uint8 ``B x 3 x size x size`` and the ``B x 4`` boxes used."""
    boxes = square_boxes(image_sizes(images), crop, generator)
    return resized_crop(images, boxes, size), boxes


def random_square_boxes(
    sizes: list[tuple[int, int]], generator: torch.Generator | None
) -> torch.Tensor:
    """A random square of the shorter side in each image (random crop along the longer side)."""
    u = torch.rand(len(sizes), generator=generator)
    boxes = []
    for (h, w), r in zip(sizes, u.tolist()):
        side = min(h, w)
        x0 = int(round(r * (w - side)))
        y0 = int(round(r * (h - side)))
        boxes.append((x0, y0, x0 + side, y0 + side))
    return torch.tensor(boxes, dtype=torch.float32)


def random_resized_crop_boxes(
    sizes: list[tuple[int, int]],
    generator: torch.Generator | None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> torch.Tensor:
    """Boxes as torchvision's RandomResizedCrop samples them, vectorised over the batch.

    Each box covers a fraction of the image area drawn uniformly from ``scale`` with a
    log-uniform aspect ratio from ``ratio``; after ``attempts`` misses a centre crop clipped to
    ``ratio`` is used, as torchvision does.
    """
    n = len(sizes)
    hw = torch.tensor(sizes, dtype=torch.float32).reshape(n, 2)
    h, w = hw[:, 0], hw[:, 1]
    area = h * w
    target = area[:, None] * torch.empty(n, attempts).uniform_(*scale, generator=generator)
    log_r = torch.empty(n, attempts).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = torch.exp(log_r)
    cw = torch.round(torch.sqrt(target * aspect))
    ch = torch.round(torch.sqrt(target / aspect))
    ok = (cw > 0) & (ch > 0) & (cw <= w[:, None]) & (ch <= h[:, None])
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    ux = torch.rand(n, generator=generator)
    uy = torch.rand(n, generator=generator)
    # the first attempt that fits; else a centre crop with the closest allowed ratio
    hit = first >= 0
    pick = first.clamp(min=0)[:, None]
    in_ratio = w / h
    narrow, wide = in_ratio < ratio[0], in_ratio > ratio[1]
    fallback_w = torch.where(wide, torch.round(h * ratio[1]), w)
    fallback_h = torch.where(narrow, torch.round(w / ratio[0]), h)
    bw = torch.where(hit, cw.gather(1, pick)[:, 0], fallback_w)
    bh = torch.where(hit, ch.gather(1, pick)[:, 0], fallback_h)
    # a uniform integer offset, as torch.randint(0, w - bw + 1); the fallback centred as
    # torchvision centres it ((w - bw) // 2)
    x0 = torch.where(hit, torch.minimum(torch.floor(ux * (w - bw + 1)), w - bw),
                     torch.floor((w - bw) / 2))
    y0 = torch.where(hit, torch.minimum(torch.floor(uy * (h - bh + 1)), h - bh),
                     torch.floor((h - bh) / 2))
    return torch.stack([x0, y0, x0 + bw, y0 + bh], 1)


def hflip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images ``x[i]`` (``B x C x H x W``) where ``flip[i]`` is True."""
    if not bool(flip.any()):  # flip on the CPU (a device stage's meta): no device sync
        return x
    flip = flip.to(x.device, non_blocking=True)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def rot90(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each square image ``x[i]`` by ``k[i] * 90`` degrees counter-clockwise.

    Args:
        x: ``B x C x S x S`` (any dtype).
        k: int ``B`` in 0..3 (other values are taken modulo 4).
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rot90 needs square images. Got {x.shape[-2]}x{x.shape[-1]}")
    k = (k % 4).view(-1)
    if k.shape[0] != x.shape[0]:
        raise ValueError(f"k must have one entry per image ({x.shape[0]}). Got {k.shape[0]}")
    out = torch.empty_like(x)
    # one batched rotation per angle (4 at most), each image copied once; the selection is
    # made where k is (the CPU, in a device stage), so a GPU batch costs no device sync
    for r in range(4):
        chosen = torch.nonzero(k == r)[:, 0]
        if chosen.numel():
            chosen = chosen.to(x.device, non_blocking=True)
            out[chosen] = torch.rot90(x[chosen], r, dims=(-2, -1))
    return out


def all_rotations(x: torch.Tensor) -> torch.Tensor:
    """The four rotations (0, 90, 180, 270 degrees counter-clockwise) of each square image:
    ``B x C x S x S`` in, ``4B x C x S x S`` out, ordered image by image."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"all_rotations needs square images. Got {x.shape[-2]}x{x.shape[-1]}")
    return torch.stack([torch.rot90(x, r, dims=(-2, -1)) for r in range(4)], 1).flatten(0, 1)
