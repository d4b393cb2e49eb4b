"""Losses over the global batch under data parallelism: 2 gloo processes against one process
on the concatenated batch, loss and gradients in float64 (the authors gather: SimCLR's negatives
across replicas, VICReg's FullGatherLayer)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslpipe.ops.gather import gather_rows, local, world
from sslpipe.tasks.simclr import nt_xent
from sslpipe.tasks.vicreg import vicreg_loss

WORLD, ROWS, DIM = 2, 6, 5


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The global batch's two views (inputs to a shared linear map W, the 'model')."""
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(WORLD * ROWS, 7, generator=g, dtype=torch.float64)
    x2 = x1 + 0.3 * torch.randn(WORLD * ROWS, 7, generator=g, dtype=torch.float64)
    weight = torch.randn(7, DIM, generator=g, dtype=torch.float64)
    return x1, x2, weight


def _loss(name: str, z1: torch.Tensor, z2: torch.Tensor, gather: bool) -> torch.Tensor:
    if name == "nt_xent":
        return nt_xent(z1, z2, 0.5, gather=gather)
    return vicreg_loss(z1, z2, gather=gather)


def _rank(rank: int, name: str, gather: bool, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=WORLD)
    try:
        x1, x2, weight = _data()
        weight.requires_grad_(True)
        mine = slice(rank * ROWS, (rank + 1) * ROWS)
        loss = _loss(name, x1[mine] @ weight, x2[mine] @ weight, gather)
        loss.backward()
        with local():  # one rank's private work (the trainer's memory estimate): no collective
            assert world() == (0, 1)
            alone = _loss(name, x1[mine] @ weight, x2[mine] @ weight, gather=True)
        assert torch.equal(alone, _loss(name, x1[mine] @ weight, x2[mine] @ weight, False))
        grad = weight.grad.clone()
        dist.all_reduce(grad)  # what DDP does with a parameter's gradient: the ranks' mean
        torch.save({"loss": loss.detach(), "grad": grad / WORLD}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _two_ranks(tmp_path, name: str, gather: bool) -> list[dict[str, torch.Tensor]]:
    out = str(tmp_path / "rank")
    mp.spawn(_rank, args=(name, gather, str(tmp_path / "store"), out), nprocs=WORLD)
    return [torch.load(f"{out}.{r}") for r in range(WORLD)]


def _single(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x1, x2, weight = _data()
    weight.requires_grad_(True)
    loss = _loss(name, x1 @ weight, x2 @ weight, gather=True)
    loss.backward()
    return loss.detach(), weight.grad


@pytest.mark.parametrize("name", ["nt_xent", "vicreg"])
def test_two_ranks_compute_the_single_process_loss_on_the_global_batch(tmp_path, name):
    ranks = _two_ranks(tmp_path, name, gather=True)
    loss, grad = _single(name)
    # NT-Xent: each rank's anchors against every key, so the ranks' mean is the global loss;
    # VICReg: every rank computes the global loss itself
    mean = sum(r["loss"] for r in ranks) / WORLD
    torch.testing.assert_close(mean, loss, rtol=1e-12, atol=1e-12)
    if name == "vicreg":
        for r in ranks:
            torch.testing.assert_close(r["loss"], loss, rtol=1e-12, atol=1e-12)
    for r in ranks:  # DDP's averaged gradient is the single-process one, on every rank
        torch.testing.assert_close(r["grad"], grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["nt_xent", "vicreg"])
def test_gather_false_keeps_each_ranks_own_batch(tmp_path, name):
    ranks = _two_ranks(tmp_path, name, gather=False)
    x1, x2, weight = _data()
    for rank, r in enumerate(ranks):
        mine = slice(rank * ROWS, (rank + 1) * ROWS)
        local = _loss(name, x1[mine] @ weight, x2[mine] @ weight, gather=False)
        torch.testing.assert_close(r["loss"], local, rtol=1e-12, atol=1e-12)
    global_loss, _ = _single(name)
    assert not torch.allclose(sum(r["loss"] for r in ranks) / WORLD, global_loss)


def test_without_a_process_group_nothing_is_gathered():
    x = torch.randn(3, 4)
    assert world() == (0, 1) and gather_rows(x) is x
    assert not os.environ.get("WORLD_SIZE") or dist.is_initialized() is False
