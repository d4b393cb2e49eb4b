"""Process launch and collectives for data-parallel training.

* ``--gpus N``: :func:`launch` spawns N processes on this node, one per GPU, NCCL backend.
* ``--procs N`` on CPU: the same with the gloo backend (how the tests exercise DDP).
* multi-node: start the same command under ``torchrun``; its ``RANK`` / ``WORLD_SIZE`` /
  ``LOCAL_RANK`` / ``MASTER_ADDR`` environment is used as is and nothing is spawned.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "launch", "under_torchrun", "all_reduce_sum", "all_reduce_min", "barrier",
           "cleanup"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global ``rank`` of ``world_size``, ``local_rank`` on the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    """True when ``torchrun`` (or another launcher) has set the rank environment."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch(fn: Callable[..., Any], nprocs: int, use_cuda: bool, args: tuple[Any, ...]) -> None:
    """Run ``fn(info, *args)`` in ``nprocs`` spawned processes (or in this one if 1).

    Under ``torchrun`` this process is already one rank: ``fn`` runs here once.
    """
    if under_torchrun():
        info = init_process(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                            int(os.environ.get("LOCAL_RANK", 0)), use_cuda)
        try:
            fn(info, *args)
        finally:
            cleanup()
        return
    if nprocs == 1:
        device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
        fn(DistInfo(device=device), *args)
        return
    if use_cuda and torch.cuda.device_count() < nprocs:
        raise ValueError(f"gpus: {nprocs} processes asked for but {torch.cuda.device_count()} "
                         "CUDA devices are visible")
    import torch.multiprocessing as mp

    port = _free_port()
    mp.spawn(_worker, args=(fn, nprocs, use_cuda, port, args), nprocs=nprocs, join=True)


def init_process(rank: int, world_size: int, local_rank: int, use_cuda: bool) -> DistInfo:
    """Join the process group (NCCL on CUDA, gloo on CPU) from the environment."""
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, device)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over every process (a no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_reduce_min(x: torch.Tensor) -> torch.Tensor:
    """The minimum of ``x`` over every process (a no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.MIN)
    return x


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _worker(rank: int, fn: Callable[..., Any], world_size: int, use_cuda: bool, port: int,
            args: tuple[Any, ...]) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)  # N processes share the cores; more threads only thrash
    info = init_process(rank, world_size, rank, use_cuda)
    try:
        fn(info, *args)
    finally:
        cleanup()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
