"""The nvjpeg backend: encoded bytes to the GPU, batched nvJPEG decode, collator on the GPU.

DataLoader workers read and group the encoded bytes. They also decode, with libjpeg-turbo,
every image that is not a JPEG (PNG, WebP) and a chosen share of the JPEGs
(``cpu_decode_share``), so that the CPU cores decode alongside the GPU instead of idling; those
images leave the workers in pinned memory. In the main process the remaining JPEGs of a batch
are decoded together by ``torchvision.io.decode_jpeg(list, device="cuda")``, the
worker-decoded images are copied over, and both are merged back in sample order. The collator
then gets the ragged list of ``3 x H_i x W_i`` uint8 GPU images and crops and resizes them as
one batched op.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from sslpipe.batch import Batch
from sslpipe.data.backends.cpu import _worker_loader
from sslpipe.data.backends.workers import BatchStream, EncodedBatch, Event, step_generator
from sslpipe.data.prefetch import run_ahead
from sslpipe.data.reading import ReadPlan
from sslpipe.ops.images import decode
from sslpipe.ops.jpeg import is_jpeg

JpegDecoder = Callable[..., list[torch.Tensor]]


class NvjpegBackend:
    """Read bytes in ``num_workers`` workers, decode batched on ``device``, collate there.

    Args:
        cpu_decode_share: share (0..1) of each batch's JPEGs decoded in the workers on the
            CPU rather than by nvJPEG; the rest of the batch's formats are always decoded there.
        decode_jpeg: the batched JPEG decoder, ``f(list of uint8 1-D CPU tensors, device=...)
            -> list of 3 x H x W uint8 tensors``; torchvision's ``decode_jpeg`` by default.

    Yields ``(Batch, events)`` per step (``(None, events)`` for what a worker met after its
    last batch); a sample that fails to decode is dropped from its batch (the batch is
    smaller by one) and reported, or raises with ``on_error="raise"``.
    """

    name = "nvjpeg"
    on_device = True

    def __init__(
        self, collate: Callable[..., Batch], device: torch.device, num_workers: int,
        on_error: str, decode_jpeg: JpegDecoder | None = None, cpu_decode_share: float = 0.0,
    ) -> None:
        self.collate = collate
        self.device = device
        self.num_workers = num_workers
        self.on_error = on_error
        self.decode_jpeg = decode_jpeg
        self.cpu_decode_share = cpu_decode_share

    def batches(self, plan: ReadPlan) -> Iterator[tuple[Batch | None, list[Event]]]:
        # decoding and collating batch i + 1 (one background thread, its own CUDA stream)
        # overlaps the training step on batch i
        yield from run_ahead(self._jobs(plan), self.device)

    def _jobs(self, plan: ReadPlan) -> Iterator[Callable[[], tuple[Batch | None, list[Event]]]]:
        stream = BatchStream(plan, None, self.on_error, cpu_decode_share=self.cpu_decode_share)
        pin = self.device.type == "cuda"
        for encoded, events in _worker_loader(stream, self.num_workers, pin):
            yield functools.partial(self._step, plan, encoded, events)

    def _step(self, plan: ReadPlan, encoded: EncodedBatch | None,
              events: list[Event]) -> tuple[Batch | None, list[Event]]:
        if encoded is None:  # the events met after a worker's last batch
            return None, events
        images, bad = decode_encoded(encoded.data, self.device, self.decode_jpeg)
        for i, why in bad:
            if self.on_error == "raise":
                raise ValueError(f"bad sample {encoded.keys[i]}: {why} (on_error='raise')")
            events.append(("corrupt", encoded.keys[i], why))
        keep = [i for i in range(len(images)) if images[i] is not None]
        if not keep:
            raise ValueError(f"step {encoded.step}: every sample of the batch failed to decode")
        gen = step_generator(plan.seed, plan.epoch, plan.rank, encoded.step)
        return self.collate(_samples(encoded, images, keep), generator=gen), events


def decode_encoded(
    data: Sequence[Any], device: torch.device, decode_jpeg: JpegDecoder | None = None
) -> tuple[list[torch.Tensor | None], list[tuple[int, str]]]:
    """Decode a batch of encoded images on ``device``: JPEGs batched, the rest on the CPU.

    ``data[i]`` may also be an image already decoded (a ``3 x H x W`` uint8 tensor): it is
    copied to ``device``.

    Returns:
        ``(images, bad)``: ``images[i]`` is the ``3 x H x W`` uint8 RGB image of ``data[i]``
        on ``device`` (None where it failed), ``bad`` the ``(index, reason)`` of failures.
    """
    if decode_jpeg is None:
        from torchvision.io import decode_jpeg as torchvision_decode_jpeg

        decode_jpeg = torchvision_decode_jpeg
    images: list[torch.Tensor | None] = [None] * len(data)
    bad: list[tuple[int, str]] = []
    jpegs = [i for i, d in enumerate(data) if not isinstance(d, torch.Tensor) and is_jpeg(d)]
    if jpegs:
        for i, image in zip(jpegs, _decode_jpegs([data[i] for i in jpegs], device, decode_jpeg)):
            if isinstance(image, str):
                bad.append((i, image))
            else:
                images[i] = image
    for i in sorted(set(range(len(data))) - set(jpegs)):
        if isinstance(data[i], torch.Tensor):
            images[i] = data[i].to(device, non_blocking=True)
            continue
        try:
            images[i] = decode(bytes(data[i]), where=f"sample {i}").to(device, non_blocking=True)
        except ValueError as err:
            bad.append((i, str(err)))
    return images, sorted(bad)


def _decode_jpegs(
    data: list[bytes], device: torch.device, decode_jpeg: JpegDecoder
) -> list[torch.Tensor | str]:
    from torchvision.io import ImageReadMode

    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in data]
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 marks its image codecs deprecated in favour of torchcodec.
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
        return [_rgb(x) for x in decoded]
    except RuntimeError:
        # One JPEG nvJPEG rejects fails the whole batched call: decode one by one, and give
        # the rejected ones (CMYK, unusual sampling) to the CPU decoder before calling them bad.
        out: list[torch.Tensor | str] = []
        for raw, t in zip(data, tensors):
            try:
                out.append(_rgb(decode_jpeg([t], mode=ImageReadMode.RGB, device=device)[0]))
            except RuntimeError as err:
                try:
                    out.append(decode(bytes(raw)).to(device, non_blocking=True))
                except ValueError:
                    out.append(f"cannot decode JPEG ({t.numel()} bytes): {err}")
        return out


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]


def _samples(encoded: EncodedBatch, images: list[Any], keep: list[int]) -> list[Any]:
    if encoded.labels is None:
        return [images[i] for i in keep]
    return [(images[i], encoded.labels[i]) for i in keep]
