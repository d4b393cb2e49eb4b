"""Decode backends of the loader: ``cpu``, ``nvjpeg``, ``dali``, and ``auto`` selection.

Every backend turns a :class:`~sslpipe.data.reading.ReadPlan` into ``(Batch, events)`` per
step through ``batches(plan)``; they differ in where decoding happens.
"""

from __future__ import annotations

import torch

from sslpipe.data.backends.cpu import CpuBackend
from sslpipe.data.backends.dali import DaliBackend, dali_available, require_dali
from sslpipe.data.backends.nvjpeg import NvjpegBackend, decode_encoded
from sslpipe.data.shard_source import ShardSource

BACKENDS = ("auto", "dali", "nvjpeg", "cpu")

__all__ = [
    "BACKENDS", "CpuBackend", "DaliBackend", "NvjpegBackend", "dali_available", "decode_encoded",
    "require_dali", "select_backend",
]


def select_backend(backend: str, device: torch.device, source: ShardSource) -> tuple[str, str]:
    """Resolve ``backend`` (``"auto"`` included) to ``(name, why)``.

    ``auto`` picks the fastest that can run: on CUDA, dali when it is installed, else nvjpeg;
    on the CPU, cpu (DataLoader workers decoding with libjpeg-turbo at reduced DCT scale beat
    DALI's CPU decoder per core).

    Raises:
        ValueError: an unknown name, or nvjpeg without a CUDA device.
        ImportError: dali without DALI installed (the message says how to install it).
    """
    if backend not in BACKENDS:
        choices = ", ".join(map(repr, BACKENDS))
        raise ValueError(f"backend must be one of {choices}. Got {backend!r}")
    if backend == "nvjpeg" and device.type != "cuda":
        raise ValueError(
            f"backend='nvjpeg' decodes on a CUDA device. Got device={str(device)!r}; use "
            "backend='cpu' (or 'dali', which also runs on the CPU)"
        )
    if backend == "dali":
        require_dali()
    if backend != "auto":
        return backend, "requested"
    if device.type == "cuda":
        if dali_available():
            return "dali", "CUDA device and DALI installed: DALI's mixed (nvJPEG/hardware) decoder"
        return "nvjpeg", "CUDA device, DALI not installed: batched nvJPEG decode"
    return "cpu", f"device is {device.type!r}: decode and augment in DataLoader workers"
