"""Input work overlapped with compute: CUDA side streams for copies and for device decoding.

:func:`prefetch_to_device` keeps one batch in flight: while the model works on batch ``i``,
batch ``i + 1`` is copied on a separate CUDA stream. The consumer's stream waits for the copy
before it touches the tensors, and the tensors are marked as used on that stream so the
caching allocator does not hand their memory out early. On a CPU device it passes batches
through unchanged.

:func:`run_ahead` does the same for the backends that decode and collate on the device
(nvjpeg, dali): each step's work runs on one background thread, up to ``depth`` steps ahead,
on its own CUDA stream, so that decoding batch ``i + 1`` overlaps the training step on batch
``i`` instead of queueing behind it on one stream.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from sslpipe.batch import Batch

Job = Callable[[], tuple[Batch | None, list[Any]]]


def prefetch_to_device(batches: Iterable[Batch], device: torch.device | str) -> Iterator[Batch]:
    """Yield ``batches`` on ``device``, copying the next one while the current one is used.

    Args:
        batches: Batches on the CPU, best in pinned memory (``DataLoader(pin_memory=True)``),
            or already on ``device`` (passed through).
        device: the target device; for a CPU device the batches are passed through.

    Yields:
        The same Batches with every tensor on ``device``.
    """
    device = torch.device(device)
    if device.type != "cuda":
        for batch in batches:
            yield batch if _on(batch, device) else batch.to(device)
        return
    stream = torch.cuda.Stream(device=device)
    pending: tuple[Batch, torch.cuda.Event] | None = None
    for batch in batches:
        with torch.cuda.stream(stream):
            ready = batch.to(device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(stream)
        if pending is not None:
            yield _wait(*pending, device)
        pending = (ready, copied)
    if pending is not None:
        yield _wait(*pending, device)


def run_ahead(jobs: Iterable[Job], device: torch.device | str, depth: int = 2
              ) -> Iterator[tuple[Batch | None, list[Any]]]:
    """Run each step's job on a background thread, ``depth`` steps ahead, in order.

    Args:
        jobs: zero-argument callables, one per step, each returning ``(Batch or None,
            events)``. Iterating ``jobs`` happens on the calling thread (so a DataLoader it
            reads keeps its worker processes there); calling them happens on the background
            thread, one at a time, in order.
        device: on CUDA the jobs run on a side stream, and each Batch is handed over after
            the consumer's stream waits for that job's work.
        depth: jobs submitted ahead of the one being consumed.

    Yields:
        the jobs' results, in order. An exception in a job is raised here; closing the
        generator early stops the thread after its current job.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda and device.index is None:  # a new thread's current device is 0, not the caller's
        device = torch.device("cuda", torch.cuda.current_device())
    side = torch.cuda.Stream(device=device) if cuda else None
    todo: queue.Queue[Any] = queue.Queue()
    done: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()

    def work() -> None:
        on_device: Any = contextlib.nullcontext()
        if side is not None:  # this thread's current device and stream: the loader's
            on_device = contextlib.ExitStack()
            on_device.enter_context(torch.cuda.device(device))
            on_device.enter_context(torch.cuda.stream(side))
        with on_device:
            while not stop.is_set():
                job = todo.get()
                if job is None:
                    return
                try:
                    result = job()
                    ready = None
                    if side is not None:
                        ready = torch.cuda.Event()
                        ready.record(side)
                    done.put((result, ready, None))
                except BaseException as err:  # handed to the consumer, raised there
                    done.put((None, None, err))
                    return

    thread = threading.Thread(target=work, name="sslpipe-run-ahead", daemon=True)
    thread.start()
    pending = 0
    source = iter(jobs)
    try:
        exhausted = False
        while True:
            while not exhausted and pending < depth:
                job = next(source, None)
                if job is None:
                    exhausted = True
                    break
                todo.put(job)
                pending += 1
            if pending == 0:
                return
            result, ready, err = done.get()
            pending -= 1
            if err is not None:
                raise err
            batch, events = result
            if ready is not None and batch is not None:
                current = torch.cuda.current_stream(device)
                current.wait_event(ready)
                batch = batch.apply(lambda t, s=current: _record(t, s))
            yield batch, events
    finally:
        stop.set()
        todo.put(None)
        thread.join()
        close = getattr(source, "close", None)
        if close is not None:  # a generator over a DataLoader shuts its workers down now
            close()


def _wait(batch: Batch, copied: torch.cuda.Event, device: torch.device) -> Batch:
    # wait for this batch's copy only: waiting on the whole side stream would also wait for
    # the next batch's copy, which was just queued, and lose the overlap
    current = torch.cuda.current_stream(device)
    current.wait_event(copied)
    return batch.apply(lambda t: _record(t, current))


def _record(t: torch.Tensor, stream: torch.cuda.Stream) -> torch.Tensor:
    if t.is_cuda:
        t.record_stream(stream)
    return t


def _on(batch: Batch, device: torch.device) -> bool:
    first = batch.inputs[0] if isinstance(batch.inputs, tuple) else batch.inputs
    return first.device.type == device.type
