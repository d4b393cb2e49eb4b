"""The nvjpeg backend: encoded bytes to the GPU, batched nvJPEG decode, collator on the GPU.

DataLoader workers read and group the encoded bytes. They also decode, under sslpipe's decode
policy (:mod:`sslpipe.ops.images`), every image that is not a baseline JPEG (PNG, WebP, CMYK
JPEGs) and a chosen share of the JPEGs (``cpu_decode_share``), so that the CPU cores decode
alongside the GPU instead of idling; those images leave the workers in pinned memory. The JPEGs
left to the GPU are checked there with libjpeg-turbo first (:func:`~sslpipe.ops.jpeg.jpeg_damage`,
about half a CPU decode each): the GPU decoders pass damage over in silence, so a JPEG that
libjpeg-turbo reports damaged is decoded in the worker by the CPU decoder, and is reported and
used (``damaged="use"``) or skipped (``"skip"``) exactly as on the cpu backend. In the
main process the remaining JPEGs of a batch are decoded together on the GPU
(:func:`jpeg_decoder`: nvImageCodec where installed, else ``torchvision.io.decode_jpeg``), the
worker-decoded images are copied over, and both are merged back in sample order. The collator
then gets the ragged list of ``3 x H_i x W_i`` uint8 GPU images and crops and resizes them as
one batched op. The GPU decoders themselves are in :mod:`sslpipe.data.backends.gpu_jpeg`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from sslpipe.batch import Batch
from sslpipe.data.backends.batches import EncodedBatch, min_batch_size, step_generator
from sslpipe.data.backends.cpu import _worker_loader
from sslpipe.data.backends.gpu_jpeg import (
    JpegBatchDecoder,
    JpegDecoder,
    TorchvisionJpegDecoder,
    jpeg_decoder,
)
from sslpipe.data.backends.workers import BatchStream
from sslpipe.data.events import Event, report_short
from sslpipe.data.prefetch import run_stages
from sslpipe.data.reading import ReadPlan
from sslpipe.ops.decoding import DEFAULT_MAX_PIXELS, DamagedImageWarning, decode
from sslpipe.ops.jpeg import is_jpeg, jpeg_size


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
        damaged: str = "use",
    ) -> None:
        self.collate = collate
        self.device = device
        self.num_workers = num_workers
        self.on_error = on_error
        self.decode_jpeg = decode_jpeg
        self.cpu_decode_share = cpu_decode_share
        self.damaged = damaged
        self.max_pixels = collator_max_pixels(collate)
        self.decoder: JpegBatchDecoder | None = None  # None: jpeg_decoder(device)

    def batches(self, plan: ReadPlan) -> Iterator[tuple[Batch | None, list[Event]]]:
        # two stages on two background threads and CUDA streams: decoding batch i + 1 runs
        # while batch i is cropped and augmented, and both overlap the training step
        stream = BatchStream(plan, None, self.on_error, cpu_decode_share=self.cpu_decode_share,
                             damaged=self.damaged, min_batch=min_batch_size(self.collate))
        items = _worker_loader(stream, self.num_workers, self.device.type == "cuda")
        yield from run_stages(items, [self._decode, functools.partial(self._collate, plan)],
                              self.device)

    def _decode(self, item: tuple[EncodedBatch | None, list[Event]]) -> Decoded:
        encoded, events = item
        if encoded is None:  # the events met after a worker's last batch
            return None, [], events
        images, bad, damaged = decode_encoded(encoded.data, self.device, self.decode_jpeg,
                                              self.max_pixels, decoder=self.decoder)
        report_decoded(encoded.keys, images, bad, damaged, events, self.on_error, self.damaged)
        if all(image is None for image in images):
            raise ValueError(f"step {encoded.step}: every sample of the batch failed to decode")
        return encoded, images, events

    def _collate(self, plan: ReadPlan, decoded: Decoded) -> tuple[Batch | None, list[Event]]:
        encoded, images, events = decoded
        if encoded is None:
            return None, events
        keep = [i for i in range(len(images)) if images[i] is not None]
        if len(keep) < min_batch_size(self.collate):  # failures left too few for the task
            report_short([encoded.keys[i] for i in keep], min_batch_size(self.collate), events)
            return None, events
        gen = step_generator(plan.seed, plan.epoch, plan.rank, encoded.step)
        return self.collate(_samples(encoded, images, keep), generator=gen), events


# a decoded batch between the two stages: (batch, its images (None: failed), events)
Decoded = tuple["EncodedBatch | None", list["torch.Tensor | None"], list[Event]]


def decode_encoded(
    data: Sequence[Any], device: torch.device, decode_jpeg: JpegDecoder | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS, *, decoder: JpegBatchDecoder | None = None,
) -> tuple[list[torch.Tensor | None], list[tuple[int, str]], list[tuple[int, str]]]:
    """Decode a batch of encoded images on ``device``: JPEGs batched, the rest on the CPU.

    JPEGs in YCbCr, RGB or grayscale go to the batched GPU decoder (:func:`jpeg_decoder`);
    everything else (PNG, WebP, CMYK/YCCK JPEGs) and what the GPU decoder rejects is decoded
    on the CPU under :mod:`sslpipe.ops.images`' policy and copied over. ``data[i]`` may also be
    an image already decoded (a ``3 x H x W`` uint8 tensor): it is copied to ``device``.

    Args:
        decode_jpeg: a torchvision-style batched decoder ``f(list of uint8 1-D CPU tensors,
            mode=, device=)`` (tests inject one), or None for :func:`jpeg_decoder`'s choice.
        max_pixels: larger images are refused from their header.
        decoder: the batched JPEG decoder (the dali backend's pipeline), overriding both.

    Returns:
        ``(images, bad, damaged)``: ``images[i]`` is the ``3 x H x W`` uint8 RGB image of
        ``data[i]`` on ``device`` (None where it failed), ``bad`` the ``(index, reason)`` of
        failures, ``damaged`` those decoded past a reported damage (CPU decoder only: nvJPEG
        and DALI do not report it; the backends' workers decode the JPEGs libjpeg-turbo reports
        damaged on the CPU before a batch gets here, see
        :class:`~sslpipe.data.backends.workers.BatchStream`).
    """
    if decoder is None:
        decoder = (jpeg_decoder(device) if decode_jpeg is None
                   else TorchvisionJpegDecoder(decode_jpeg))
    images: list[torch.Tensor | None] = [None] * len(data)
    bad: list[tuple[int, str]] = []
    damaged: list[tuple[int, str]] = []
    batched: list[int] = []
    for i, item in enumerate(data):
        if isinstance(item, torch.Tensor):
            images[i] = item.to(device, non_blocking=True)
            continue
        size = jpeg_size(bytes(item)) if is_jpeg(item) else None  # gpu_decodable's test
        if size is not None and size[0] * size[1] > max_pixels:
            bad.append((i, f"image is {size[1]} x {size[0]} = {size[0] * size[1]:,} pixels, "
                           f"more than max_pixels={max_pixels:,}"))
        elif size is not None:
            batched.append(i)
    cpu = [i for i in range(len(data)) if images[i] is None and i not in set(batched)
           and i not in {b for b, _ in bad}]
    if batched:
        for i, image in zip(batched, decoder([bytes(data[i]) for i in batched], device)):
            if image is None:
                cpu.append(i)  # the CPU decoder decodes it or says why not
            else:
                images[i] = image
    for i in sorted(cpu):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DamagedImageWarning)
            try:
                images[i] = decode(bytes(data[i]), where=f"sample {i}",
                                   max_pixels=max_pixels).to(device, non_blocking=True)
            except ValueError as err:
                bad.append((i, str(err)))
        damaged += [(i, w.message.why) for w in caught
                    if isinstance(w.message, DamagedImageWarning)]
    return images, sorted(bad), damaged


def report_decoded(keys: list[str], images: list[torch.Tensor | None],
                   bad: list[tuple[int, str]], damaged: list[tuple[int, str]],
                   events: list[Event], on_error: str, policy: str) -> None:
    """Turn a decoded batch's failures and damage into events (or raise with
    ``on_error="raise"``); a damaged image is dropped from ``images`` under ``"skip"``."""
    for i, why in bad:
        if on_error == "raise":
            raise ValueError(f"bad sample {keys[i]}: {why} (on_error='raise')")
        events.append(("corrupt", keys[i], why))
    for i, why in damaged:
        if on_error == "raise":
            raise ValueError(f"damaged sample {keys[i]}: {why} (on_error='raise')")
        if policy == "skip":
            events.append(("damaged", keys[i], why))
            images[i] = None
        else:
            events.append(("damaged-used", keys[i], why))


def collator_max_pixels(collate: Any) -> int:
    """The ``max_pixels`` option of a collator (a Task's too), or the default."""
    options = getattr(getattr(collate, "options", None), "max_pixels", None)
    return int(options) if options else DEFAULT_MAX_PIXELS


def _samples(encoded: EncodedBatch, images: list[Any], keep: list[int]) -> list[Any]:
    if encoded.labels is None:
        return [images[i] for i in keep]
    return [(images[i], encoded.labels[i]) for i in keep]
