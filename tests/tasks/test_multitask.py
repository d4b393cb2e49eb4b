"""Multi-task: batch layout, shared backbone, weighted sum and alternating schedules."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from sslpipe import create_task
from sslpipe.tasks.multitask import MultiTask, MultiTaskModel


def _images(n: int = 4) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 40, 48), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def _task(**options) -> MultiTask:
    return create_task("rotation+simclr", size=32, seed=0,
                       simclr={"hidden_dim": 16, "projection_dim": 8}, **options)


def test_layout_and_member_batches():
    task = _task()
    labels = [(im, i) for i, im in enumerate(_images())]
    batch = task.collator(labels)
    assert isinstance(batch.inputs, tuple) and len(batch.inputs) == 2
    assert batch.inputs[0].shape == (16, 3, 32, 32)  # rotation: all four rotations
    assert isinstance(batch.inputs[1], tuple) and len(batch.inputs[1]) == 2  # simclr views
    assert set(batch.targets) == {"rotation"} and batch.labels.tolist() == [0, 1, 2, 3]
    assert "rotation.boxes" in batch.meta and "simclr.view1_boxes" in batch.meta
    sub = task.member_batch(batch, "rotation")
    assert torch.equal(sub.targets, batch.targets["rotation"])
    assert torch.equal(sub.meta["rotation"], sub.targets)
    again = _task().collator(labels)
    assert torch.equal(again.inputs[1][0], batch.inputs[1][0])


def test_shared_backbone_and_weighted_sum():
    task = _task(weights={"rotation": 0.25})
    backbone = timm.create_model("resnet18", num_classes=0)
    model = task.build(backbone)
    assert all(m.backbone is backbone for m in model.members.values())
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 1.2 * sum(p.numel() for p in backbone.parameters())  # one backbone
    batch = task.collator(_images())
    model.eval()  # deterministic batch norm: the terms can be recomputed exactly
    out = model(batch.inputs)
    total = task.loss(out, batch)
    rot = task.member_loss("rotation", out, batch)
    sim = task.member_loss("simclr", out, batch)
    torch.testing.assert_close(total, 0.25 * rot + sim)
    rotation = task.members["rotation"]
    expected_rot = rotation.loss(out["rotation"], task.member_batch(batch, "rotation"))
    torch.testing.assert_close(rot, expected_rot)
    total.backward()
    assert backbone.conv1.weight.grad is not None
    metrics = task.metrics(out, batch)
    assert {"rotation.loss", "rotation.pretext_acc", "simclr.loss"} <= set(metrics)


def test_alternate_schedule_runs_one_member_per_step():
    task = create_task("rotation+vicreg", size=32, seed=0, schedule="alternate",
                       vicreg={"expander_dim": 8})
    model = task.build(timm.create_model("resnet18", num_classes=0))
    assert isinstance(model, MultiTaskModel)
    batch = task.collator(_images())
    seen = []
    for _ in range(3):
        out = model(batch.inputs)
        seen.append(list(out))
        task.loss(out, batch).backward()
    assert seen == [["rotation"], ["vicreg"], ["rotation"]] and int(model.step) == 3
    model.eval()
    assert set(model(batch.inputs)) == {"rotation", "vicreg"} and int(model.step) == 3


def test_shared_and_member_options_are_routed():
    task = create_task("rotation+simclr", size=40, flip=0.0, simclr={"temperature": 0.2})
    assert task.members["rotation"].options.size == 40
    assert task.members["simclr"].options.size == 40
    assert task.members["simclr"].options.temperature == 0.2
    assert task.members["simclr"].options.flip == 0.0
    assert task.members["rotation"].options.flip == 0.0


@pytest.mark.parametrize("name,options,match", [
    ("rotation+rotation", {}, "different"),
    ("rotation+", {}, "different"),
    ("rotation+simclr", {"colour": 1}, "fits no member"),
    ("rotation+simclr", {"weights": {"jigsaw": 1.0}}, "not among"),
    ("rotation+simclr", {"weights": {"simclr": -1.0}}, "weights"),
    ("rotation+simclr", {"schedule": "round_robin"}, "schedule"),
    ("rotation+simclr", {"simclr": 3}, "dict"),
    ("rotation+simclr", {"simclr": {"temperature": -1.0}}, "temperature"),
    ("rotation+simclrr", {}, "unknown task"),
])
def test_wrong_names_and_options_raise(name, options, match):
    with pytest.raises(ValueError, match=match):
        create_task(name, **options)


def test_members_schedules_and_teachers_follow_the_multitask_steps():
    from sslpipe.tasks.base import StepInfo
    from sslpipe.tasks.teacher import MomentumPair

    task = create_task("rotation+byol", size=32, byol={"hidden_dim": 16, "projection_dim": 8,
                                                       "predictor_dim": 16})
    model = task.build(timm.create_model("resnet18", num_classes=0))
    pair = next(m for m in model.modules() if isinstance(m, MomentumPair))
    with torch.no_grad():
        for p in pair.online.parameters():
            p.add_(1.0)  # the online network moved away from its copy
    before = [t.detach().clone() for t in pair.target.parameters()]
    online = [p.detach().clone() for p in pair.online.parameters()]
    info = StepInfo(step=5, total_steps=10, steps_per_epoch=10)
    task.begin_step(info)
    task.end_step(model, info)
    tau = task.members["byol"].options.base_momentum
    tau = 1 - (1 - tau) * (math.cos(math.pi * info.progress) + 1) / 2
    for b, o, t in zip(before, online, pair.target.parameters()):
        torch.testing.assert_close(t, tau * b + (1 - tau) * o)
    with pytest.raises(ValueError, match="MultiTaskModel"):
        task.end_step(torch.nn.Linear(2, 2), info)
