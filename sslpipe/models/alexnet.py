"""AlexNet with BatchNorm, the backbone of the pretext-task papers, registered into timm.

The context-prediction, jigsaw, rotation and colorization papers (Doersch et al. 2015, Noroozi
and Favaro 2016, Gidaris et al. 2018, Zhang et al. 2016) evaluate an AlexNet whose conv layers
are followed by BatchNorm. Here it is a plain timm model: after ``import sslpipe``,
``timm.create_model("alexnet_bn", num_classes=0)`` gives the conv trunk with global average
pooling (``num_features`` = 256), and ``pretrained=True, pretrained_cfg_overlay=dict(file=...)``
loads exported weights through timm's own loader.

Stages are named ``conv1`` .. ``conv5`` (``feature_info``), which ``--freeze-until conv3`` and
the per-layer probes use. ``small_input=True`` makes ``conv1`` a 3x3 stride-1 convolution without
the following max-pool, for 32 px data.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["AlexNetBN"]

# (out channels, kernel, stride, padding, max-pool after) of conv1..conv5
_LAYERS = (
    (96, 11, 4, 2, True),
    (256, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)


class AlexNetBN(nn.Module):
    """AlexNet conv trunk (conv-BN-ReLU x 5, three max-pools) with a timm classifier interface.

    Input float ``B x in_chans x H x W`` (224 px as in the papers, 32 px with ``small_input``);
    ``forward_features`` returns ``B x 256 x h x w``, ``forward`` the ``B x num_classes`` logits
    (``B x 256`` pooled features when ``num_classes=0``).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 drop_rate: float = 0.0, small_input: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.feature_info: list[dict[str, Any]] = []
        channels, reduction = in_chans, 1
        for i, (out, kernel, stride, padding, pool) in enumerate(_LAYERS, start=1):
            if i == 1 and small_input:
                kernel, stride, padding, pool = 3, 1, 1, False
            layers: list[nn.Module] = [
                nn.Conv2d(channels, out, kernel, stride, padding, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            reduction *= stride
            if pool:
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
                reduction *= 2
            # a stage's output is taken after its max-pool, as the per-layer probes of the
            # papers do
            self.feature_info.append({"num_chs": out, "reduction": reduction, "module": f"conv{i}"})
            self.add_module(f"conv{i}", nn.Sequential(*layers))
            channels = out
        self.num_features = self.head_hidden_size = channels
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(channels, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one of ``num_classes`` outputs (0: none)."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, len(_LAYERS) + 1):
            x = getattr(self, f"conv{i}")(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (6, 6),
        "crop_pct": 0.875, "interpolation": "bilinear", "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225), "first_conv": "conv1.0", "classifier": "fc", **kwargs,
    }


default_cfgs = generate_default_cfgs({"alexnet_bn.untrained": _cfg()})


@register_model
def alexnet_bn(pretrained: bool = False, **kwargs: Any) -> AlexNetBN:
    """BatchNorm AlexNet of the pretext-task papers (conv trunk, 256 pooled features)."""
    return build_model_with_cfg(
        AlexNetBN, "alexnet_bn", pretrained,
        feature_cfg={"out_indices": (0, 1, 2, 3, 4)}, **kwargs,
    )
