"""Frozen features per layer, pooled to a comparable size and cached on disk.

Layers are the backbone's timm ``feature_info`` stages, named as ``sslpipe.models.stage_names``
names them (ResNet: ``stage0`` is the stem after its activation, ``stage1 .. stage4`` are
``layer1 .. layer4``; AlexNet-BN: ``stage1 .. stage5`` are ``conv1 .. conv5``; ViT: ``stage1 ..
stage12`` are the blocks), plus ``pooled``: the
backbone's own globally pooled output (``num_features`` wide, what ``backbone(x)`` returns with
``num_classes=0``).

Every stage's ``C x H x W`` map is average-pooled (adaptive) to an ``s x s`` grid with
``s = round(sqrt(pool / C))``, clipped to ``1 .. H`` and ``1 .. W`` (never upsampled), so each
layer's probe sees about ``pool`` features, as the pretext-task papers do (about 9k). For
``resnet18`` at 32 px with the default ``pool=9216``:

=======  ===========  =====  =====
layer    map          grid   dims
=======  ===========  =====  =====
stage0   64 x 16x16   12x12  9216
stage1   64 x 8x8     8x8    4096
stage2   128 x 4x4    4x4    2048
stage3   256 x 2x2    2x2    1024
stage4   512 x 1x1    1x1    512
pooled   512          -      512
=======  ===========  =====  =====

``pool=1`` gives global average pooling at every stage.

ViT blocks give tokens, not maps: by default each block's layer is its class token beside the
mean of its patch tokens (``2C`` values; ``vit_tiny_patch4_32``: 384 per block), see
``tokens`` and :mod:`sslpipe.eval.taps`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslpipe.atomic import atomic_write
from sslpipe.batch import Batch
from sslpipe.devices import default_device
from sslpipe.eval.defaults import DEFAULT_POOL
from sslpipe.eval.taps import (
    POOLED,
    TOKEN_MODES,
    LayerTaps,
    pooled_grid,
    stage_index,
    token_model,
)

# LayerTaps, pooled_grid, stage_index (sslpipe.eval.taps) are re-exported: callers import
# them from here
__all__ = ["DEFAULT_POOL", "POOLED", "TOKEN_MODES", "Features", "LayerTaps", "extract_features",
           "layer_names", "parse_layers", "pooled_grid", "stage_index"]


@dataclass
class Features:
    """Frozen features of one dataset: ``features[layer]`` is float16 ``N x D_layer`` (CPU),
    ``labels`` int64 ``N``."""

    features: dict[str, torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def extract_features(
    backbone: nn.Module,
    batches: Iterable[Batch],
    layers: str | Sequence[str] = POOLED,
    pool: int = DEFAULT_POOL,
    device: torch.device | str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_key: dict[str, Any] | None = None,
    tokens: str = "cls+mean",
) -> Features:
    """Run the frozen ``backbone`` over ``batches`` and keep each layer's pooled features.

    Args:
        backbone: a timm model created with ``num_classes=0`` (put in eval mode here).
        batches: Batches with float ``inputs`` ``B x 3 x H x W`` and int64 ``labels`` ``B``
            (e.g. a DataLoader with :class:`~sslpipe.eval.transform.EvalCollator`).
        layers: ``"all"``, ``"last"`` (= ``pooled``), a comma-separated string or a list of
            layer names (see :func:`layer_names`).
        pool: target number of features per stage (> 0), see the module docstring.
        device: where the backbone runs (default: CUDA when available, else CPU).
        cache_dir, cache_key: with both, each layer is stored under a hash of ``cache_key``
            (checkpoint hash, data manifest hash, arch, size...), ``layer`` and ``pool``, and
            read back on the next call instead of being extracted again.
        tokens: how a ViT block's tokens become features: ``"cls+mean"`` (class token and mean
            of the patch tokens, ``2C``), ``"cls"``, ``"mean"`` or ``"grid"`` (patch tokens
            folded to their grid and pooled as a map); ignored for feature maps.

    Returns:
        :class:`Features` with float16 ``N x D`` per requested layer, on the CPU.
    """
    names = parse_layers(layers, backbone)
    if pool <= 0:
        raise ValueError(f"`pool` must be > 0. Got {pool}")
    if tokens not in TOKEN_MODES:
        raise ValueError(f"`tokens` must be one of {', '.join(TOKEN_MODES)}. Got {tokens!r}")
    # the token mode is part of a ViT's cache key only: ConvNet caches keep their names
    mode = tokens if token_model(backbone) else None
    cache = (_Cache(cache_dir, cache_key, pool, mode) if cache_dir is not None and cache_key
             else None)
    found = {name: cache.load(name) for name in names} if cache else {}
    cached = {name: hit for name, hit in found.items() if hit is not None}
    missing = [name for name in names if name not in cached]
    if not missing:
        labels = next(iter(cached.values()))[1]
        return Features({n: cached[n][0] for n in names}, labels)
    fresh = _extract(backbone, batches, missing, pool, device, tokens)
    labels = fresh.labels
    for name, (_, cached_labels) in cached.items():
        if not torch.equal(cached_labels, labels):
            raise ValueError(f"feature cache for layer {name!r} holds other labels than the data; "
                             f"delete {cache_dir} and run again")
    if cache:
        for name in missing:
            cache.save(name, fresh.features[name], labels)
    out = {n: cached[n][0] if n in cached else fresh.features[n] for n in names}
    return Features(out, labels)


def layer_names(backbone: nn.Module) -> list[str]:
    """``stage*`` names of the backbone's stages in forward order, then ``pooled``.

    Stage names are those of ``sslpipe.models.stage_names`` (ResNet: ``stage0`` = stem,
    ``stage1 .. stage4`` = ``layer1 .. layer4``; AlexNet-BN: ``stage1 .. stage5`` = ``conv1 ..
    conv5``); a model without timm ``feature_info`` has only ``pooled``.
    """
    index = stage_index(backbone)
    stages = sorted((i, name) for name, i in index.items() if re.fullmatch(r"stage\d+", name))
    return [name for _, name in stages] + [POOLED]


def parse_layers(layers: str | Sequence[str], backbone: nn.Module) -> list[str]:
    """Resolve ``"all"``, ``"last"`` or names (a string with commas, or a list) to layer names.

    Module paths and aliases (``layer2``, ``stem``) become their ``stage*`` name.
    """
    valid = layer_names(backbone)
    if isinstance(layers, str):
        if layers == "all":
            return valid
        if layers == "last":
            return [POOLED]
        layers = [part.strip() for part in layers.split(",") if part.strip()]
    canonical = {valid[i]: valid[i] for i in range(len(valid))}
    for name, i in stage_index(backbone).items():
        canonical.setdefault(name, valid[i])
    bad = [name for name in layers if name not in canonical]
    if bad or not layers:
        raise ValueError(f"`layers` must be 'all', 'last' or names from {', '.join(valid)}. "
                         f"Got {bad or list(layers)!r}")
    return list(dict.fromkeys(canonical[name] for name in layers))


def _extract(backbone: nn.Module, batches: Iterable[Batch], layers: list[str], pool: int,
             device: torch.device | str | None, tokens: str) -> Features:
    dev = default_device(device)
    was_training = backbone.training
    taps = LayerTaps(backbone.to(dev).eval(), layers, pool, tokens)
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    labels: list[torch.Tensor] = []
    with torch.inference_mode():
        for i, batch in enumerate(batches):
            if not isinstance(batch.inputs, torch.Tensor) or batch.inputs.ndim != 4:
                raise ValueError(f"batches[{i}].inputs must be one float B x 3 x H x W tensor "
                                 f"(an evaluation collator's output). Got {type(batch.inputs)}")
            if batch.labels is None:
                raise ValueError(f"batches[{i}] has no labels; probes need the dataset's classes")
            for name, feats in taps(batch.inputs.to(dev, non_blocking=True).float()).items():
                chunks[name].append(feats.to("cpu", torch.float16))
            labels.append(batch.labels.cpu().long())
    backbone.train(was_training)
    if not labels:
        raise ValueError("batches: expected at least one batch. Got none")
    return Features({n: torch.cat(c) for n, c in chunks.items()}, torch.cat(labels))


class _Cache:
    """One ``.pt`` file per (key, layer, pool), written atomically."""

    def __init__(self, root: str | os.PathLike[str], key: dict[str, Any], pool: int,
                 tokens: str | None = None) -> None:
        self.root = Path(root)
        self.key = key
        self.pool = pool
        self.tokens = tokens

    def path(self, layer: str) -> Path:
        fields = {**self.key, "layer": layer, "pool": self.pool}
        if self.tokens is not None:
            fields["tokens"] = self.tokens
        blob = json.dumps(fields, sort_keys=True)
        return self.root / f"{layer}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}.pt"

    def load(self, layer: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        path = self.path(layer)
        if not path.exists():
            return None
        data = torch.load(path, map_location="cpu", weights_only=True)
        return data["features"], data["labels"]

    def save(self, layer: str, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(layer)
        data = {"features": features, "labels": labels, "key": self.key}
        atomic_write(path, lambda tmp: torch.save(data, tmp))
