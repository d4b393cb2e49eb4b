"""Lanczos resampling of batched images, as OpenCV's ``INTER_LANCZOS4`` (torch has none).

OpenCV's Lanczos filter has ``a = 4`` lobes: an output pixel ``d`` samples the source at
``s = (d + 0.5) * in / out - 0.5`` and weighs the 8 source pixels ``floor(s) - 3 ..
floor(s) + 4`` by ``L(s - j) = sinc(s - j) * sinc((s - j) / 4)`` (normalised sinc), normalised
to sum to 1; taps beyond the border repeat the edge pixel. As in OpenCV (and unlike PIL) the
kernel is not widened when downsampling. The filter is separable, so a resize is two small
matrix products, ``W_h @ x @ W_w^T``, on any device.
"""

from __future__ import annotations

import torch

LANCZOS_LOBES = 4


def lanczos_resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize ``B x C x H x W`` images to ``size`` with OpenCV's Lanczos-4 filter.

    Args:
        x: float images, any range (uint8 is converted to float32), any device.
        size: output side, or ``(height, width)``.

    Returns:
        float ``B x C x h x w`` (``x``'s float dtype, float32 for integer input), not clamped:
        the negative lobes can overshoot the input range at edges.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be B x C x H x W. Got shape {tuple(x.shape)}")
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1:
        raise ValueError(f"size must be >= 1. Got {size}")
    if not x.is_floating_point():
        x = x.float()
    wh = lanczos_weights(x.shape[2], h).to(device=x.device, dtype=x.dtype)
    ww = lanczos_weights(x.shape[3], w).to(device=x.device, dtype=x.dtype)
    return wh @ x @ ww.T


def lanczos_weights(in_size: int, out_size: int) -> torch.Tensor:
    """float64 ``out_size x in_size`` matrix of the Lanczos-4 resampling along one axis
    (rows sum to 1)."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1. Got {in_size} -> {out_size}")
    pos = (torch.arange(out_size, dtype=torch.float64) + 0.5) * (in_size / out_size) - 0.5
    first = torch.floor(pos) - (LANCZOS_LOBES - 1)
    taps = first.unsqueeze(1) + torch.arange(2 * LANCZOS_LOBES, dtype=torch.float64)
    t = pos.unsqueeze(1) - taps
    weight = torch.sinc(t) * torch.sinc(t / LANCZOS_LOBES)
    weight = weight / weight.sum(1, keepdim=True)
    index = taps.long().clamp(0, in_size - 1)  # the edge pixel repeats beyond the border
    out = torch.zeros(out_size, in_size, dtype=torch.float64)
    return out.scatter_add_(1, index, weight)
