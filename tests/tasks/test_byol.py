"""BYOL: the loss against the paper's formula, the asymmetric views, and the target's EMA
through the real trainer on the embedded sample."""

from __future__ import annotations

import math

import pytest
import torch

import sslpipe
from sslpipe.data import sample_path
from sslpipe.tasks.byol import byol_loss
from sslpipe.train import TrainConfig, train
from sslpipe.train.checkpoint import load_checkpoint


def _paper_loss(q1, q2, k1, k2) -> float:
    """Grill et al. eq. 2, ||q/||q|| - z'/||z'|| ||^2, per image, plus its symmetric term."""
    def term(q, k):
        total = 0.0
        for qi, ki in zip(q.tolist(), k.tolist()):
            nq = math.sqrt(sum(x * x for x in qi))
            nk = math.sqrt(sum(x * x for x in ki))
            total += sum((a / nq - b / nk) ** 2 for a, b in zip(qi, ki))
        return total / len(q)
    return term(q1, k2) + term(q2, k1)


def test_loss_is_the_papers_formula():
    q1 = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]], dtype=torch.float64)
    q2 = torch.tensor([[0.0, 3.0, 1.0], [2.0, 2.0, -1.0]], dtype=torch.float64)
    k1 = torch.tensor([[1.0, 1.0, 0.0], [-0.5, 0.0, 4.0]], dtype=torch.float64)
    k2 = torch.tensor([[2.0, 0.0, 4.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    assert byol_loss(q1, q2, k1, k2).item() == pytest.approx(_paper_loss(q1, q2, k1, k2),
                                                             abs=1e-12)
    # the same directions: zero; opposite directions: the maximum, 2 x 4
    assert byol_loss(q1, q1, 3 * q1, 2 * q1).item() == pytest.approx(0.0, abs=1e-12)
    assert byol_loss(q1, q1, -q1, -q1).item() == pytest.approx(8.0)


def test_the_targets_get_no_gradient():
    q1, q2, k1, k2 = (torch.randn(4, 5, requires_grad=True) for _ in range(4))
    byol_loss(q1, q2, k1, k2).backward()
    assert q1.grad is not None and q2.grad is not None
    assert k1.grad is None and k2.grad is None
    with pytest.raises(ValueError, match="same shape"):
        byol_loss(q1, q2, k1, torch.randn(4, 6))


def test_the_views_are_the_papers_asymmetric_pair():
    task = sslpipe.create_task("byol", size=32, blur_kernel=3)
    images = torch.randint(0, 256, (64, 3, 40, 40), dtype=torch.uint8)
    meta = task.collator(images, generator=torch.Generator().manual_seed(0)).meta
    assert bool((meta["view1_blur_sigma"] > 0).all())  # blur 1.0 on view 1
    assert 0 < int((meta["view2_blur_sigma"] > 0).sum()) < 20  # 0.1 on view 2
    assert not bool(meta["view1_solarize"].any())  # solarisation 0 on view 1
    assert 0 < int(meta["view2_solarize"].sum()) < 32  # 0.2 on view 2
    again = task.collator(images, generator=torch.Generator().manual_seed(0)).meta
    assert all(torch.equal(meta[k], again[k]) for k in meta)  # a seed reproduces the batch


def test_the_target_is_the_ema_of_the_online_network(tmp_path):
    # three steps through the real trainer on the embedded sample, a checkpoint after each:
    # the target of step s is tau_s * target_{s-1} + (1 - tau_s) * online_s, tau on the cosine
    base = 0.9
    config = TrainConfig(task="byol", arch="resnet18", small_input=True, epochs=1, batch_size=8,
                         lr=0.05, data=sample_path("train"), backend="cpu", num_workers=0,
                         task_options={"size": 28, "hidden_dim": 32, "projection_dim": 16,
                                       "predictor_dim": 32, "base_momentum": base},
                         out=str(tmp_path / "run"), max_steps=3, checkpoint_every=1,
                         keep_checkpoints=5, progress=False, probe=False)
    train(config)
    states = [load_checkpoint(p) for p in
              sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))]
    assert [s["step"] for s in states] == [1, 2, 3]
    total = 4000 // 8  # the sample's steps per epoch x 1 epoch: the schedule's length
    for before, after in zip(states, states[1:]):
        s = before["step"]  # the step that made `after` began with s steps done
        tau = 1 - (1 - base) * (math.cos(math.pi * s / total) + 1) / 2
        old, new = before["model"], after["model"]
        checked = 0
        for key, value in new.items():
            if not key.startswith("encoders.target.") or not value.is_floating_point():
                continue
            twin = "encoders.online." + key[len("encoders.target."):]
            if key.endswith(("running_mean", "running_var")):
                assert not torch.equal(value, new[twin]), key  # its own statistics
                continue
            expected = tau * old[key] + (1 - tau) * new[twin]
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-6, msg=key)
            checked += 1
        assert checked > 60  # every weight of backbone and projector
        conv = "encoders.target.backbone.conv1.weight"
        moved = new[conv] - old[conv]
        assert moved.abs().max() > 0
