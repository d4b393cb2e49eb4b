"""The dali backend: sslpipe's reader feeds a DALI decoding pipeline; the collator does the rest.

DataLoader workers read the shards exactly as the cpu and nvjpeg backends do (the same
:class:`~sslpipe.data.backends.workers.BatchStream`): a malformed sample, a truncated or
unreadable shard, a missing label and an unlabeled tar are met, counted and named the same
way on every backend, and DALI sees only well-formed samples. The workers decode what is
not a baseline JPEG (PNG, WebP, CMYK JPEGs) under sslpipe's decode policy, and every JPEG that
libjpeg-turbo reports damaged (DALI's decoders pass damage over in silence), so a damaged image
is counted and named, used or skipped as on the cpu backend; the other JPEGs are fed
to a DALI pipeline (``fn.external_source`` into ``fn.decoders.image``): on the GPU its
``mixed`` decoder (nvJPEG, ``hw_decoder_load`` of the work on the hardware JPEG engine where
the GPU has one, libjpeg's "fancy" chroma upsampling like the CPU decoders, EXIF orientation
applied), on the CPU DALI's CPU decoder. The decoded ``H x W x 3`` images reach torch without a
copy through DLPack (one device copy frees DALI's buffers for the next batch), and the task's
collator makes the Batch on the same device, in the stage after decoding.

A batch DALI fails on (an image its decoder rejects) is decoded again by sslpipe's CPU decoder,
which names the bad sample; the pipeline is rebuilt for the next batch.

DALI is optional (``pip install 'sslpipe[dali]'``) and imported only when this backend is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from sslpipe.batch import Batch
from sslpipe.data.backends.nvjpeg import NvjpegBackend
from sslpipe.data.events import Event
from sslpipe.data.reading import ReadPlan

INSTALL_HINT = "pip install 'sslpipe[dali]'"


def dali_available() -> bool:
    """True when NVIDIA DALI can be imported."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def require_dali() -> Any:
    """Import ``nvidia.dali`` or raise ImportError saying how to install it."""
    try:
        import nvidia.dali as dali
    except ImportError as err:
        raise ImportError(
            f"backend='dali' needs NVIDIA DALI, which is not installed: {INSTALL_HINT} "
            "(or use backend='nvjpeg' / 'cpu')"
        ) from err
    return dali


class DaliBackend(NvjpegBackend):
    """sslpipe's workers read; a DALI pipeline decodes the JPEGs on ``device``.

    Args:
        num_threads: DALI's CPU threads (default: half the cores, 1 to 8).
        hw_decoder_load: share of JPEG decoding given to the hardware decoder (GPU only).
        Others as :class:`~sslpipe.data.backends.nvjpeg.NvjpegBackend`.
    """

    name = "dali"

    def __init__(
        self, collate: Any, device: torch.device, num_workers: int, on_error: str,
        hw_decoder_load: float = 0.65, num_threads: int | None = None,
        cpu_decode_share: float = 0.0, damaged: str = "use",
    ) -> None:
        require_dali()
        super().__init__(collate, device, num_workers, on_error,
                         cpu_decode_share=cpu_decode_share, damaged=damaged)
        threads = num_threads or max(1, min(8, (os.cpu_count() or 2) // 2))
        self.dali = DaliJpegDecoder(device, threads, hw_decoder_load)
        self.decoder = self.dali

    def batches(self, plan: ReadPlan) -> Iterator[tuple[Batch | None, list[Event]]]:
        self.dali.batch_size = max(self.dali.batch_size, plan.batch_size)
        yield from super().batches(plan)


class DaliJpegDecoder:
    """A DALI pipeline as a batched JPEG decoder: ``f(list of JPEG bytes, device) -> list of
    3 x H x W uint8 tensors`` (None for every image of a batch DALI fails on: the caller
    decodes those on the CPU). The tensors are copies (one device-to-device copy of the
    batch): DALI reuses its output buffers at the next run, while the previous batch may still
    be in the collator's stage."""

    def __init__(self, device: torch.device, num_threads: int, hw_decoder_load: float,
                 batch_size: int = 1) -> None:
        self.device = device
        self.num_threads = num_threads
        self.hw_decoder_load = hw_decoder_load
        self.batch_size = batch_size
        self._pipe: Any = None
        self._built_for = 0
        self.failures: list[str] = []

    def __call__(self, data: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
        if self._pipe is None or self._built_for < self.batch_size:
            self._pipe = build_pipeline(self.device, self.batch_size, self.num_threads,
                                        self.hw_decoder_load)
            self._built_for = self.batch_size
        out: list[torch.Tensor | None] = []
        for start in range(0, len(data), self.batch_size):
            part = data[start:start + self.batch_size]
            self._pipe.feed_input("encoded", [np.frombuffer(d, dtype=np.uint8) for d in part])
            try:
                (images,) = self._pipe.run()
            except RuntimeError as err:
                # the CPU decoder then decodes this batch and names the bad image; DALI's own
                # message is kept (the last few) for a report
                self.failures = [*self.failures[-9:], " ".join(str(err).split())[:500]]
                self._pipe = None  # DALI's state after an operator error: start afresh
                return [None] * len(data)
            out += [torch.from_dlpack(images[i]).clone().permute(2, 0, 1)
                    for i in range(len(part))]
        return out


def build_pipeline(device: torch.device, batch_size: int, num_threads: int = 2,
                   hw_decoder_load: float = 0.65) -> Any:
    """The decoding pipeline: ``external_source`` ("encoded", 1-D uint8 JPEG bytes, up to
    ``batch_size`` per run) into ``fn.decoders.image``; one output, ``H x W x 3`` uint8 RGB,
    upright (EXIF), on ``device``."""
    require_dali()
    from nvidia.dali import fn, types
    from nvidia.dali.pipeline import Pipeline

    gpu = device.type == "cuda"
    pipe = Pipeline(batch_size=batch_size, num_threads=num_threads,
                    device_id=(device.index or 0) if gpu else None, prefetch_queue_depth=1)
    with pipe:
        encoded = fn.external_source(name="encoded", dtype=types.UINT8,  # type: ignore[attr-defined]
                                     ndim=1)
        extra: dict[str, Any] = (
            {"hw_decoder_load": hw_decoder_load, "jpeg_fancy_upsampling": True} if gpu else {})
        images = fn.decoders.image(encoded, device="mixed" if gpu else "cpu",
                                   output_type=types.RGB, **extra)  # type: ignore[attr-defined]
        pipe.set_outputs(images)
    pipe.build()
    return pipe
