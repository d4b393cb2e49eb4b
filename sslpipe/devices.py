"""Where work runs when the caller does not say."""

from __future__ import annotations

import functools
import os

import torch


def default_device(device: torch.device | str | None = None) -> torch.device:
    """``device``, or CUDA when it is available, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_workers() -> int:
    """Loader workers when the user does not say: one per CPU this process may use, at most 8
    (one rule for ``train``, ``eval``, ``bench``, ``quickstart`` and ``create_loader``)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def constant(values: tuple[float, ...], device: torch.device | str,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A small read-only tensor of ``values`` on ``device``, made once per device and reused.

    ``torch.tensor(values, device="cuda")`` copies from pageable memory and waits for the
    stream; ops that run per batch on the GPU (normalisation constants, colour weights) take
    their constants from here instead, so a device stage queues work without waiting on it.
    Do not modify the result in place.
    """
    return _constant(tuple(float(v) for v in values), torch.device(device), dtype)


@functools.lru_cache(maxsize=256)
def _constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype
              ) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype).to(device)
