"""Colour ops: uint8 to normalized float, fused with per-image 3x4 colour matrices.

Brightness, contrast, saturation, hue (a rotation in YIQ) and grayscale are linear in RGB
(docs/design.md, "Where the time goes"); composed with the mean/std normalisation they become
one ``3 x 4`` affine matrix per image, applied to the batch by one batched matmul.
"""

from __future__ import annotations

import torch

from sslpipe.devices import constant

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(
    x: torch.Tensor,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    matrix: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 ``B x 3 x H x W`` (or float in [0, 255]) to normalized float32.

    ``out = (M @ [x/255, 1] - mean) / std`` where ``M`` is ``matrix[i]`` (``B x 3 x 4``, acting
    on RGB in [0, 1]) or the identity. One fused pass over the pixels.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"x must be B x 3 x H x W. Got shape {tuple(x.shape)}")
    device = x.device
    mean_t = constant(mean, device)
    std_t = constant(std, device)
    if matrix is None:
        scale = (1.0 / (255.0 * std_t)).view(1, 3, 1, 1)
        shift = (-mean_t / std_t).view(1, 3, 1, 1)
        # in place on the fresh float copy: about 2x faster than one out-of-place addcmul
        return x.to(torch.float32, copy=True).mul_(scale).add_(shift)
    m = matrix.to(device=device, dtype=torch.float32, non_blocking=True)
    # fold 1/255, mean and std into the affine map: out = A @ x + b
    a = m[:, :, :3] / (255.0 * std_t.view(1, 3, 1))
    b = (m[:, :, 3] - mean_t) / std_t
    b_, c, h, w = x.shape
    flat = x.reshape(b_, c, h * w).float()
    out = torch.baddbmm(b.unsqueeze(-1), a, flat)
    return out.view(b_, c, h, w)


def denormalize(
    x: torch.Tensor, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """Inverse of :func:`normalize` without a matrix: float in [0, 1] (for pictures)."""
    c = x.shape[-3]
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(c, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(c, 1, 1)
    return (x * std_t + mean_t).clamp(0, 1)
