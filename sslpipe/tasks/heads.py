"""Heads shared by several tasks: linear / MLP classifiers on pooled backbone features."""

from __future__ import annotations

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

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.head(self.backbone(x))
