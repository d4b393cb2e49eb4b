"""Samples held in memory, served as Batches: :class:`SampleBatches`.

A few-label evaluation reads its labelled subset once (:class:`~sslpipe.eval.labels.LabeledSplit`)
and keeps the encoded samples in memory; :class:`SampleBatches` turns them into Batches with
the evaluation's own collator, in this process, every epoch (reshuffled, with per-step
augmentation generators, when given a ``shuffle_seed``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from sslpipe.batch import Batch


class SampleBatches:
    """Labelled samples held in memory as a re-iterable of Batches, made by ``collator``.

    Args:
        samples: webdataset sample dicts (encoded image and ``cls``).
        collator: e.g. :class:`~sslpipe.eval.transform.EvalCollator` or ``TrainCollator``.
        batch_size: images per batch (the last batch may be smaller).
        device: where the Batches are delivered.
        shuffle_seed: None keeps the order; an int reshuffles every epoch with
            ``(shuffle_seed, epoch)`` (call :meth:`set_epoch`, as ``finetune`` does).
        positions: each sample's position in its split (default ``0 .. len - 1``).
        cache_id: a string naming the content (split and chosen keys), with which the probes
            cache these samples' features.

    Every Batch's ``meta["index"]`` holds the int64 ``positions`` of its samples.
    """

    def __init__(self, samples: Sequence[dict[str, Any]], collator: Callable[..., Batch],
                 batch_size: int, device: torch.device | str = "cpu",
                 shuffle_seed: int | None = None,
                 positions: Sequence[int] | np.ndarray | None = None,
                 cache_id: str | None = None) -> None:
        if not samples:
            raise ValueError("samples: expected at least one labelled sample. Got none")
        if batch_size <= 0:
            raise ValueError(f"`batch_size` must be > 0. Got {batch_size}")
        if positions is not None and len(positions) != len(samples):
            raise ValueError(f"positions must give one position per sample ({len(samples)}). "
                             f"Got {len(positions)}")
        self.positions = torch.as_tensor(
            np.arange(len(samples)) if positions is None else np.asarray(positions),
            dtype=torch.int64)
        self.cache_id = cache_id
        self.samples = list(samples)
        self.collator = collator
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.shuffle_seed = shuffle_seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return -(-len(self.samples) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.samples)
        if self.shuffle_seed is None:
            order = torch.arange(n)
        else:
            shuffle = torch.Generator().manual_seed(self.shuffle_seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=shuffle)
        for step, start in enumerate(range(0, n, self.batch_size)):
            idx = order[start:start + self.batch_size]
            gen: torch.Generator | None = None
            if self.shuffle_seed is not None:
                # each step's augmentations from its own generator, as create_loader does
                gen = torch.Generator().manual_seed(
                    (self.shuffle_seed * 1_000_003 + self.epoch * 10_007 + step) % 2**63)
            batch = self.collator([self.samples[i] for i in idx.tolist()], generator=gen)
            batch.meta["index"] = self.positions[idx]
            yield batch.to(self.device, non_blocking=True)
