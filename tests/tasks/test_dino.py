"""DINO: the loss against the paper's formula, the teacher's EMA, the centre's update (one
process and two), the temperature schedule, the frozen last layer, the head, ViTs."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from sslpipe import create_task
from sslpipe.tasks.base import StepInfo
from sslpipe.tasks.dino import DINOHead, DINOModel, dino_loss, teacher_temperature
from sslpipe.tasks.multicrop import accept_any_size

SMALL = {"out_dim": 16, "hidden_dim": 16, "bottleneck_dim": 8, "size": 32}


def _tiny_backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=0)


def _images(n: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, 48, 56), generator=g, dtype=torch.uint8) for _ in range(n)]


def _paper_loss(student, teacher, center, tt, ts, b):
    """The paper's Algorithm 1 and eq. (3), written out row by row with explicit softmaxes."""
    def softmax(x):
        e = [math.exp(v) for v in x]
        return [v / sum(e) for v in e]

    crops = len(student) // b
    total, terms = 0.0, 0
    for g in range(2):
        for v in range(crops):
            if v == g:
                continue
            rows = 0.0
            for i in range(b):
                t = teacher[g * b + i]
                q = softmax([(t[k] - center[k]) / tt for k in range(len(t))])
                p = softmax([x / ts for x in student[v * b + i]])
                rows += -sum(q[k] * math.log(p[k]) for k in range(len(q)))
            total += rows / b
            terms += 1
    return total / terms


def test_loss_equals_the_papers_formula():
    g = torch.Generator().manual_seed(0)
    b, crops, k = 2, 5, 4
    student = torch.randn(crops * b, k, generator=g, dtype=torch.float64)
    teacher = torch.randn(2 * b, k, generator=g, dtype=torch.float64)
    center = torch.randn(k, generator=g, dtype=torch.float64) * 0.1
    ours = dino_loss(student, teacher, center, 0.04, 0.1)
    ref = _paper_loss(student.tolist(), teacher.tolist(), center.tolist(), 0.04, 0.1, b)
    assert abs(float(ours) - ref) < 1e-9


def test_loss_hand_made_cases():
    # a uniform student: -sum q log(1/K) = log K whatever the teacher
    teacher = torch.tensor([[3.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    uniform = dino_loss(torch.zeros(6, 3), teacher, torch.zeros(3), 0.04)
    assert abs(float(uniform) - math.log(3)) < 1e-6
    # a one-hot teacher (tau_t -> 0) and the student's 2-way logits (a, 0): the loss is the
    # student's -log softmax at the teacher's class, log(1 + e^(-a / tau_s)) on every pair
    a, ts = 0.3, 0.1
    student = torch.tensor([[a, 0.0]] * 3)  # B = 1, two global crops and one local
    teacher = torch.tensor([[50.0, 0.0], [50.0, 0.0]])
    expected = math.log(1 + math.exp(-a / ts))
    assert abs(float(dino_loss(student, teacher, torch.zeros(2), 0.04, ts)) - expected) < 1e-6
    # the centre is subtracted before sharpening: centring the one-hot away flips it
    flipped = float(dino_loss(student, teacher, torch.tensor([100.0, 0.0]), 0.04, ts))
    assert abs(flipped - math.log(1 + math.exp(a / ts))) < 1e-6
    with pytest.raises(ValueError, match="rows"):
        dino_loss(torch.zeros(5, 3), torch.zeros(4, 3), torch.zeros(3), 0.04)


def test_no_gradient_reaches_the_teacher():
    student = torch.randn(8, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    dino_loss(student, teacher, torch.zeros(5), 0.05).backward()
    assert teacher.grad is None and student.grad is not None and student.grad.abs().sum() > 0


def test_teacher_temperature_is_the_official_linspace():
    ref = np.concatenate([np.linspace(0.04, 0.07, 30), np.ones(70) * 0.07])
    ours = [teacher_temperature(e, 0.04, 0.07, 30) for e in range(100)]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert teacher_temperature(3, 0.04, 0.07, 0) == 0.07
    task = create_task("dino", **SMALL)
    assert task.teacher_temp == 0.04  # before any step: epoch 0
    task.begin_step(StepInfo(step=10 * 7 + 3, total_steps=700, steps_per_epoch=7))
    assert task.teacher_temp == pytest.approx(ref[10])


def _step(task, model, batch, opt, info):
    task.begin_step(info)
    loss = task.loss(model(batch.inputs), batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    task.end_step(model, info)


def test_teacher_is_the_hand_computed_ema_of_the_student():
    task = create_task("dino", seed=0, momentum=0.9, freeze_last_layer=0, **SMALL)
    model = task.build(_tiny_backbone())
    batch = task.collator(_images())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    online, target = model.pair.online, model.pair.target
    expected = {n: p.detach().clone() for n, p in target.named_parameters()}
    assert all(torch.equal(expected[n], p) for n, p in online.named_parameters())
    total = 6
    for step in range(3):
        _step(task, model, batch, opt, StepInfo(step, total, 2))
        tau = 1 - (1 - 0.9) * (math.cos(math.pi * step / total) + 1) / 2
        for n, p in online.named_parameters():
            expected[n] = tau * expected[n] + (1 - tau) * p.detach()
    changed = 0
    for n, p in target.named_parameters():
        torch.testing.assert_close(p, expected[n], rtol=1e-5, atol=1e-6)
        changed += int(not torch.equal(p, dict(online.named_parameters())[n]))
    assert changed > 0 and not any(p.requires_grad for p in target.parameters())


def test_centre_update_and_teacher_on_global_crops_only():
    task = create_task("dino", seed=0, local_crops=3, center_momentum=0.8, **SMALL)
    model = task.build(_tiny_backbone())
    batch = task.collator(_images(4))
    model.center.fill_(0.25)
    out = model(batch.inputs)
    assert out.student.shape == (5 * 4, 16) and out.teacher.shape == (2 * 4, 16)
    with torch.no_grad():
        assert torch.equal(out.teacher, model.pair.target(batch.inputs[:1]))
    torch.testing.assert_close(out.center, torch.full((1, 16), 0.25))
    expected = 0.8 * 0.25 + 0.2 * out.teacher.mean(0, keepdim=True)
    torch.testing.assert_close(model.center, expected)
    model.eval()  # validation passes leave the centre alone
    model(batch.inputs)
    torch.testing.assert_close(model.center, expected)
    assert "center" in model.state_dict()


def _rank(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model = DINOModel(torch.nn.Identity(), DINOHead(4, 3, 4, 2), 0.9)
        model.center.fill_(1.0)
        g = torch.Generator().manual_seed(0)
        teacher = torch.randn(2, 6, 3, generator=g, dtype=torch.float32)
        model.update_center(teacher[rank])
        torch.save(model.center, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_centre_is_the_mean_over_the_global_batch_under_data_parallelism(tmp_path):
    out = str(tmp_path / "center")
    os.environ.pop("MASTER_ADDR", None)
    mp.spawn(_rank, args=(str(tmp_path / "store"), out), nprocs=2)
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 6, 3, generator=g, dtype=torch.float32)
    expected = 0.9 * torch.ones(1, 3) + 0.1 * teacher.reshape(12, 3).mean(0, keepdim=True)
    for rank in range(2):
        torch.testing.assert_close(torch.load(f"{out}.{rank}"), expected)


def test_last_layer_is_frozen_during_the_first_epoch():
    task = create_task("dino", seed=0, freeze_last_layer=1, **SMALL)
    model = task.build(_tiny_backbone())
    batch = task.collator(_images())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    head = model.pair.online.head
    v0, mlp0 = head.weight_v.detach().clone(), head.mlp[0].weight.detach().clone()
    _step(task, model, batch, opt, StepInfo(0, 4, 2))  # epoch 0: frozen
    assert torch.equal(head.weight_v, v0) and not torch.equal(head.mlp[0].weight, mlp0)
    _step(task, model, batch, opt, StepInfo(1, 4, 2))  # last step of epoch 0: still frozen
    assert torch.equal(head.weight_v, v0) and float(head.last_layer_grad) == 1.0
    _step(task, model, batch, opt, StepInfo(2, 4, 2))  # epoch 1: trained
    assert not torch.equal(head.weight_v, v0)


def test_head_is_the_official_dino_head():
    torch.manual_seed(0)
    head = DINOHead(32, out_dim=50, hidden_dim=24, bottleneck_dim=8)
    assert [type(m).__name__ for m in head.mlp] == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    assert head.weight_g is None and head.weight_v.shape == (50, 8)
    out = head(torch.randn(5, 32))
    # unit bottleneck times unit-norm rows: every logit a cosine
    assert out.shape == (5, 50) and float(out.detach().abs().max()) <= 1 + 1e-5
    # the official last layer: weight_norm(Linear(bottleneck, out_dim, bias=False)), g = 1
    layer = torch.nn.utils.parametrizations.weight_norm(_linear(head.weight_v))
    layer.parametrizations.weight.original0.data.fill_(1.0)
    inp = torch.randn(3, 32)
    torch.testing.assert_close(head(inp), layer(F.normalize(head.mlp(inp), dim=-1)))
    free = DINOHead(32, out_dim=50, norm_last_layer=False)
    assert free.weight_g is not None and torch.equal(free.weight_g, torch.ones(50, 1))
    assert len(DINOHead(32, 50, num_layers=1, batch_norm=True).mlp) == 1


def _linear(weight: torch.Tensor) -> torch.nn.Linear:
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.weight.data.copy_(weight.detach())
    return layer


def test_vit_takes_local_crops_as_timm_builds_it():
    kw = {"img_size": 32, "patch_size": 8, "depth": 2, "num_classes": 0}
    torch.manual_seed(0)
    fixed = timm.create_model("vit_tiny_patch16_224", **kw)
    dynamic = timm.create_model("vit_tiny_patch16_224", dynamic_img_size=True, **kw)
    dynamic.load_state_dict(fixed.state_dict())
    accept_any_size(fixed)
    for side in (32, 16):
        x = torch.randn(2, 3, side, side)
        torch.testing.assert_close(fixed(x), dynamic(x))
    task = create_task("dino", seed=0, local_size=16, **SMALL)
    model = task.build(timm.create_model("vit_tiny_patch16_224", **kw))
    batch = task.collator(_images(2))
    loss = task.loss(model(batch.inputs), batch)
    loss.backward()
    assert torch.isfinite(loss) and task.eval_network == "teacher"
    with pytest.raises(ValueError, match="multiples of the ViT's patch size 8"):
        create_task("dino", local_size=12, **SMALL).build(
            timm.create_model("vit_tiny_patch16_224", **kw))


def test_metrics_visualize_and_options():
    task = create_task("dino", seed=0, **SMALL)
    model = task.build(_tiny_backbone())
    batch = task.collator(_images(3))
    entropy = task.metrics(model(batch.inputs), batch)["teacher_entropy"]
    assert 0 <= float(entropy) <= math.log(16) + 1e-6
    rows = task.visualize(batch, 2)
    assert [r[0] for r in rows] == ["global 1", "global 2"] + [f"local {k}" for k in range(1, 7)]
    assert all(p.shape[0] == 2 for _, p in rows) and rows[-1][1].shape[-1] == 14
    no_local = create_task("dino", seed=0, local_crops=0, **SMALL)
    assert len(no_local.collator(_images(2)).inputs) == 1
    for bad in ({"local_crops": -1}, {"global_scale": (0.5, 0.2)}, {"blur": (1.0,)},
                {"momentum": 1.5}, {"teacher_temp": 0.0}, {"jitter": (0.4, 0.4, 0.2, 0.9)}):
        with pytest.raises(ValueError):
            create_task("dino", **bad)


def test_source_maps_each_global_crop_to_its_image_without_labels():
    task = create_task("dino", size=32, local_size=16, local_crops=2, seed=0)
    x = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)  # unlabelled: no labels
    batch = task.collator(x)
    assert batch.inputs[0].shape[0] == 6
    assert torch.equal(batch.meta["source"], torch.arange(3).repeat(2))
