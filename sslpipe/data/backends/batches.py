"""What a DataLoader worker hands the loader, and the small rules both sides share.

:class:`EncodedBatch` is a batch of encoded bytes (or worker-decoded images) on its way to a
GPU decoder, sent through shared memory; :func:`step_generator` seeds a batch's augmentations
from its step, whichever worker made it; :func:`min_batch_size` and :func:`gpu_decodable` are
the collator's and the GPU decoders' limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sslpipe.ops.jpeg import is_jpeg, jpeg_size

__all__ = ["EncodedBatch", "gpu_decodable", "min_batch_size", "step_generator"]


@dataclass
class EncodedBatch:
    """Images of one batch as the nvjpeg backend's workers hand them on: ``data[i]`` JPEG/PNG
    bytes, or the ``3 x H x W`` uint8 image where the worker decoded it; ``labels`` int class
    indices (None for unlabeled data), ``keys`` ``"url:key"`` of each sample for error
    reports, ``step`` the step of the epoch it is made for (it seeds the augmentations)."""

    data: list[Any]
    labels: list[int] | None
    keys: list[str]
    step: int = 0

    def __getstate__(self) -> dict[str, Any]:
        # Crossing from a DataLoader worker: the encoded bytes travel as one uint8 tensor (in
        # shared memory, like the decoded images) instead of being pickled through the pipe,
        # which held the nvjpeg backend's reading to about 7,000 images/s on 16 cores.
        spans: list[tuple[int, int] | None] = []
        chunks: list[bytes] = []
        at = 0
        for item in self.data:
            if isinstance(item, torch.Tensor):
                spans.append(None)
                continue
            spans.append((at, len(item)))
            chunks.append(item)
            at += len(item)
        blob = torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8) if at else None
        tensors = [item if isinstance(item, torch.Tensor) else None for item in self.data]
        return {"spans": spans, "blob": blob, "tensors": tensors, "labels": self.labels,
                "keys": self.keys, "step": self.step}

    def __setstate__(self, state: dict[str, Any]) -> None:
        raw = state["blob"].numpy() if state["blob"] is not None else b""
        self.data = [t if span is None else bytes(raw[span[0]:span[0] + span[1]])
                     for t, span in zip(state["tensors"], state["spans"])]
        self.labels, self.keys, self.step = state["labels"], state["keys"], state["step"]

    def pin_memory(self) -> EncodedBatch:
        """The DataLoader's pin-memory thread calls this: decoded images go to pinned memory,
        so their copy to the GPU can overlap."""
        data = [d.pin_memory() if isinstance(d, torch.Tensor) else d for d in self.data]
        return EncodedBatch(data, self.labels, self.keys, self.step)

    def samples(self) -> list[Any]:
        """As collator samples: ``(bytes, label)`` or bare bytes."""
        if self.labels is None:
            return list(self.data)
        return list(zip(self.data, self.labels))


def min_batch_size(collate: Any) -> int:
    """The fewest images ``collate`` (a collator, its host stage or a Task) takes at once."""
    owner = getattr(collate, "__self__", collate)  # a bound host_stage
    owner = getattr(owner, "collator", owner)  # a Task
    return int(getattr(owner, "min_batch_size", 1))


def gpu_decodable(data: bytes) -> bool:
    """A JPEG the batched GPU decoders take: its header reads and it is YCbCr, RGB or gray
    (CMYK/YCCK and everything else is decoded on the CPU, under one policy)."""
    return is_jpeg(data) and jpeg_size(bytes(data)) is not None


def step_generator(seed: int, epoch: int, rank: int, step: int) -> torch.Generator:
    """The CPU generator a batch's random parameters are drawn from.

    It depends only on ``(seed, epoch, rank, step)``, not on which worker made the batch.
    """
    mixed = (seed * 1_000_003 + epoch * 10_007 + rank) * 1_000_033 + step
    return torch.Generator().manual_seed(mixed % (2**63))
