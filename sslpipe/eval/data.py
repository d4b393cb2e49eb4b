"""Evaluation data: shard directories read once, in order, through an evaluation collator.

Every sample of every shard is read exactly once (no shuffling, no resampling, no dropped last
batch), decoded by the collator exactly as pretraining decodes it (``sslpipe.ops.images``), and
the number of images read is checked against the manifest: a truncated or unreadable shard is
an error naming it, never a silently smaller test set.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sslpipe.batch import Batch
from sslpipe.data.manifest import MANIFEST, read_manifest
from sslpipe.data.reading import iter_shard


def describe_data(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """What a result file records about a shard directory.

    Returns:
        ``{"path", "name", "source", "split", "num_samples", "num_classes",
        "manifest_sha256"}`` (the hash of ``manifest.json``, which holds every shard's sha256).
    """
    manifest = read_manifest(directory)
    with open(os.path.join(os.fspath(directory), MANIFEST), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {
        "path": os.path.abspath(os.fspath(directory)),
        "name": dataset_name(manifest),
        "source": manifest["source"],
        "split": manifest["split"],
        "num_samples": int(manifest["num_samples"]),
        "num_classes": len(manifest["classes"]),
        "manifest_sha256": digest,
    }


def dataset_name(manifest: dict[str, Any]) -> str:
    """The dataset's name in tables: the manifest's ``source`` (e.g. ``fashion_mnist``)."""
    return str(manifest.get("source") or manifest.get("name") or "data")


def eval_loader(
    directory: str | os.PathLike[str],
    collator: Callable[[Any], Batch],
    batch_size: int = 256,
    workers: int = 0,
) -> CheckedLoader:
    """Batches of every sample of a shard directory, made by ``collator``.

    Args:
        directory: a shard directory (``manifest.json`` + ``{name}-000000.tar`` ...).
        collator: e.g. :class:`~sslpipe.eval.transform.EvalCollator`; takes a list of
            webdataset sample dicts (``{"png"|"jpg": bytes, "cls": bytes}``).
        batch_size: images per batch (> 0).
        workers: DataLoader worker processes (0 decodes in this process); shards are dealt
            out to workers round-robin.

    Returns:
        an iterable of :class:`~sslpipe.Batch` that raises ValueError at its end when fewer
        images were read than the manifest lists.
    """
    if batch_size <= 0:
        raise ValueError(f"`batch_size` must be > 0. Got {batch_size}")
    if workers < 0:
        raise ValueError(f"`workers` must be >= 0. Got {workers}")
    manifest = read_manifest(directory)
    if not manifest["labeled"]:
        raise ValueError(f"{os.fspath(directory)!r} has no labels (manifest 'labeled' is false); "
                         "evaluation needs a labeled dataset")
    urls = [os.path.join(os.fspath(directory), s["file"]) for s in manifest["shards"]]
    workers = min(workers, len(urls))
    loader = DataLoader(_Shards(urls), batch_size=batch_size, collate_fn=collator,
                        num_workers=workers, pin_memory=torch.cuda.is_available())
    return CheckedLoader(loader, int(manifest["num_samples"]), os.fspath(directory))


class CheckedLoader:
    """Iterates a DataLoader and checks at the end that ``expected`` images came through."""

    def __init__(self, loader: DataLoader, expected: int, where: str) -> None:
        self.loader = loader
        self.expected = expected
        self.where = where

    def __len__(self) -> int:
        return -(-self.expected // int(self.loader.batch_size or 1))

    def __iter__(self) -> Iterator[Batch]:
        seen = 0
        for batch in self.loader:
            seen += batch.batch_size
            yield batch
        if seen != self.expected:
            raise ValueError(f"{self.where}: read {seen} images but the manifest lists "
                             f"{self.expected}; a shard is truncated or unreadable "
                             "(check it with `sslpipe shard --verify` or rewrite it)")


class _Shards(IterableDataset):
    def __init__(self, urls: list[str]) -> None:
        self.urls = urls

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        mine = self.urls if info is None else self.urls[info.id::info.num_workers]
        events: list[tuple[str, str, str]] = []
        for url in mine:
            yield from iter_shard(url, events)
        for kind, url, why in events:
            # the count check in CheckedLoader raises; this says which shard and why
            warnings.warn(f"sslpipe eval: shard {kind}: {url}: {why}", stacklevel=1)
