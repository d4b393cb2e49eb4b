"""The Batch that every collator returns (see docs/design.md, "Contracts")."""

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
        size: the number of source images B. A task's inputs may hold several rows per image
            (RotNet's four rotations, DINO's two global crops), so the collator states it
            (:class:`~sslpipe.tasks.base.Collator` sets it from its input); None: read from
            ``labels`` or the first input's rows.
    """

    inputs: Tensors
    targets: Targets = None
    labels: torch.Tensor | None = None
    meta: dict[str, torch.Tensor] = field(default_factory=dict)
    size: int | None = None

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
            size=self.size,
        )

    @property
    def batch_size(self) -> int:
        """Number of source images (B): ``size`` when the collator stated it, else read from
        ``labels`` or the first input."""
        if self.size is not None:
            return self.size
        if self.labels is not None:
            return int(self.labels.shape[0])
        first = self.inputs[0] if isinstance(self.inputs, tuple) else self.inputs
        return int(first.shape[0])


@dataclass
class HostBatch:
    """What a collator's host stage hands its device stage (docs/design.md, "Two stages per
    collator").

    Attributes:
        pixels: named uint8 image groups, each ``N x 3 x h x w`` at its output size (crops,
            views, the square a task cuts tiles from), in any memory format.
        labels: the dataset's class labels (int64 ``B``) or None.
        meta: every random parameter the host stage drew (CPU tensors), by the names the
            Batch's ``meta`` will carry, plus any the device stage needs.
        size: the number of source images B (a pixels entry may hold several rows per image);
            :class:`~sslpipe.tasks.base.Collator` sets it from its input.

    The loader moves only ``pixels`` and ``labels`` to the device (:meth:`to`); ``meta`` stays
    on the host, so the device stage reads parameters there without waiting on the device, and
    moves what its kernels need itself.
    """

    pixels: dict[str, torch.Tensor]
    labels: torch.Tensor | None = None
    meta: dict[str, torch.Tensor] = field(default_factory=dict)
    size: int | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> HostBatch:
        """A copy with ``pixels`` and ``labels`` on ``device`` (``meta`` stays where it is)."""
        return HostBatch(_map(lambda t: t.to(device, non_blocking=non_blocking), self.pixels),
                         _map(lambda t: t.to(device, non_blocking=non_blocking), self.labels),
                         self.meta, self.size)

    def pin_memory(self) -> HostBatch:
        """A copy in pinned host memory (called by DataLoader(pin_memory=True))."""
        return HostBatch(_map(torch.Tensor.pin_memory, self.pixels),
                         _map(torch.Tensor.pin_memory, self.labels),
                         _map(torch.Tensor.pin_memory, self.meta), self.size)

    @property
    def device(self) -> torch.device:
        """Where the pixels are."""
        return next(iter(self.pixels.values())).device

    @property
    def batch_size(self) -> int:
        """Number of source images (B): ``size`` when stated, else read from ``labels`` or the
        first pixels entry."""
        if self.size is not None:
            return self.size
        if self.labels is not None:
            return int(self.labels.shape[0])
        return int(next(iter(self.pixels.values())).shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of ``pixels`` and ``labels`` (int): what :meth:`to` copies to the device.

        ``meta`` is not counted: it stays on the host (a few bytes per image of drawn
        parameters, which the device stage moves itself where its kernels need them).
        ``benchmarks/host_device.py`` (table 1) sets this against the finished float Batch's
        inputs and targets."""
        return nbytes(self.pixels) + nbytes(self.labels)


def nbytes(value: Any) -> int:
    """Bytes of the tensors in ``value`` (a tensor, or tuples, lists and dicts of them; other
    values count 0): what a Batch's inputs or targets occupy."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    return 0


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
