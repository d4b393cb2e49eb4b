"""The requested layers of a frozen backbone, each reduced to one vector per image.

A stage's output is either a feature map ``B x C x H x W`` (ConvNets) or a token sequence
``B x N x C`` (ViTs: ``num_prefix_tokens`` class / register tokens, then the patch tokens).

* A map is average-pooled (adaptive) to an ``s x s`` grid with ``s = round(sqrt(pool / C))``,
  clipped to ``1 .. H`` and ``1 .. W`` (:func:`pooled_grid`), and flattened: about ``pool``
  values per layer.
* Tokens are read as ``tokens`` says (:func:`sslpipe.tasks.heads.pool_tokens`):
  ``"cls+mean"`` (default) the block's class token beside the mean of its patch tokens,
  ``2C`` values, as DINO's linear evaluation reads ViT blocks; ``"cls"`` the class token
  (``C``); ``"mean"`` the mean of the patch tokens (``C``); ``"grid"`` the patch tokens folded
  to their square grid and pooled as a map. A ViT without a class token gives the mean for
  ``"cls+mean"`` and ``"cls"``. The tokens are the blocks' raw outputs (before the final
  ``norm``). For ``vit_tiny_patch4_32`` (192 wide, 12 blocks) at 32 px: ``stage1`` ..
  ``stage12`` are ``B x 384`` each, ``pooled`` (the class token after the final norm, what
  ``backbone(x)`` returns) ``B x 192``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.tasks.heads import TOKEN_POOLS, pool_tokens, split_tokens

__all__ = ["POOLED", "TOKEN_MODES", "LayerTaps", "pooled_grid", "stage_index", "token_model"]

POOLED = "pooled"
TOKEN_MODES = (*TOKEN_POOLS, "grid")


def stage_index(backbone: nn.Module) -> dict[str, int]:
    """``{stage name, alias or module path: index into feature_info}``."""
    if not getattr(backbone, "feature_info", None):
        return {}
    from sslpipe.models import stage_names

    modules = [entry["module"] for entry in feature_info(backbone)]
    return {name: modules.index(module) for name, module in stage_names(backbone).items()}


def pooled_grid(channels: int, height: int, width: int, pool: int) -> tuple[int, int]:
    """The ``(h, w)`` grid a ``channels x height x width`` map is pooled to (module docstring)."""
    side = max(1, round(math.sqrt(pool / channels)))
    return min(side, height), min(side, width)


def token_model(backbone: nn.Module) -> bool:
    """True for a ViT-style backbone whose blocks give token sequences (timm's
    ``VisionTransformer`` and its kind: ``patch_embed``, ``blocks``, ``num_prefix_tokens``)."""
    return (isinstance(getattr(backbone, "num_prefix_tokens", None), int)
            and hasattr(backbone, "patch_embed") and hasattr(backbone, "blocks"))


class LayerTaps(nn.Module):
    """``forward(x)`` -> ``{layer: float B x D}``: the requested layers of a frozen backbone.

    Args:
        backbone: a timm model (``num_classes=0``).
        layers: ``stage*`` names (:func:`stage_index`) and/or ``"pooled"``.
        pool: values per map layer (module docstring).
        tokens: how token outputs become vectors: one of :data:`TOKEN_MODES`.

    Uses timm's ``forward_intermediates`` where the model has it (ViTs: with their prefix
    tokens), else forward hooks on the ``feature_info`` modules.

    Raises:
        ValueError: an unknown ``tokens`` mode.
    """

    def __init__(self, backbone: nn.Module, layers: Sequence[str], pool: int,
                 tokens: str = "cls+mean") -> None:
        super().__init__()
        if tokens not in TOKEN_MODES:
            raise ValueError(f"tokens must be one of {', '.join(TOKEN_MODES)}. Got {tokens!r}")
        self.backbone = backbone
        self.layers = list(layers)
        self.pool = pool
        self.tokens = tokens
        if tokens in ("cls", "cls+mean") and getattr(backbone, "cls_token", None) is None:
            self.tokens = "mean"
        index = stage_index(backbone)
        self.index = {name: index[name] for name in self.layers if name != POOLED}
        self.stages = sorted(set(self.index.values()))
        self.use_intermediates = hasattr(backbone, "forward_intermediates")
        self.token_model = token_model(backbone)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled, outputs = self._run(x)
        out: dict[str, torch.Tensor] = {}
        for name in self.layers:
            if name == POOLED:
                out[name] = pooled.flatten(1)
            else:
                out[name] = self._reduce(outputs[self.index[name]])
        return out

    def _reduce(self, y: Any) -> torch.Tensor:
        if isinstance(y, (tuple, list)):
            y = y[0]
        if y.ndim == 3 and self.token_model and self.tokens != "grid":
            return pool_tokens(self.backbone, y, self.tokens)
        fmap = _as_map(y, self.backbone)
        grid = pooled_grid(fmap.shape[1], fmap.shape[2], fmap.shape[3], self.pool)
        return F.adaptive_avg_pool2d(fmap, grid).flatten(1)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, Any]]:
        if not self.stages:
            return self.backbone(x), {}
        want_pooled = POOLED in self.layers
        if self.use_intermediates:
            try:
                return self._intermediates(x, want_pooled)
            except (NotImplementedError, TypeError, AttributeError, AssertionError):
                self.use_intermediates = False  # e.g. a model whose method is a stub
        return self._hooks(x)

    def _intermediates(self, x: torch.Tensor, want_pooled: bool) -> tuple[Any, dict[int, Any]]:
        indices = self.stages
        model: Any = self.backbone
        kwargs: dict[str, Any] = {"indices": indices}
        if self.token_model:  # whole token sequences: the prefix tokens back in front
            kwargs.update(output_fmt="NLC", return_prefix_tokens=True)
        if want_pooled:
            final, maps = model.forward_intermediates(x, **kwargs)
            pooled = model.forward_head(final)
        else:
            maps = model.forward_intermediates(x, intermediates_only=True, **kwargs)
            pooled = None
        if self.token_model:
            maps = [torch.cat([m[1], m[0]], 1) if isinstance(m, (tuple, list)) else m
                    for m in maps]
        return pooled, dict(zip(indices, maps))

    def _hooks(self, x: torch.Tensor) -> tuple[Any, dict[int, Any]]:
        info = feature_info(self.backbone)
        captured: dict[int, torch.Tensor] = {}
        handles = []
        for i in set(self.stages):
            module = self.backbone.get_submodule(info[i]["module"])
            handles.append(module.register_forward_hook(
                lambda _m, _inp, out, i=i: captured.__setitem__(i, out)))
        try:
            pooled = self.backbone(x)
        finally:
            for handle in handles:
                handle.remove()
        return pooled, captured


def feature_info(backbone: nn.Module) -> list[dict[str, Any]]:
    """The backbone's timm ``feature_info`` entries as dicts (ValueError without one)."""
    info = getattr(backbone, "feature_info", None)
    if info is None:
        raise ValueError(f"backbone {type(backbone).__name__} has no timm `feature_info`; only "
                         "the 'pooled' layer can be evaluated")
    return [dict(entry) for entry in info]


def _as_map(x: torch.Tensor, backbone: nn.Module) -> torch.Tensor:
    if x.ndim == 4:
        return x
    if x.ndim == 3:  # tokens B x N x C: the patch tokens on their square grid
        x = split_tokens(backbone, x)[1]
        n = x.shape[1]
        side = math.isqrt(n)
        h, w = (side, side) if side * side == n else (n, 1)
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
    if x.ndim == 2:
        return x[:, :, None, None]
    raise ValueError(f"cannot read a feature map of shape {tuple(x.shape)}")
