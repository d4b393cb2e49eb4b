"""Network-in-Network of RotNet (Gidaris et al. 2018), registered into timm as ``nin_{3,4,5}block``.

Gidaris, Singh and Komodakis, "Unsupervised Representation Learning by Predicting Image
Rotations", ICLR 2018, study on CIFAR-10 how the quality of each conv block's features depends
on the depth of the network trained on rotations (their Table 1: rows 3, 4 and 5 blocks,
columns the linear/non-linear probe of block 1 .. 5). Their network-in-network
(``architectures/NetworkInNetwork.py`` of gidariss/FeatureLearningRotNet) is:

=======  =====================================================  ==============================
block    layers (each conv: Conv(bias=False) - BN - ReLU)       output at 32 px (3 / 4-5 blocks)
=======  =====================================================  ==============================
block1   5x5 192, 1x1 160, 1x1 96, max-pool 3x3 stride 2        96 x 16 x 16
block2   5x5 192, 1x1 192, 1x1 192, avg-pool 3x3 stride 2       192 x 8 x 8
block3   3x3 192, 1x1 192, 1x1 192 (+ avg-pool if > 3 blocks)   192 x 8 x 8 / 192 x 4 x 4
block4   3x3 192, 1x1 192, 1x1 192                              192 x 4 x 4
block5   3x3 192, 1x1 192, 1x1 192                              192 x 4 x 4
=======  =====================================================  ==============================

All convolutions have stride 1, so the network is built for small (28 - 32 px) images: no
small-input stem is needed. A block's output is taken after its pooling, as the authors' probes
take it. ``width`` scales every channel count (``width=0.5``: 96 / 80 / 48, a quarter of the
compute, for CPU-sized studies); ``nin_3block_w50``, ``nin_4block_w50`` and
``nin_5block_w50`` register the half-width networks.

After ``import sslpipe``: ``timm.create_model("nin_4block", num_classes=0)`` returns pooled
``B x 192`` float features for a float ``B x 3 x H x W`` input; ``feature_info`` names the
blocks ``block1`` .. ``blockN`` (per-layer probes: ``stage1`` .. ``stageN``); ``--freeze
block2`` freezes the first two blocks.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["NetworkInNetwork", "nin_block_shapes"]

_WIDE, _MID, _NARROW = 192, 160, 96


class NetworkInNetwork(nn.Module):
    """RotNet's network-in-network trunk with a timm classifier interface.

    Args:
        num_blocks: conv blocks, 3 or more (the paper studies 3, 4 and 5).
        num_classes: classifier outputs (0: none; ``forward`` returns pooled features).
        in_chans: input channels.
        global_pool: timm pooling type of the head.
        drop_rate: dropout before the classifier.
        width: multiplier of every channel count (> 0; 1.0 is the paper's network).

    Input float ``B x in_chans x H x W`` (H, W >= 8); ``forward_features`` returns
    ``B x C x H' x W'`` of the last block (``C = round(192 * width)``, ``H' = ceil(H / 4)``
    for 3 blocks and ``ceil(H / 8)`` for more), ``forward`` ``B x num_classes`` logits or
    ``B x C`` pooled features.

    Raises:
        ValueError: ``num_blocks < 3`` or ``width <= 0``.
    """

    def __init__(self, num_blocks: int = 3, num_classes: int = 1000, in_chans: int = 3,
                 global_pool: str = "avg", drop_rate: float = 0.0, width: float = 1.0) -> None:
        super().__init__()
        if not isinstance(num_blocks, int) or num_blocks < 3:
            raise ValueError(f"num_blocks must be an integer >= 3 (RotNet's NIN). Got "
                             f"{num_blocks!r}")
        if not width > 0:
            raise ValueError(f"width must be > 0. Got {width!r}")
        wide, mid, narrow = (max(1, round(c * width)) for c in (_WIDE, _MID, _NARROW))
        self.num_blocks = num_blocks
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.feature_info: list[dict[str, Any]] = []
        channels, reduction = in_chans, 1
        for i in range(1, num_blocks + 1):
            first = 5 if i <= 2 else 3
            outs = (wide, mid, narrow) if i == 1 else (wide, wide, wide)
            layers: list[nn.Module] = []
            for kernel, out in zip((first, 1, 1), outs):
                layers += [nn.Conv2d(channels, out, kernel, 1, kernel // 2, bias=False),
                           nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
            if i == 1:
                layers.append(nn.MaxPool2d(3, 2, 1))
            elif i == 2 or (i == 3 and num_blocks > 3):
                layers.append(nn.AvgPool2d(3, 2, 1))
            if i <= 2 or (i == 3 and num_blocks > 3):
                reduction *= 2
            self.add_module(f"block{i}", nn.Sequential(*layers))
            self.feature_info.append({"num_chs": channels, "reduction": reduction,
                                      "module": f"block{i}"})
        self.num_features = self.head_hidden_size = channels
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(channels, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # the authors' initialisation: N(0, sqrt(2 / (k*k*out))), BN weight 1 and bias 0
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one of ``num_classes`` outputs (0: none)."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.num_blocks + 1):
            x = getattr(self, f"block{i}")(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def nin_block_shapes(num_blocks: int, size: int, width: float = 1.0) -> list[tuple[int, int, int]]:
    """``(C, H, W)`` of each block's output for a ``size x size`` input (the table above).

    >>> nin_block_shapes(4, 32)
    [(96, 16, 16), (192, 8, 8), (192, 4, 4), (192, 4, 4)]
    """
    wide, narrow = (max(1, round(c * width)) for c in (_WIDE, _NARROW))
    shapes, side = [], size
    for i in range(1, num_blocks + 1):
        if i <= 2 or (i == 3 and num_blocks > 3):
            side = (side - 1) // 2 + 1  # 3x3 pooling, stride 2, padding 1
        shapes.append((narrow if i == 1 else wide, side, side))
    return shapes


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 32, 32), "pool_size": (8, 8),
        "crop_pct": 1.0, "interpolation": "bilinear", "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225), "first_conv": "block1.0", "classifier": "fc", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "nin_3block.untrained": _cfg(),
    "nin_4block.untrained": _cfg(pool_size=(4, 4)),
    "nin_5block.untrained": _cfg(pool_size=(4, 4)),
    "nin_3block_w50.untrained": _cfg(),
    "nin_4block_w50.untrained": _cfg(pool_size=(4, 4)),
    "nin_5block_w50.untrained": _cfg(pool_size=(4, 4)),
})


def _create(name: str, num_blocks: int, pretrained: bool, **kwargs: Any) -> NetworkInNetwork:
    return build_model_with_cfg(
        NetworkInNetwork, name, pretrained, num_blocks=num_blocks,
        feature_cfg={"out_indices": tuple(range(num_blocks))}, **kwargs,
    )


@register_model
def nin_3block(pretrained: bool = False, **kwargs: Any) -> NetworkInNetwork:
    """RotNet's network-in-network with 3 conv blocks (192 pooled features)."""
    return _create("nin_3block", 3, pretrained, **kwargs)


@register_model
def nin_4block(pretrained: bool = False, **kwargs: Any) -> NetworkInNetwork:
    """RotNet's network-in-network with 4 conv blocks (192 pooled features)."""
    return _create("nin_4block", 4, pretrained, **kwargs)


@register_model
def nin_5block(pretrained: bool = False, **kwargs: Any) -> NetworkInNetwork:
    """RotNet's network-in-network with 5 conv blocks (192 pooled features)."""
    return _create("nin_5block", 5, pretrained, **kwargs)


@register_model
def nin_3block_w50(pretrained: bool = False, **kwargs: Any) -> NetworkInNetwork:
    """The 3-block network at half width (96 / 80 / 48 channels, 96 pooled features): about a
    quarter of ``nin_3block``'s compute, for studies on a CPU."""
    kwargs.setdefault("width", 0.5)
    return _create("nin_3block_w50", 3, pretrained, **kwargs)


@register_model
def nin_4block_w50(pretrained: bool = False, **kwargs: Any) -> NetworkInNetwork:
    """The 4-block network at half width (96 pooled features), for the per-block study on a
    CPU (``examples/rotnet_blocks.toml``)."""
    kwargs.setdefault("width", 0.5)
    return _create("nin_4block_w50", 4, pretrained, **kwargs)


@register_model
def nin_5block_w50(pretrained: bool = False, **kwargs: Any) -> NetworkInNetwork:
    """The 5-block network at half width (96 pooled features), for the per-block study on a
    CPU (``examples/rotnet_blocks.toml``)."""
    kwargs.setdefault("width", 0.5)
    return _create("nin_5block_w50", 5, pretrained, **kwargs)
