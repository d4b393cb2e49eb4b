"""The cpu backend: DataLoader workers decode and crop, the device does the float work.

Each worker groups the *encoded* bytes (and labels) of a batch and runs the collator's host
stage on them: decoding (at reduced JPEG DCT scale where the crops allow), crops and resizes,
in uint8, with every random parameter drawn. With a CUDA target those uint8 batches leave the
workers in pinned memory; one background thread copies each to the device on its own stream
and runs the collator's device stage there (colour, blur, normalisation, pseudo-labels), up to
two steps ahead of the training step (:func:`~sslpipe.data.prefetch.run_ahead`). Only uint8
crosses the bus: for SimCLR at 224 px, 0.3 MB per image instead of 1.2 MB of float32.

On a CPU target the workers run both stages by default. Measured on 2 cores
(``benchmarks/host_device.py``, table 3, each placement timed twice in A B B A order): the
loader alone is 1.0-1.2x faster finishing in the main process (float batches are 4x the bytes
through the workers' shared memory), but a training run, whose main process is busy with the
model, is 8-12% faster with the float work in the workers, and a training run is what a CPU
target is for. ``Loader.device_stage`` says which placement a loader runs. A collator
without the two stages (any plain callable) runs whole in the workers, and its float batches
are copied ahead on a side stream (:func:`~sslpipe.data.prefetch.prefetch_to_device`).
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from sslpipe.batch import Batch, HostBatch
from sslpipe.data.backends.batches import min_batch_size
from sslpipe.data.backends.workers import BatchStream
from sslpipe.data.events import Event
from sslpipe.data.prefetch import run_ahead
from sslpipe.data.reading import ReadPlan


class CpuBackend:
    """Decode and collate in ``num_workers`` DataLoader worker processes (0: in this process).

    Args:
        device_stage: where the collator's device stage runs: ``"device"`` (on ``device``,
            after the uint8 copy; on a CPU device, in the main process), ``"workers"`` (both
            stages in the workers) or ``"auto"`` (``"device"`` on an accelerator, ``"workers"``
            on the CPU, where a training run is faster with the float work off the main
            process: see the module docstring).
            A collator without the two stages always runs whole in the workers.

    Yields ``(Batch, events)`` per step, and ``(None, events)`` for what a worker met after its
    last batch. ``on_device`` tells where the Batches are: on ``device`` already (the device
    stage ran there) or on the CPU (pinned when ``device`` is CUDA) for the loader to copy.
    """

    name = "cpu"

    def __init__(
        self, collate: Callable[..., Batch], device: torch.device, num_workers: int,
        on_error: str, device_stage: str = "auto", damaged: str = "use",
    ) -> None:
        self.collate = collate
        self.device = device
        self.num_workers = num_workers
        self.on_error = on_error
        self.damaged = damaged
        if device_stage == "auto":
            device_stage = "workers" if device.type == "cpu" else "device"
        self.split = device_stage == "device" and hasattr(collate, "host_stage")
        self.on_device = self.split

    def batches(self, plan: ReadPlan) -> Iterator[tuple[Batch | None, list[Event]]]:
        pin = self.device.type == "cuda"
        if not self.split:
            stream = BatchStream(plan, self.collate, self.on_error, damaged=self.damaged,
                                 min_batch=min_batch_size(self.collate))
            yield from _worker_loader(stream, self.num_workers, pin)
            return
        stream = BatchStream(plan, self.collate.host_stage,  # type: ignore[attr-defined]
                             self.on_error, damaged=self.damaged,
                             min_batch=min_batch_size(self.collate))
        jobs = (functools.partial(self._device_stage, host, events)
                for host, events in _worker_loader(stream, self.num_workers, pin))
        yield from run_ahead(jobs, self.device)

    def _device_stage(self, host: HostBatch | None, events: list[Event]
                      ) -> tuple[Batch | None, list[Event]]:
        if host is None:  # the events met after a worker's last batch
            return None, events
        # pinned host memory: the copy queues on this thread's stream without waiting
        device_stage: Any = self.collate.device_stage  # type: ignore[attr-defined]
        return device_stage(host.to(self.device, non_blocking=True)), events


def _worker_loader(stream: BatchStream, num_workers: int, pin: bool) -> Iterator[Any]:
    # batch_size=None: the workers already make whole batches; the DataLoader only moves them.
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
        worker_init_fn=ignore_stop_signals if num_workers else None,
    )
    yield from loader


def ignore_stop_signals(worker_id: int) -> None:
    """In a loader worker: leave SIGINT and SIGTERM to the main process.

    A shell's Ctrl-C, ``kill -TERM -PGID``, and schedulers that signal a job's whole process
    group (Slurm, systemd) reach the workers too. torch's worker dies of an outside SIGTERM,
    and the main process then fails with "DataLoader worker is killed by signal: Terminated"
    before it can stop cleanly (``sslpipe train`` checkpoints and exits 143). The main process
    ends its workers when it stops; a worker whose main process is killed outright sees it gone
    and exits (torch's watchdog).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
