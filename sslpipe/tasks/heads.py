"""Heads shared by several tasks: linear / MLP classifiers on pooled backbone features, and a
dense head on the last feature map (colorization)."""

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
        f = f[:, int(getattr(backbone, "num_prefix_tokens", 0)):]
        n = f.shape[1]
        h = max(1, round(math.sqrt(n * x.shape[-2] / x.shape[-1])))
        w = n // h
        if h * w != n:
            raise ValueError(
                f"backbone: cannot fold {n} tokens into a grid for a {x.shape[-2]}x{x.shape[-1]} "
                "input; use a CNN or a ViT whose patch grid matches the input"
            )
        return f.transpose(1, 2).reshape(f.shape[0], f.shape[2], h, w)
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
