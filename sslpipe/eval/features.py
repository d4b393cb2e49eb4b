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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.atomic import atomic_write
from sslpipe.batch import Batch
from sslpipe.devices import default_device
from sslpipe.eval.defaults import DEFAULT_POOL

POOLED = "pooled"


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

    Returns:
        :class:`Features` with float16 ``N x D`` per requested layer, on the CPU.
    """
    names = parse_layers(layers, backbone)
    if pool <= 0:
        raise ValueError(f"`pool` must be > 0. Got {pool}")
    cache = _Cache(cache_dir, cache_key, pool) if cache_dir is not None and cache_key else None
    found = {name: cache.load(name) for name in names} if cache else {}
    cached = {name: hit for name, hit in found.items() if hit is not None}
    missing = [name for name in names if name not in cached]
    if not missing:
        labels = next(iter(cached.values()))[1]
        return Features({n: cached[n][0] for n in names}, labels)
    fresh = _extract(backbone, batches, missing, pool, device)
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


def stage_index(backbone: nn.Module) -> dict[str, int]:
    """``{stage name, alias or module path: index into feature_info}``."""
    if not getattr(backbone, "feature_info", None):
        return {}
    from sslpipe.models import stage_names

    modules = [entry["module"] for entry in _feature_info(backbone)]
    return {name: modules.index(module) for name, module in stage_names(backbone).items()}


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


def pooled_grid(channels: int, height: int, width: int, pool: int) -> tuple[int, int]:
    """The ``(h, w)`` grid a ``channels x height x width`` map is pooled to (module docstring)."""
    side = max(1, round(math.sqrt(pool / channels)))
    return min(side, height), min(side, width)


class LayerTaps(nn.Module):
    """``forward(x)`` -> ``{layer: float B x D}``: the requested layers of a frozen backbone.

    Uses timm's ``forward_intermediates`` where the model has it, else forward hooks on the
    ``feature_info`` modules. Token outputs (``B x N x C``) lose their prefix (class) tokens
    and are laid out on their square grid.
    """

    def __init__(self, backbone: nn.Module, layers: Sequence[str], pool: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.layers = list(layers)
        self.pool = pool
        index = stage_index(backbone)
        self.index = {name: index[name] for name in self.layers if name != POOLED}
        self.stages = sorted(set(self.index.values()))
        self.use_intermediates = hasattr(backbone, "forward_intermediates")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled, maps = self._run(x)
        out: dict[str, torch.Tensor] = {}
        for name in self.layers:
            if name == POOLED:
                out[name] = pooled.flatten(1)
            else:
                fmap = maps[self.index[name]]
                grid = pooled_grid(fmap.shape[1], fmap.shape[2], fmap.shape[3], self.pool)
                out[name] = F.adaptive_avg_pool2d(fmap, grid).flatten(1)
        return out

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        if not self.stages:
            return self.backbone(x), {}
        want_pooled = POOLED in self.layers
        if self.use_intermediates:
            try:
                return self._intermediates(x, want_pooled)
            except (NotImplementedError, TypeError, AttributeError):
                self.use_intermediates = False  # e.g. a model whose method is a stub
        return self._hooks(x)

    def _intermediates(self, x: torch.Tensor, want_pooled: bool) -> tuple[Any, dict[int, Any]]:
        indices = self.stages
        model: Any = self.backbone
        fn = model.forward_intermediates
        if want_pooled:
            final, maps = fn(x, indices=indices)
            pooled = model.forward_head(final)
        else:
            maps, pooled = fn(x, indices=indices, intermediates_only=True), None
        return pooled, {i: _as_map(m, self.backbone) for i, m in zip(indices, maps)}

    def _hooks(self, x: torch.Tensor) -> tuple[Any, dict[int, Any]]:
        info = _feature_info(self.backbone)
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
        return pooled, {i: _as_map(m, self.backbone) for i, m in captured.items()}


def _extract(backbone: nn.Module, batches: Iterable[Batch], layers: list[str], pool: int,
             device: torch.device | str | None) -> Features:
    dev = default_device(device)
    was_training = backbone.training
    taps = LayerTaps(backbone.to(dev).eval(), layers, pool)
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


def _feature_info(backbone: nn.Module) -> list[dict[str, Any]]:
    info = getattr(backbone, "feature_info", None)
    if info is None:
        raise ValueError(f"backbone {type(backbone).__name__} has no timm `feature_info`; only "
                         "the 'pooled' layer can be evaluated")
    return [dict(entry) for entry in info]


def _as_map(x: torch.Tensor, backbone: nn.Module) -> torch.Tensor:
    if isinstance(x, (tuple, list)):
        x = x[0]
    if x.ndim == 4:
        return x
    if x.ndim == 3:  # tokens B x N x C
        x = x[:, int(getattr(backbone, "num_prefix_tokens", 0)):]
        n = x.shape[1]
        side = math.isqrt(n)
        h, w = (side, side) if side * side == n else (n, 1)
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
    if x.ndim == 2:
        return x[:, :, None, None]
    raise ValueError(f"cannot read a feature map of shape {tuple(x.shape)}")


class _Cache:
    """One ``.pt`` file per (key, layer, pool), written atomically."""

    def __init__(self, root: str | os.PathLike[str], key: dict[str, Any], pool: int) -> None:
        self.root = Path(root)
        self.key = key
        self.pool = pool

    def path(self, layer: str) -> Path:
        blob = json.dumps({**self.key, "layer": layer, "pool": self.pool}, sort_keys=True)
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
