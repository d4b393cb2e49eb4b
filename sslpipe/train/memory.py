"""``MemoryLoader``: a deterministic loader over images held in memory.

For small data (the quickstart, tests, notebooks) and as the reference of the loader protocol
the trainer needs: iterable of Batches, ``len()`` (batches per epoch on this rank),
``set_epoch(epoch)``, and ``iter_from(start)`` to continue an epoch after ``start`` batches.
Each batch's augmentations are drawn from a generator seeded by ``(seed, epoch, index)``, so
skipping batches on resume costs nothing and gives exactly the batches of an unbroken run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from sslpipe.batch import Batch

__all__ = ["MemoryLoader"]


class MemoryLoader:
    """Batches of ``collator`` over ``images`` for rank ``rank`` of ``world_size``.

    Args:
        images: uint8 ``N x C x H x W`` tensor, or a sequence of ``C x H x W`` uint8 tensors.
        labels: int64 ``N`` class labels, or None.
        collator: a task collator (``task.collator``).
        batch_size: images per batch on this rank.
        seed: seeds the order (shuffled per epoch, same permutation on every rank) and the
            augmentations.
        rank, world_size: each rank takes every ``world_size``-th image of the permutation;
            the last partial batch is dropped (counted in ``dropped``).
        shuffle: reshuffle every epoch.
        num_classes: number of label classes (read by the trainer's online probe).
    """

    def __init__(self, images: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor | None,
                 collator: Any, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True, num_classes: int = 0) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0. Got {batch_size}")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"labels must have one entry per image ({len(images)}). "
                             f"Got {len(labels)}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}. Got {rank}")
        self.images, self.labels, self.collator = images, labels, collator
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.shuffle, self.num_classes = shuffle, num_classes
        self.epoch = 0
        per_rank = len(images) // world_size
        if per_rank < batch_size:
            raise ValueError(f"batch_size: each of {world_size} rank(s) has {per_rank} images, "
                             f"fewer than one batch. Got batch_size={batch_size}")
        self.dropped = len(images) - len(self) * batch_size * world_size

    def __len__(self) -> int:
        return (len(self.images) // self.world_size) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle order and augmentation seeds of ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Batch]:
        """The batches of the current epoch from index ``start`` on."""
        n = len(self.images)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(
                self.seed * 1_000_003 + self.epoch))
        else:
            order = torch.arange(n)
        mine = order[self.rank::self.world_size]
        for index in range(start, len(self)):
            idx = mine[index * self.batch_size:(index + 1) * self.batch_size].tolist()
            gen = torch.Generator().manual_seed(
                hash((self.seed, self.epoch, self.rank, index)) & 0x7FFF_FFFF_FFFF)
            samples = [self.images[i] if self.labels is None
                       else (self.images[i], int(self.labels[i])) for i in idx]
            yield self.collator(samples, generator=gen)
