"""MoCo v3: the loss against the official formula written out, the global batch under 2 gloo
processes (loss and gradients), and the official heads for ResNets and ViTs."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import sslpipe
from sslpipe.tasks.mocov3 import mocov3_loss

WORLD, ROWS, DIM = 2, 4, 5


def _infonce(q, k, t: float) -> float:
    """2 t * mean_i -log(exp(u_i.v_i / t) / sum_j exp(u_i.v_j / t)), u, v unit rows."""
    def unit(rows):
        return [[x / math.sqrt(sum(y * y for y in r)) for x in r] for r in rows]
    u, v = unit(q.tolist()), unit(k.tolist())
    total = 0.0
    for i, ui in enumerate(u):
        logits = [sum(a * b for a, b in zip(ui, vj)) / t for vj in v]
        total += -math.log(math.exp(logits[i]) / sum(math.exp(x) for x in logits))
    return 2 * t * total / len(u)


def test_loss_is_the_official_formula():
    q1 = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    q2 = torch.tensor([[0.0, 3.0, 1.0], [2.0, 2.0, -1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    k1 = torch.tensor([[1.0, 1.0, 0.0], [-0.5, 0.0, 4.0], [0.0, 2.0, 1.0]], dtype=torch.float64)
    k2 = torch.tensor([[2.0, 0.0, 4.0], [0.0, 1.0, 1.0], [3.0, 1.0, 0.0]], dtype=torch.float64)
    for t in (0.2, 1.0):
        expected = _infonce(q1, k2, t) + _infonce(q2, k1, t)
        assert mocov3_loss(q1, q2, k1, k2, t).item() == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="temperature"):
        mocov3_loss(q1, q2, k1, k2, 0.0)


def test_the_keys_get_no_gradient():
    q1, q2, k1, k2 = (torch.randn(4, 5, requires_grad=True) for _ in range(4))
    mocov3_loss(q1, q2, k1, k2).backward()
    assert q1.grad is not None and k1.grad is None and k2.grad is None


def _data():
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(WORLD * ROWS, 7, generator=g, dtype=torch.float64)
    x2 = x1 + 0.3 * torch.randn(WORLD * ROWS, 7, generator=g, dtype=torch.float64)
    weight = torch.randn(7, DIM, generator=g, dtype=torch.float64)  # the online 'model'
    target = torch.randn(7, DIM, generator=g, dtype=torch.float64)  # the momentum one
    return x1, x2, weight, target


def _rank(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=WORLD)
    try:
        x1, x2, weight, target = _data()
        weight.requires_grad_(True)
        mine = slice(rank * ROWS, (rank + 1) * ROWS)
        loss = mocov3_loss(x1[mine] @ weight, x2[mine] @ weight, x1[mine] @ target,
                           x2[mine] @ target, 0.2)
        loss.backward()
        grad = weight.grad.clone()
        dist.all_reduce(grad)  # what DDP does with a parameter's gradient: the ranks' mean
        torch.save({"loss": loss.detach(), "grad": grad / WORLD}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_compute_the_single_process_loss_on_the_global_batch(tmp_path):
    out = str(tmp_path / "rank")
    mp.spawn(_rank, args=(str(tmp_path / "store"), out), nprocs=WORLD)
    ranks = [torch.load(f"{out}.{r}") for r in range(WORLD)]
    x1, x2, weight, target = _data()
    weight.requires_grad_(True)
    loss = mocov3_loss(x1 @ weight, x2 @ weight, x1 @ target, x2 @ target, 0.2)
    loss.backward()
    mean = sum(r["loss"] for r in ranks) / WORLD
    torch.testing.assert_close(mean, loss.detach(), rtol=1e-12, atol=1e-12)
    for r in ranks:
        torch.testing.assert_close(r["grad"], weight.grad, rtol=1e-10, atol=1e-12)
    # and each rank's own keys alone would not be the global loss
    alone = mocov3_loss(x1[:ROWS] @ weight, x2[:ROWS] @ weight, x1[:ROWS] @ target,
                        x2[:ROWS] @ target, 0.2)
    assert abs(alone.item() - ranks[0]["loss"].item()) > 1e-6


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def test_the_official_heads_for_resnets_and_vits():
    task = sslpipe.create_task("mocov3", size=32, hidden_dim=32, projection_dim=16)
    resnet = task.build(timm.create_model("resnet18", num_classes=0))
    assert len(_linears(resnet.encoders.online.projector)) == 2  # MoCo_ResNet
    assert not isinstance(resnet.predictor[-1], nn.BatchNorm1d)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2,
                            num_classes=0)
    model = task.build(vit)
    assert len(_linears(model.encoders.online.projector)) == 3  # MoCo_ViT
    assert isinstance(model.predictor[-1], nn.BatchNorm1d)
    assert not model.predictor[-1].affine and not model.encoders.online.projector[-1].affine
    assert not any(p.requires_grad for p in vit.patch_embed.parameters())  # stop-grad-conv1
    batch = task.collator(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8),
                          generator=torch.Generator().manual_seed(0))
    loss = task.loss(model(batch.inputs), batch)
    loss.backward()
    assert vit.blocks[0].attn.qkv.weight.grad is not None
    assert all(p.grad is None for p in model.encoders.target.parameters())


def test_multi_crop_is_refused_up_front():
    with pytest.raises(ValueError, match="multi_crop"):
        sslpipe.create_task("mocov3", multi_crop=2)


@pytest.mark.parametrize(("name", "options"), [
    ("mocov3", {"size": 48}),
    ("byol", {"size": 48}),
    ("byol", {"size": 32, "multi_crop": 2, "local_size": 16}),
])
def test_momentum_two_view_tasks_take_a_vit_at_any_size(name: str, options: dict) -> None:
    """A ViT built for 32 px (or 224) takes the views at the task's size and the local crops
    at theirs, from the Python API (a plain timm model) as from create_backbone."""
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1,
                            num_classes=0)
    task = sslpipe.create_task(name, seed=0, hidden_dim=32, projection_dim=16, **options)
    batch = task.collator(torch.randint(0, 256, (4, 3, 56, 56), dtype=torch.uint8))
    loss = task.loss(task.build(vit)(batch.inputs), batch)
    loss.backward()
    assert torch.isfinite(loss)
