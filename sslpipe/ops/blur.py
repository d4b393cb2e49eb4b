"""Batched Gaussian blur with per-image sigma: :func:`sample_blur`, :func:`gaussian_blur`.

The blur of SimCLR, BYOL, VICReg and DINO (sigma uniform in 0.1-2.0 px), for float images on
any device. Re-exported by :mod:`sslpipe.ops.augment`, whose view pipeline applies it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_blur", "sample_blur"]


def sample_blur(n: int, p: float, sigma: tuple[float, float] = (0.1, 2.0),
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """``{"blur_sigma": float32 B}``: uniform in ``sigma`` with probability ``p``, else 0."""
    applied = torch.rand(n, generator=generator) < p
    s = torch.empty(n).uniform_(sigma[0], sigma[1], generator=generator)
    return {"blur_sigma": torch.where(applied, s, torch.zeros(n))}


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur of float ``B x C x H x W`` with per-image ``sigma`` (float ``B``).

    Images with ``sigma <= 0`` are returned unchanged and cost nothing. Borders are reflected.
    The kernel has at most ``kernel_size`` taps (odd) and is cut at ``ceil(3 * sigma)`` on each
    side when that is shorter: the weight dropped is below 0.3%, under one uint8 gray level,
    and images with a small sigma (most of them) cost a fraction of the full kernel. Images are
    blurred in groups of equal radius; each kernel is normalised to sum 1, so a constant image
    stays constant and the mean is kept away from the borders.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 1. Got {kernel_size}")
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must have shape ({x.shape[0]},). Got {tuple(sigma.shape)}")
    sigma = sigma.float().cpu()
    max_radius = min(kernel_size // 2, x.shape[-1] - 1, x.shape[-2] - 1)
    radius = torch.ceil(3 * sigma).clamp(max=max_radius).long()
    radius[sigma <= 0] = 0
    out = x
    for r in sorted(set(radius.tolist()) - {0}):
        idx = torch.nonzero(radius == r)[:, 0]
        taps = torch.arange(-r, r + 1, dtype=torch.float32)
        kernel = torch.exp(-(taps[None] ** 2) / (2 * sigma[idx, None] ** 2))
        kernel = (kernel / kernel.sum(1, keepdim=True)).to(x.device, non_blocking=True)
        whole = idx.numel() == x.shape[0]
        rows = idx.to(x.device, non_blocking=True)
        sub = x.float() if whole else x[rows].float()
        sub = _blur_axis(_blur_axis(sub, kernel, -1), kernel, -2)
        if whole:
            return sub
        if out is x:
            out = x.clone()
        out[rows] = sub.to(out.dtype)
    return out


def _blur_axis(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    # Shifted multiply-adds with per-image weights: depthwise conv2d with B*C groups is several
    # times slower on CPU for these tap counts.
    r = kernel.shape[1] // 2
    pad = (r, r, 0, 0) if dim == -1 else (0, 0, r, r)
    padded = F.pad(x, pad, mode="reflect")
    length = x.shape[dim]
    out = padded.narrow(dim, 0, length) * kernel[:, 0].view(-1, 1, 1, 1)
    for t in range(1, kernel.shape[1]):
        out.addcmul_(padded.narrow(dim, t, length), kernel[:, t].view(-1, 1, 1, 1))
    return out
