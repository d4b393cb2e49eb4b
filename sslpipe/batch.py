"""The Batch that every collator returns (see DESIGN.md, "Contracts")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

Tensors = torch.Tensor | tuple[torch.Tensor, ...]
Targets = torch.Tensor | dict[str, torch.Tensor] | None


@dataclass
class Batch:
    """One batch of pretext-task inputs and pseudo-labels.

    Attributes:
        inputs: float, normalized ``B x C x H x W`` tensor, or a tuple of such tensors (views,
            patch pairs); jigsaw puts ``B x T x C x h x w`` tile stacks here.
        targets: the pseudo-labels (rotation class, permutation index, ab bins, masked
            pixels, ...), a dict of tensors for composite targets, or None (SimCLR, VICReg).
        labels: the dataset's own class labels (int64 ``B``) when the source has them. Never
            used by a pretext loss; probes and the supervised baseline read them.
        meta: the random parameters that produced the batch (crop boxes, angles, permutation
            ids, masks), enough to replay or draw it.
    """

    inputs: Tensors
    targets: Targets = None
    labels: torch.Tensor | None = None
    meta: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Return a copy with every tensor moved to ``device``."""
        return self.apply(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Return a copy in pinned host memory (called by DataLoader(pin_memory=True))."""
        return self.apply(lambda t: t.pin_memory())

    def apply(self, fn: Any) -> Batch:
        """Return a copy with ``fn`` applied to every tensor (nested tuples and dicts too)."""
        return Batch(
            inputs=_map(fn, self.inputs),
            targets=_map(fn, self.targets),
            labels=_map(fn, self.labels),
            meta=_map(fn, self.meta),
        )

    @property
    def batch_size(self) -> int:
        """Number of source images (B), read from ``labels`` or the first input."""
        if self.labels is not None:
            return int(self.labels.shape[0])
        first = self.inputs[0] if isinstance(self.inputs, tuple) else self.inputs
        return int(first.shape[0])


def _map(fn: Any, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(_map(fn, v) for v in value)
    if isinstance(value, list):
        return [_map(fn, v) for v in value]
    if isinstance(value, dict):
        return {k: _map(fn, v) for k, v in value.items()}
    return value
