"""Where work runs when the caller does not say."""

from __future__ import annotations

import torch


def default_device(device: torch.device | str | None = None) -> torch.device:
    """``device``, or CUDA when it is available, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
