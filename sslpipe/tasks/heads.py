"""Heads shared by several tasks: linear / MLP classifiers on pooled backbone features, a dense
head on the last feature map (colorization), and the token helpers of ViT backbones.

Token outputs (timm ViTs: ``B x N x C`` with ``num_prefix_tokens`` class / register tokens
first) are handled in one place: :func:`split_tokens` separates the prefix tokens from the patch
tokens, :func:`pool_tokens` reduces them to one vector per image (the class token, the mean of
the patch tokens, or both side by side), :func:`feature_map` folds the patch tokens back to
their grid for dense heads, and :func:`patchify` lays an image out as the patch rows that MAE
predicts.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def feature_dim(backbone: nn.Module) -> int:
    """Width of a timm backbone's pooled features (``num_features``)."""
    dim = getattr(backbone, "num_features", None)
    if not isinstance(dim, int) or dim <= 0:
        raise ValueError(
            "backbone must be a timm model created with num_classes=0 (it needs an integer "
            f"`num_features`). Got {type(backbone).__name__} with num_features={dim!r}"
        )
    return dim


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int = 2,
    norm: bool = True,
    last_norm: bool = False,
) -> nn.Sequential:
    """``num_layers`` Linear layers with BatchNorm1d + ReLU between them.

    ``num_layers=1`` is a plain linear layer. ``last_norm`` adds an affine-free BatchNorm after
    the last layer (as SimCLR v2 / VICReg projectors do).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1. Got {num_layers}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    if last_norm:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


def classifier_head(in_dim: int, num_classes: int, head: str, hidden_dim: int = 512) -> nn.Module:
    """``head="linear"``: one Linear; ``head="mlp"``: Linear-BN-ReLU-Linear."""
    if head == "linear":
        return nn.Linear(in_dim, num_classes)
    if head == "mlp":
        return mlp(in_dim, hidden_dim, num_classes, num_layers=2)
    raise ValueError(f"head must be 'linear' or 'mlp'. Got {head!r}")


class BackboneWithHead(nn.Module):
    """``head(backbone(x))``: the model of every single-input classification pretext task."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Any) -> Any:
        return self.head(self.backbone(x))


def feature_map(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The backbone's last feature map as ``B x C x h x w`` (for dense heads).

    Uses timm's ``forward_features``: CNNs give ``B x C x h x w`` already, ``output_fmt="NHWC"``
    models (Swin, ...) are permuted, and ViT-style token sequences ``B x N x C`` lose their
    prefix (class / register) tokens and are folded back to the patch grid of ``x``.
    """
    f = backbone.forward_features(x)  # type: ignore[operator]
    if f.ndim == 4:
        return f.permute(0, 3, 1, 2) if getattr(backbone, "output_fmt", "NCHW") == "NHWC" else f
    if f.ndim == 3:
        return fold_tokens(split_tokens(backbone, f)[1], x.shape[-2:])
    raise ValueError(
        "backbone: forward_features must return B x C x h x w or B x N x C. Got shape "
        f"{tuple(f.shape)}"
    )


class DenseHeadModel(nn.Module):
    """Backbone feature map -> 1x1 conv, BN, ReLU -> 1x1 conv -> bilinear upsampling.

    ``forward(x)``: ``B x 3 x H x W`` -> ``B x out_channels x H//stride x W//stride``.
    """

    def __init__(self, backbone: nn.Module, out_channels: int, stride: int, hidden_dim: int):
        super().__init__()
        self.backbone = backbone
        self.stride = stride
        dim = feature_dim(backbone)
        self.head = nn.Sequential(
            nn.Conv2d(dim, hidden_dim, 1, bias=False), nn.BatchNorm2d(hidden_dim),
            nn.ReLU(inplace=True), nn.Conv2d(hidden_dim, out_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(feature_map(self.backbone, x))
        size = (max(1, x.shape[-2] // self.stride), max(1, x.shape[-1] // self.stride))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


def split_tokens(backbone: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prefix, patches)`` of a token sequence ``B x N x C``: the backbone's
    ``num_prefix_tokens`` leading class / register tokens (``B x P x C``, P may be 0) and the
    patch tokens ``B x (N - P) x C``, in the backbone's order."""
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be B x N x C. Got shape {tuple(tokens.shape)}")
    prefix = int(getattr(backbone, "num_prefix_tokens", 0))
    return tokens[:, :prefix], tokens[:, prefix:]


TOKEN_POOLS = ("cls", "mean", "cls+mean")


def pool_tokens(backbone: nn.Module, tokens: torch.Tensor, how: str = "cls+mean") -> torch.Tensor:
    """One vector per image from a ViT's tokens ``B x N x C`` (float).

    ``how``: ``"cls"`` the class token (``B x C``), ``"mean"`` the mean of the patch tokens
    (``B x C``, prefix tokens left out), ``"cls+mean"`` both side by side (``B x 2C``, class
    token first), as DINO's linear evaluation reads a block.

    Raises:
        ValueError: an unknown ``how``, or ``"cls"`` / ``"cls+mean"`` for a backbone without a
            class token (``class_token=False``).
    """
    if how not in TOKEN_POOLS:
        raise ValueError(f"how must be one of {', '.join(TOKEN_POOLS)}. Got {how!r}")
    prefix, patches = split_tokens(backbone, tokens)
    mean = patches.mean(1)
    if how == "mean":
        return mean
    if getattr(backbone, "cls_token", None) is None or prefix.shape[1] == 0:
        raise ValueError(f"tokens: {type(backbone).__name__} has no class token; use "
                         "how='mean' (the mean of the patch tokens)")
    return prefix[:, 0] if how == "cls" else torch.cat([prefix[:, 0], mean], 1)


def fold_tokens(patches: torch.Tensor, image_hw: Any) -> torch.Tensor:
    """Patch tokens ``B x N x C`` (prefix tokens removed) as a map ``B x C x h x w`` whose
    aspect ratio is that of the ``(H, W)`` input image (``h * w == N``).

    Raises:
        ValueError: ``N`` tokens cannot be laid out on such a grid.
    """
    n = patches.shape[1]
    height, width = int(image_hw[0]), int(image_hw[1])
    h = max(1, round(math.sqrt(n * height / width)))
    w = n // h
    if h * w != n:
        raise ValueError(
            f"backbone: cannot fold {n} tokens into a grid for a {height}x{width} input; use a "
            "CNN or a ViT whose patch grid matches the input"
        )
    return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], h, w)


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Images ``B x C x H x W`` as patch rows ``B x N x (p * p * C)``, ``N = (H/p) * (W/p)`` in
    row-major patch order, each row ``(y, x, channel)``-ordered as the official MAE
    ``patchify`` (facebookresearch/mae, ``models_mae.py``) lays it out.

    Raises:
        ValueError: ``H`` or ``W`` not a multiple of ``patch_size``.
    """
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"images must have sides that are multiples of patch_size={p}. Got "
                         f"{h}x{w}")
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int]) -> torch.Tensor:
    """The inverse of :func:`patchify`: ``B x N x (p * p * C)`` rows on a ``(h, w)`` patch
    grid back to images ``B x C x (h p) x (w p)``."""
    b, n, d = patches.shape
    p, (gh, gw) = patch_size, grid
    c = d // (p * p)
    x = patches.reshape(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, gh * p, gw * p)
