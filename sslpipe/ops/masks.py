"""Inpainting masks and their loss weights (Pathak et al., "Context Encoders: Feature Learning
by Inpainting", CVPR 2016; official code ``pathak22/context-encoder``).

Masks are bool ``B x 1 x H x W``, True where a pixel is blanked (the hole). Random masks are
drawn on the CPU generator (a host stage); :func:`random_mask_weights` and :func:`dilate` are
tensor math on any device (a device stage).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# train.lua / train_random.lua: ``overlapL2Weight = 10``
OVERLAP_WEIGHT = 10.0
# train_random.lua: uniform noise on a grid of ``res = 0.06`` cells per pixel, bicubic-upsampled
REGION_CELLS_PER_PIXEL = 0.06
RANDOM_WEIGHTS = ("uniform", "context", "band", "hole")


def center_region(size: int) -> tuple[int, int]:
    """``(start, side)`` of the central square of side ``size // 2``."""
    side = size // 2
    return (size - side) // 2, side


def center_mask(n: int, size: int, overlap: int, overlap_weight: float,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The centre mask and its loss weights (``train.lua`` with ``overlapPred``).

    Returns:
        ``mask``: bool ``n x 1 x size x size``, True in the hole: the central square
        (:func:`center_region`) shrunk by ``overlap`` px on each side; ``weights``: float
        ``n x 1 x side x side`` over the central square, 1 in the hole and ``overlap_weight``
        in the visible band of ``overlap`` px around it.
    """
    s, o = size, overlap
    start, side = center_region(s)
    mask = torch.zeros(n, 1, s, s, dtype=torch.bool, device=device)
    mask[..., start + o:start + side - o, start + o:start + side - o] = True
    weights = torch.full((n, 1, side, side), overlap_weight, device=device)
    weights[..., o:side - o, o:side - o] = 1.0
    return mask, weights


def block_masks(n: int, size: int, coverage: float,
                generator: torch.Generator | None, max_blocks: int = 64) -> torch.Tensor:
    """Random square blocks (side ``size/8 .. size/4``) added until each image is at least
    ``coverage`` blank: bool ``n x 1 x size x size`` on the CPU (the paper's "random block"
    masks; the official code has none)."""
    lo, hi = max(1, size // 8), max(1, size // 4)
    sides = torch.randint(lo, hi + 1, (max_blocks, n), generator=generator)
    corner = torch.rand(max_blocks, 2, n, generator=generator)
    coords = torch.arange(size)
    mask = torch.zeros(n, 1, size, size, dtype=torch.bool)
    for k in range(max_blocks):
        need = mask.float().mean((1, 2, 3)) < coverage
        if not bool(need.any()):
            break
        x0 = (corner[k, 0] * (size - sides[k] + 1)).long()
        y0 = (corner[k, 1] * (size - sides[k] + 1)).long()
        cols = (coords >= x0[:, None]) & (coords < (x0 + sides[k])[:, None])
        rows = (coords >= y0[:, None]) & (coords < (y0 + sides[k])[:, None])
        block = rows[:, :, None] & cols[:, None, :]
        mask |= (block & need[:, None, None])[:, None]
    return mask


def region_masks(n: int, size: int, coverage: float, generator: torch.Generator | None,
                 cells_per_pixel: float = REGION_CELLS_PER_PIXEL) -> torch.Tensor:
    """Smooth random blobs covering ``coverage`` of each image: bool ``n x 1 x size x size``.

    As ``train_random.lua``: uniform noise on a coarse grid of ``cells_per_pixel`` cells per
    pixel (0.06: about 8 cells across 128 px), bicubic-upsampled, the lowest values blank. The
    official code thresholds one large pattern at 0.25 and re-draws its 128 px window until
    20-30% of it is blank, one mask for the whole batch; here each image draws its own pattern,
    thresholded at its ``coverage`` quantile (exactly ``coverage`` blank, no re-draw loop).
    """
    cells = max(2, round(cells_per_pixel * size))
    coarse = torch.rand(n, 1, cells, cells, generator=generator)
    noise = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    flat = noise.flatten(1)
    k = max(1, min(flat.shape[1], int(round(coverage * flat.shape[1]))))
    threshold = flat.kthvalue(k, dim=1).values
    return (flat <= threshold[:, None]).view(n, 1, size, size)


def random_mask_weights(mask: torch.Tensor, rule: str, overlap: int = 0,
                        overlap_weight: float = OVERLAP_WEIGHT) -> torch.Tensor:
    """Per-pixel L2 weights of a whole-image prediction under a random mask: float
    ``B x 1 x H x W`` on ``mask``'s device.

    Rules (``mask`` True in the hole):

    * ``"uniform"``: 1 everywhere, hole and context alike (``train_random.lua`` with
      ``useOverlapPred=0``, the README's training command);
    * ``"context"``: 1 in the hole, ``overlap_weight`` on every visible pixel
      (``train_random.lua`` with ``useOverlapPred=1``);
    * ``"band"``: 1 in the hole, ``overlap_weight`` on the visible pixels within ``overlap``
      px (chessboard distance) of it, 0 elsewhere (the centre mask's overlap band carried over);
    * ``"hole"``: 1 in the hole, 0 elsewhere (the paper's masked L2, eq. 1).
    """
    hole = mask.float()
    if rule == "uniform":
        return torch.ones_like(hole)
    if rule == "context":
        return hole + (1.0 - hole) * overlap_weight
    if rule == "band":
        band = dilate(mask, overlap) & ~mask
        return hole + band.float() * overlap_weight
    if rule == "hole":
        return hole
    raise ValueError(f"rule must be one of {', '.join(map(repr, RANDOM_WEIGHTS))}. Got {rule!r}")


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a bool ``B x 1 x H x W`` mask by a ``(2r+1)`` square."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0
