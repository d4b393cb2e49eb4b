"""The cpu backend: DataLoader workers decode and augment, batches leave them pinned.

Each worker groups the *encoded* bytes (and labels) of a batch and calls the task's collator
on them, so decoding (at reduced JPEG DCT scale where the collator's crops allow) and the
augmentation run in the worker, in uint8 until the final float conversion. With a CUDA target
the batches leave the workers in pinned memory and the loader copies them to the device on a
side stream, one batch ahead (:mod:`sslpipe.data.prefetch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from sslpipe.batch import Batch
from sslpipe.data.backends.workers import BatchStream, Event
from sslpipe.data.reading import ReadPlan


class CpuBackend:
    """Decode and collate in ``num_workers`` DataLoader worker processes (0: in this process).

    Yields ``(Batch, events)`` per step, the Batch on the CPU (pinned when ``device`` is CUDA),
    and ``(None, events)`` for what a worker met after its last batch.
    """

    name = "cpu"

    def __init__(
        self, collate: Callable[..., Batch], device: torch.device, num_workers: int,
        on_error: str,
    ) -> None:
        self.collate = collate
        self.device = device
        self.num_workers = num_workers
        self.on_error = on_error

    def batches(self, plan: ReadPlan) -> Iterator[tuple[Batch | None, list[Event]]]:
        stream = BatchStream(plan, self.collate, self.on_error)
        yield from _worker_loader(stream, self.num_workers, pin=self.device.type == "cuda")


def _worker_loader(stream: BatchStream, num_workers: int, pin: bool) -> Iterator[Any]:
    # batch_size=None: the workers already make whole batches; the DataLoader only moves them.
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )
    yield from loader
