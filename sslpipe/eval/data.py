"""Evaluation data: shard directories read once, in order, through an evaluation collator.

Every sample of every shard is read exactly once (no shuffling, no resampling, no dropped last
batch) by the pretraining input path (``create_loader``'s single-pass mode, with its decode
backends), and the number of images read is checked against the manifest: a truncated or
unreadable shard is an error naming it, never a silently smaller test set.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from sslpipe.batch import Batch
from sslpipe.data.manifest import parse_manifest
from sslpipe.data.reading import fetch_manifest, load_manifest
from sslpipe.devices import default_workers


def describe_data(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """What a result file records about a shard directory (or its manifest's URL).

    Returns:
        ``{"path", "name", "source", "split", "num_samples", "num_classes",
        "manifest_sha256"}`` (the hash of ``manifest.json``, which holds every shard's sha256).
    """
    where = os.fspath(directory)
    raw, name = fetch_manifest(where)  # read once: parsed and hashed
    manifest = parse_manifest(raw, name)
    digest = hashlib.sha256(raw).hexdigest()
    return {
        "path": os.path.abspath(where) if "://" not in where else where,
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
    collator: Callable[..., Batch],
    batch_size: int = 256,
    workers: int | None = 0,
    device: torch.device | str = "cpu",
    backend: str = "auto",
) -> CheckedLoader:
    """Batches of every sample of a shard directory, made by ``collator``, on ``device``.

    The pretraining input path in its single-pass mode
    (:func:`~sslpipe.data.create_loader` with ``single_pass=True``): the same readers and the
    same decode backends (cpu, nvjpeg, dali), every sample exactly once, in shard order.

    Args:
        directory: a shard directory (``manifest.json`` + ``{name}-000000.tar`` ...), or the
            path or URL of its ``manifest.json`` (``https://``, ``s3://`` ... as
            ``create_loader`` reads them).
        collator: e.g. :class:`~sslpipe.eval.transform.EvalCollator`; it gets the samples as
            the backend delivers them (encoded bytes for cpu, decoded images on the device
            for nvjpeg and dali) with their labels.
        batch_size: images per batch (> 0).
        workers: DataLoader worker processes (0 decodes in this process; None: one per CPU, at
            most 8); shards are dealt out to workers round-robin.
        device: where the Batches are delivered (and decoded, for nvjpeg and dali).
        backend: as ``create_loader``'s; ``"auto"`` picks what pretraining picks.

    Returns:
        an iterable of :class:`~sslpipe.Batch` that raises ValueError at its end when fewer
        images were read than the manifest lists. A corrupt sample or shard raises at once,
        naming it: evaluation never runs on a silently smaller set.
    """
    from sslpipe.data.loader import create_loader

    if batch_size <= 0:
        raise ValueError(f"`batch_size` must be > 0. Got {batch_size}")
    if workers is None:
        workers = default_workers()
    if workers < 0:
        raise ValueError(f"`workers` must be >= 0. Got {workers}")
    manifest = load_manifest(directory)
    if not manifest["labeled"]:
        raise ValueError(f"{os.fspath(directory)!r} has no labels (manifest 'labeled' is false); "
                         "evaluation needs a labeled dataset")
    workers = min(workers, len(manifest["shards"]))
    loader = create_loader(os.fspath(directory), collator, batch_size, device=device,
                           backend=backend, num_workers=workers, shuffle_buffer=0,
                           on_error="raise", single_pass=True, world_size=1, rank=0)
    return CheckedLoader(loader, int(manifest["num_samples"]), os.fspath(directory))


class CheckedLoader:
    """Iterates a loader and checks at the end that ``expected`` images came through."""

    def __init__(self, loader: Iterable[Batch], expected: int, where: str) -> None:
        self.loader = loader
        self.expected = expected
        self.where = where

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Batch]:
        seen = 0
        for batch in self.loader:
            seen += batch.batch_size
            yield batch
        if seen != self.expected:
            raise ValueError(f"{self.where}: read {seen} images but the manifest lists "
                             f"{self.expected}; a shard is truncated or unreadable "
                             "(check it with `sslpipe shard --verify` or rewrite it)")
