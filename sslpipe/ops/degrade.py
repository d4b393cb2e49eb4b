"""Per-patch degradations against low-level shortcuts: pixelation, colour dropping and
brightness normalisation.

Doersch et al. ("Unsupervised Visual Representation Learning by Context Prediction", ICCV 2015)
degrade each patch so that a network cannot solve the task from resolution or brightness cues;
the rules here are those of the official code (``cdoersch/deepcontext``, ``train.py``,
``prep_image``): about a third of the patches are downsampled (to between 100 pixels and one
pixel less per side than the patch) and upsampled back, and each patch's mean is subtracted
and its root-mean-square scaled to a constant.

Colour dropping (:func:`drop_channels`, the paper's) keeps one colour channel of each patch and
fills the others with faint Gaussian noise. Noroozi & Favaro's jigsaw standardises each tile
to zero mean and unit std instead (:func:`standardize_tiles`, the official ``MVN``).

:func:`sample_pixelation` draws the parameters on the CPU generator (a host stage);
:func:`pixelate`, :func:`drop_channels`, :func:`standardize_patches` and
:func:`standardize_tiles` are batched float math for the device stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# the official code: p < .33, side sqrt(U * (95^2 - 10^2) + 10^2) at 96 px patches
PIXELATE_P = 0.33
PIXELATE_MIN_SIDE = 10
_EPS = 1e-6
_TILE_STD_FLOOR = 1e-2  # keeps a flat tile flat instead of amplifying its noise


def sample_pixelation(n: int, size: int, p: float = PIXELATE_P, min_side: int = PIXELATE_MIN_SIDE,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The side each of ``n`` patches of ``size`` px is downsampled to: int64 ``n``.

    With probability ``p`` a patch is pixelated: its side is ``floor(sqrt(a))`` with the area
    ``a`` uniform in ``[min_side**2, (size - 1)**2)``, so sides run from ``min_side`` to
    ``size - 2`` (10 to 94 at 96 px, as ``deepcontext/train.py``, which draws
    ``sqrt(U * (95^2 - 10^2) + 10^2)``); otherwise the side is ``size`` (no change). Two
    uniform draws per patch, whether pixelated or not.

    Raises:
        ValueError: ``p`` outside [0, 1], or ``min_side`` outside ``1 .. size - 1``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1]. Got {p!r}")
    if not 1 <= min_side <= size - 1:
        raise ValueError(f"min_side must be in 1..{size - 1} for {size} px patches. Got {min_side}")
    pick = torch.rand(n, generator=generator) < p
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    area = u * ((size - 1) ** 2 - min_side**2) + min_side**2
    side = area.sqrt().floor().long().clamp(min_side, size - 1)
    return torch.where(pick, side, torch.full_like(side, size))


def pixelate(x: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
    """Downsample each patch to ``side[i] x side[i]`` and back, bilinearly: one batched op.

    Both resizes are what ``F.interpolate(mode="bilinear", align_corners=False,
    antialias=False)`` does (the official code's ``caffe.io.resize``, scikit-image order 1,
    also interpolates between the two nearest samples without an anti-alias filter). Both are
    separable linear maps, so their composition is ``R x R^T`` with ``R = U D`` (``p x p``)
    per patch: two batched matmuls for the whole batch, whatever mix of sides it holds. The
    result has rank at most ``side[i]`` per channel; ``side[i] == p`` gives ``x`` exactly.

    Args:
        x: float ``N x C x p x p``.
        side: int64 ``N`` in ``1 .. p`` (any device; read without a host sync).

    Returns:
        float ``N x C x p x p`` on ``x``'s device.
    """
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x must be N x C x p x p. Got shape {tuple(x.shape)}")
    if side.shape != (x.shape[0],):
        raise ValueError(f"side must hold one side per patch ({x.shape[0]}). Got "
                         f"{tuple(side.shape)}")
    p = x.shape[-1]
    side = side.to(x.device, non_blocking=True)
    full = torch.full_like(side, p)
    r = _linear_resize_matrix(side, full, p) @ _linear_resize_matrix(full, side, p)  # N x p x p
    r = r.to(x.dtype).unsqueeze(1)
    return r @ x @ r.transpose(-1, -2)


def standardize_patches(x: torch.Tensor, rms: bool = True) -> torch.Tensor:
    """Each patch's per-channel mean subtracted and, with ``rms``, the patch scaled to unit
    root-mean-square over all its channels and pixels.

    The official code (``deepcontext/train.py``, ``prep_image``) subtracts the mean of the
    channel it keeps and scales the patch to an RMS of 50 grey levels, "roughly the same as the
    usual AlexNet inputs"; on sslpipe's mean/std-normalised inputs the same intent is an RMS of
    1. A constant patch becomes 0.

    Args:
        x: float ``N x C x H x W``.

    Returns:
        float ``N x C x H x W``: every channel of every patch has mean 0; with ``rms`` every
        patch has ``mean(x**2) == 1`` (or is all 0).
    """
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    if not rms:
        return x
    scale = x.square().mean(dim=(-3, -2, -1), keepdim=True).sqrt()
    return x / scale.clamp_min(_EPS)


def drop_channels(x: torch.Tensor, kept: torch.Tensor, drop_noise: float,
                  noise_seed: int) -> torch.Tensor:
    """Colour dropping (Doersch et al. 2015): each patch keeps one colour channel; the others
    hold Gaussian noise of std ``drop_noise`` times the kept channel's std.

    Args:
        x: float ``N x 3 x H x W``.
        kept: int64 ``N`` (any shape of ``N`` elements; any device): the channel each patch
            keeps.
        drop_noise: noise std relative to the kept channel's.
        noise_seed: seeds the noise, drawn on ``x``'s device (:func:`_randn`).

    Returns:
        float ``N x 3 x H x W``.
    """
    n = len(x)
    kept = kept.reshape(n).to(x.device, non_blocking=True)
    keep = F.one_hot(kept, 3).bool().view(n, 3, 1, 1)
    kept_std = x[torch.arange(n, device=x.device), kept].std(dim=(-2, -1))
    noise = _randn(x.shape, x.device, noise_seed)
    return torch.where(keep, x, noise * (drop_noise * kept_std).view(n, 1, 1, 1))


def standardize_tiles(x: torch.Tensor, over: str = "tile") -> torch.Tensor:
    """Float ``N x C x h x w`` tiles to zero mean and unit (unbiased) std: one mean and std per
    tile over its channels and pixels (``over="tile"``, the official ``MVN across_channels``)
    or per channel of each tile (``"channel"``). A near-flat tile (std below 0.01) is only
    centred, not amplified."""
    if over not in ("tile", "channel"):
        raise ValueError(f"over must be 'tile' or 'channel'. Got {over!r}")
    flat = x.flatten(1 if over == "tile" else 2)
    p = flat.shape[-1]
    mean = flat.mean(-1)
    # E[x^2] - E[x]^2: one pass less than torch.std_mean, and exact enough for unit-scale data
    var = ((flat * flat).mean(-1) - mean * mean).clamp_min(0) * (p / max(p - 1, 1))
    inv = var.sqrt().clamp_min(_TILE_STD_FLOOR).reciprocal()
    shape = (-1, 1, 1, 1) if over == "tile" else (*inv.shape, 1, 1)
    return torch.addcmul((-mean * inv).view(shape), x, inv.view(shape))


def _linear_resize_matrix(src: torch.Tensor, dst: torch.Tensor, p: int) -> torch.Tensor:
    """``N x p x p`` matrices ``M`` with ``M[i, :dst_i, :src_i]`` the 1-D linear resize from
    ``src_i`` to ``dst_i`` samples (zeros elsewhere), as ``F.interpolate(mode="linear",
    align_corners=False)`` computes it: sample ``j`` reads the source at
    ``max((j + 0.5) * src / dst - 0.5, 0)`` between its two nearest samples, clamped at the edge.
    """
    device = src.device
    j = torch.arange(p, device=device, dtype=torch.float32)
    s, d = src.float()[:, None], dst.float()[:, None]
    pos = ((j + 0.5) * s / d - 0.5).clamp_min(0.0)  # N x p
    i0 = pos.floor().clamp(max=s - 1)
    frac = pos - i0
    i1 = torch.minimum(i0 + 1, s - 1)
    valid = (j < d).float()  # rows past dst_i are zero
    m = torch.zeros(src.shape[0], p, p, device=device)
    m.scatter_add_(2, i0.long().unsqueeze(-1), ((1 - frac) * valid).unsqueeze(-1))
    m.scatter_add_(2, i1.long().unsqueeze(-1), (frac * valid).unsqueeze(-1))
    return m


def _randn(shape: torch.Size, device: torch.device, seed: int) -> torch.Tensor:
    """Gaussian noise drawn on ``device`` from a generator of ``seed`` (drawn by the host
    stage), so no image-sized tensor crosses to the device. Noise is no pseudo-label: it is
    reproducible per device, not across devices."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=generator, device=device)
