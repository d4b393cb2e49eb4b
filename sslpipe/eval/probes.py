"""Programmatic probes: a backbone and two datasets in, ``{layer: {"top1", "top5", ...}}`` out.

``train`` and ``test`` are shard directories (read with
:func:`~sslpipe.eval.data.eval_loader` through an :class:`~sslpipe.eval.transform.EvalCollator`
of ``size``) or any iterable of :class:`~sslpipe.Batch` with labels (a DataLoader with your
own collator, a list of batches). ``sslpipe eval`` and ``sslpipe quickstart`` call these.
An iterable with a ``cache_id`` attribute (a string naming its content, as
:class:`~sslpipe.eval.labels.SampleBatches` of a labelled subset has) has its features
cached like a shard directory's.

Example::

    import timm
    from sslpipe.data import sample_path
    from sslpipe.eval import linear_probe
    backbone = timm.create_model("resnet18", num_classes=0)
    linear_probe(backbone, sample_path("train"), sample_path("test"), layers="all", size=32)
    # {"stage0": {"top1": ..., "top5": ..., "dim": 9216, ...}, ..., "pooled": {...}}
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, Union

import torch
from torch import nn

from sslpipe.batch import Batch
from sslpipe.devices import default_device
from sslpipe.eval.data import describe_data, eval_loader
from sslpipe.eval.features import DEFAULT_POOL, POOLED, Features, extract_features
from sslpipe.eval.knn import DEFAULT_K, DEFAULT_TEMPERATURE, knn_accuracy
from sslpipe.eval.linear import LinearOptions, train_linear
from sslpipe.eval.transform import DEFAULT_SIZE, EvalCollator

Data = Union[str, "os.PathLike[str]", Iterable[Batch]]


def linear_probe(
    backbone: nn.Module,
    train: Data,
    test: Data,
    layers: str | Sequence[str] = POOLED,
    pool: int = DEFAULT_POOL,
    options: LinearOptions | None = None,
    size: int = DEFAULT_SIZE,
    batch_size: int = 256,
    workers: int | None = 0,
    device: torch.device | str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_key: dict[str, Any] | None = None,
    progress: bool = False,
    backend: str = "auto",
) -> dict[str, dict[str, float]]:
    """A linear classifier per layer on frozen, pooled features.

    Args:
        backbone: timm model with ``num_classes=0`` (left unchanged, used in eval mode).
        train, test: shard directories or iterables of labelled Batches.
        layers: ``"all"``, ``"last"`` (= ``"pooled"``) or names (``"stage1,stage4"``).
        pool: features per stage after adaptive average pooling (see ``features.py``).
        options: linear-classifier training (:class:`~sslpipe.eval.linear.LinearOptions`).
        size: image side for shard directories (the resize policy of ``transform.py``).
        batch_size, workers: feature extraction batches and DataLoader workers.
        device: where to run (default: CUDA when available, else CPU).
        cache_dir, cache_key: cache features on disk (``cache_key`` names the checkpoint,
            e.g. ``{"checkpoint": sha256}``; the data's manifest hash and ``size`` are added).
        progress: show a progress bar over the feature-extraction batches.
        backend: decode backend for shard directories (``create_loader``'s: ``"auto"``,
            ``"cpu"``, ``"nvjpeg"``, ``"dali"``), so evaluation reads images as pretraining does.

    Returns:
        ``{layer: {"top1": %, "top5": %, "dim": D, "weight_decay": wd}}``, accuracies in
        [0, 100] with 2 decimals.
    """
    feats = _features(backbone, train, test, layers, pool, size, batch_size, workers, device,
                      cache_dir, cache_key, progress, backend)
    return linear_on_features(feats[0], feats[1], options, device)


def linear_on_features(train: Features, test: Features, options: LinearOptions | None = None,
                       device: torch.device | str | None = None) -> dict[str, dict[str, float]]:
    """A linear classifier per layer of extracted features (what :func:`linear_probe` fits).

    Returns ``{layer: {"top1": %, "top5": %, "dim": D, "weight_decay": wd}}``.
    """
    opts = options or LinearOptions()
    classes = int(max(train.labels.max(), test.labels.max())) + 1
    out: dict[str, dict[str, float]] = {}
    for layer in train.features:
        result = train_linear(train.features[layer], train.labels, test.features[layer],
                              test.labels, opts, num_classes=classes, device=device)
        out[layer] = {**result, "dim": int(train.features[layer].shape[1])}
    return out


def knn_probe(
    backbone: nn.Module,
    train: Data,
    test: Data,
    layers: str | Sequence[str] = POOLED,
    pool: int = DEFAULT_POOL,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    size: int = DEFAULT_SIZE,
    batch_size: int = 256,
    workers: int | None = 0,
    device: torch.device | str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_key: dict[str, Any] | None = None,
    progress: bool = False,
    backend: str = "auto",
) -> dict[str, dict[str, float]]:
    """Weighted kNN (cosine, ``k``, ``temperature``) per layer on frozen features.

    Arguments as :func:`linear_probe`; returns ``{layer: {"top1": %, "top5": %, "dim": D}}``.
    """
    feats = _features(backbone, train, test, layers, pool, size, batch_size, workers, device,
                      cache_dir, cache_key, progress, backend)
    return knn_on_features(feats[0], feats[1], k, temperature, device)


def knn_on_features(train: Features, test: Features, k: int = DEFAULT_K,
                    temperature: float = DEFAULT_TEMPERATURE,
                    device: torch.device | str | None = None) -> dict[str, dict[str, float]]:
    """Weighted kNN per layer of extracted features (what :func:`knn_probe` does).

    Returns ``{layer: {"top1": %, "top5": %, "dim": D}}``.
    """
    out: dict[str, dict[str, float]] = {}
    for layer in train.features:
        result = knn_accuracy(train.features[layer], train.labels, test.features[layer],
                              test.labels, k, temperature, device=device)
        out[layer] = {**result, "dim": int(train.features[layer].shape[1])}
    return out


def as_batches(data: Data, size: int, batch_size: int, workers: int | None,
               device: torch.device | str | None = None, backend: str = "auto"
               ) -> Iterable[Batch]:
    """A shard directory as evaluation Batches on ``device`` (default: CUDA when available),
    read by ``backend``; any other iterable is returned as it is."""
    if isinstance(data, (str, os.PathLike)):
        return eval_loader(data, EvalCollator(size), batch_size, workers, default_device(device),
                           backend)
    return data


def _features(backbone: nn.Module, train: Data, test: Data, layers: str | Sequence[str],
              pool: int, size: int, batch_size: int, workers: int | None,
              device: torch.device | str | None, cache_dir: str | os.PathLike[str] | None,
              cache_key: dict[str, Any] | None, progress: bool = False,
              backend: str = "auto") -> tuple[Features, Features]:
    out = []
    for split, data in (("train", train), ("test", test)):
        key = None
        # shard directories have a manifest hash that identifies their content; an iterable
        # may name its content with a `cache_id` (a labelled subset: manifest hash and keys)
        content = getattr(data, "cache_id", None)
        if cache_key and isinstance(data, (str, os.PathLike)):
            content = describe_data(data)["manifest_sha256"]
        if cache_key and content:
            key = {**cache_key, "data": content, "size": size, "split": split}
        batches = as_batches(data, size, batch_size, workers, device, backend)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"features ({split})", unit="batch", leave=False)
        out.append(extract_features(backbone, batches, layers, pool, device, cache_dir, key))
    return out[0], out[1]
