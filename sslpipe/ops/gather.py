"""All-gather with gradients, for losses over the global batch under data parallelism.

Contrastive and variance/covariance losses compare every embedding of a batch with the others:
under DDP each rank holds only its ``B / W`` rows, and a loss computed on those alone sees a
batch ``W`` times smaller (fewer negatives for NT-Xent, noisier variance and covariance for
VICReg). The authors gather: SimCLR's code all-gathers the negatives across replicas, VICReg's
``FullGatherLayer`` all-gathers the embeddings and all-reduces their gradients.

:func:`gather_rows` is that layer. Its backward sums every rank's gradient for each rank's rows
(one all-reduce, which every backend has; gloo has no reduce-scatter). With DDP averaging the
parameter gradients over the ``W`` ranks, the gradient is exactly that of the single-process
loss on the whole batch, when each rank's loss is either the global loss itself (VICReg) or
such that the mean of the ranks' losses is the global loss (NT-Xent with each rank's own rows
as anchors against every rank's rows as keys).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["gather_rows", "local", "world"]

_LOCAL = threading.local()


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one or inside
    :func:`local`."""
    if getattr(_LOCAL, "depth", 0) == 0 and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def local() -> Iterator[None]:
    """Within it, losses use this process's rows only, whatever the process group: for work
    one rank does on its own (the trainer's memory estimate on a CPU copy of the model)."""
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    try:
        yield
    finally:
        _LOCAL.depth -= 1


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every rank's use of every rank's rows
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` stacked in rank order, differentiable: ``W*B x ...`` from ``B x ...``.

    Without an initialized process group of size > 1, ``x`` itself. Every rank must call it
    with the same shape (sslpipe's loaders give every rank the same batch size); it is not
    checked, as a check would read a count back from the device at every step.
    """
    if world()[1] == 1:
        return x
    out: torch.Tensor = _GatherRows.apply(x)
    return out
