"""Per-process, per-worker reproducible random streams for collators.

A collator made with ``seed=`` draws every random parameter from a CPU generator that must be
reproducible in the main process and in each DataLoader worker, and must never continue a
parent process's stream after a fork: :class:`SeededStream`.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["SeededStream"]


class SeededStream:
    """A CPU generator for ``seed`` that is reproducible per process and DataLoader worker.

    Each worker draws its own stream (the worker id is mixed into the seed), and a forked
    process never continues its parent's stream: the generator is re-seeded whenever the
    process or worker changes, and not pickled.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._gen: torch.Generator | None = None
        self._key: tuple[int, int] | None = None

    def __call__(self) -> torch.Generator:
        info = torch.utils.data.get_worker_info()
        key = (os.getpid(), info.id if info is not None else -1)
        if self._gen is None or self._key != key:
            self._gen = torch.Generator().manual_seed(self.seed + 7919 * (key[1] + 1))
            self._key = key
        return self._gen

    def __getstate__(self) -> dict[str, Any]:
        return {"seed": self.seed, "_gen": None, "_key": None}
