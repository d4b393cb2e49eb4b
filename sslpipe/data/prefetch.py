"""Host-to-device copies overlapped with compute: pinned memory and a CUDA side stream.

:func:`prefetch_to_device` keeps one batch in flight: while the model works on batch ``i``,
batch ``i + 1`` is copied on a separate CUDA stream. The consumer's stream waits for the copy
before it touches the tensors, and the tensors are marked as used on that stream so the
caching allocator does not hand their memory out early. On a CPU device it passes batches
through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from sslpipe.batch import Batch


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
