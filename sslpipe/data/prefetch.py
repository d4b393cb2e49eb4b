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
import functools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

from sslpipe.batch import Batch, HostBatch

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
    yield from run_stages(jobs, [_call], device, depth)


def run_stages(items: Iterable[Any], stages: Sequence[Callable[[Any], Any]],
               device: torch.device | str, depth: int = 2) -> Iterator[Any]:
    """Pass each item through ``stages`` in order, each stage on its own thread and (on CUDA)
    its own stream, so that stage ``k`` works on item ``i + 1`` while stage ``k + 1`` works on
    item ``i`` (decoding the next batch while the current one is augmented).

    Args:
        items: iterated on the calling thread (a DataLoader keeps its workers there).
        stages: functions ``value -> value``; a value's CUDA tensors (in tuples, lists, dicts,
            Batches, HostBatches) are handed from stage to stage and to the consumer safely:
            the next stream waits for the previous stage's work, and the tensors are marked as
            used there so the caching allocator does not reuse their memory early.
        depth: items in flight per stage.

    Yields:
        ``stages[-1](... stages[0](item))`` for each item, in order. An exception in a stage
        is raised here; closing the generator stops the threads after their current item.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda and device.index is None:  # a new thread's current device is 0, not the caller's
        device = torch.device("cuda", torch.cuda.current_device())
    queues: list[queue.Queue[Any]] = [queue.Queue() for _ in range(len(stages) + 1)]
    stop = threading.Event()

    def work(k: int) -> None:
        stream = torch.cuda.Stream(device=device) if cuda else None
        on_device: Any = contextlib.nullcontext()
        if stream is not None:  # this thread's current device and stream
            on_device = contextlib.ExitStack()
            on_device.enter_context(torch.cuda.device(device))
            on_device.enter_context(torch.cuda.stream(stream))
        inbox, outbox = queues[k], queues[k + 1]
        with on_device:
            while True:
                message = inbox.get()
                if message is None:  # the sentinel: pass it on, so every stage ends
                    outbox.put(None)
                    return
                if stop.is_set():  # the consumer is gone: drain to the sentinel, no work
                    continue
                value, ready, err = message
                if err is None:
                    try:
                        if stream is not None and ready is not None:
                            stream.wait_event(ready)
                            _walk(value, functools.partial(_record, stream=stream))
                        value = stages[k](value)
                        ready = None
                        if stream is not None:
                            ready = torch.cuda.Event()
                            ready.record(stream)
                    except BaseException as error:  # handed on to the consumer, raised there
                        value, ready, err = None, None, error
                outbox.put((value, ready, err))

    names = (["sslpipe-run-ahead"] if len(stages) == 1 else
             [f"sslpipe-run-ahead-{k}" for k in range(len(stages))])
    threads = [threading.Thread(target=work, args=(k,), name=names[k], daemon=True)
               for k in range(len(stages))]
    for thread in threads:
        thread.start()
    capacity = max(1, depth) * len(stages)
    pending = 0
    source = iter(items)
    try:
        exhausted = False
        while True:
            while not exhausted and pending < capacity:
                item = next(source, _END)
                if item is _END:
                    exhausted = True
                    break
                queues[0].put((item, None, None))
                pending += 1
            if pending == 0:
                return
            message = queues[-1].get()
            pending -= 1
            value, ready, err = message
            if err is not None:
                raise err
            if ready is not None:
                current = torch.cuda.current_stream(device)
                current.wait_event(ready)
                _walk(value, functools.partial(_record, stream=current))
            yield value
    finally:
        stop.set()
        queues[0].put(None)
        for thread in threads:
            thread.join()
        close = getattr(source, "close", None)
        if close is not None:  # a generator over a DataLoader shuts its workers down now
            close()


_END = object()


def _call(job: Job) -> tuple[Batch | None, list[Any]]:
    return job()


def _walk(value: Any, fn: Callable[[torch.Tensor], Any]) -> None:
    """Apply ``fn`` to every tensor in ``value`` (tuples, lists, dicts, Batch, HostBatch)."""
    if isinstance(value, torch.Tensor):
        fn(value)
    elif isinstance(value, (tuple, list)):
        for v in value:
            _walk(v, fn)
    elif isinstance(value, dict):
        for v in value.values():
            _walk(v, fn)
    elif isinstance(value, Batch):
        _walk((value.inputs, value.targets, value.labels, value.meta), fn)
    elif isinstance(value, HostBatch):
        _walk((value.pixels, value.labels, value.meta), fn)


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
