"""Context encoder: masks, fill values, overlap weights, loss formula, model and GAN loss."""

from __future__ import annotations

import pytest
import timm
import torch

import sslpipe
from sslpipe.ops import normalize
from sslpipe.tasks.context_encoder import adversarial_losses, context_encoder_loss


def _images(n=3, h=64, w=64, seed=0):
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mask", ["center", "random_block", "random_region"])
def test_masked_pixels_are_the_fill_value_and_the_rest_is_the_input(mask):
    task = sslpipe.create_task("context_encoder", size=64, mask=mask, crop="center",
                               crop_side=1.0, flip=0.0, seed=0)
    x = _images()
    batch = task.collator(x)
    original = normalize(x)
    m = batch.targets["mask"].expand(-1, 3, -1, -1)
    assert bool((batch.inputs[m] == 0).all())
    assert torch.equal(batch.inputs[~m], original[~m])
    assert torch.equal(batch.meta["mask"], batch.targets["mask"])
    coverage = batch.targets["mask"].float().mean((1, 2, 3))
    if mask == "center":
        assert torch.equal(batch.targets["image"], original[..., 16:48, 16:48])
    else:
        assert torch.equal(batch.targets["image"], original)
        assert bool(((coverage > 0.2) & (coverage < 0.45)).all()), coverage


def test_center_mask_geometry_and_overlap_weights():
    task = sslpipe.create_task("context_encoder", size=128, seed=0)
    assert task.options.overlap_px == 4  # the official commands' overlapPred=4 at 128 px
    batch = task.collator(_images(2, 128, 128))
    mask = batch.targets["mask"][0, 0]
    rows = mask.any(1).nonzero().flatten()
    cols = mask.any(0).nonzero().flatten()
    assert (rows.min(), rows.max()) == (32 + 4, 96 - 4 - 1)
    assert (cols.min(), cols.max()) == (32 + 4, 96 - 4 - 1)
    w = batch.targets["weights"][0, 0]
    assert w.shape == (64, 64)
    # train.lua: 10 on the whole predicted square, 1 on [1 + o, 64 - o] (1-based) = the hole
    expected = torch.full((64, 64), 10.0)
    expected[4:60, 4:60] = 1.0
    assert torch.equal(w, expected)
    assert int((w == 1).sum()) == int(mask.sum())  # weight 1 exactly on the hole
    assert sslpipe.create_task("context_encoder", size=64).options.overlap_px == 2


@pytest.mark.parametrize("rule", ["uniform", "context", "band", "hole"])
def test_random_mask_weights_follow_the_chosen_rule(rule):
    task = sslpipe.create_task("context_encoder", size=64, mask="random_region", overlap=2,
                               random_weights=rule, seed=1)
    t = task.collator(_images()).targets
    hole, w = t["mask"], t["weights"]
    assert w.shape == hole.shape == (3, 1, 64, 64)
    near = torch.nn.functional.max_pool2d(hole.float(), 5, 1, 2) > 0  # within 2 px of the hole
    expected_visible = {"uniform": torch.ones_like(w), "context": torch.full_like(w, 10.0),
                        "band": near.float() * 10.0, "hole": torch.zeros_like(w)}[rule]
    assert bool((w[hole] == 1).all())
    assert torch.equal(w[~hole], expected_visible[~hole])


def test_random_weights_default_to_the_official_command():
    opt = sslpipe.create_task("context_encoder").options
    # README: train_random.lua useOverlapPred=0; donkey_folder.lua: 128 px of 350, flip 1/2
    assert opt.random_weights == "uniform" and opt.overlap_weight == 10.0
    assert opt.crop_side == pytest.approx(128 / 350) and opt.flip == 0.5


def test_crop_is_a_window_of_the_shorter_side_and_flip_is_recorded():
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in
              [(350, 500), (400, 350), (350, 350), (700, 900)] * 4]
    batch = sslpipe.create_task("context_encoder", size=32, seed=3).collator(images)
    boxes = batch.meta["boxes"]
    for (x0, y0, x1, y1), im in zip(boxes.tolist(), images):
        h, w = im.shape[1:]
        assert x1 - x0 == y1 - y0 == round(min(h, w) * 128 / 350)
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert len({tuple(b) for b in boxes[:4].tolist()}) == 4  # random positions
    flip = batch.meta["flip"]
    assert flip.dtype == torch.bool and 0 < int(flip.sum()) < 16


def test_seed_reproduces_random_masks():
    a = sslpipe.create_task("context_encoder", size=64, mask="random_block", seed=5)
    b = sslpipe.create_task("context_encoder", size=64, mask="random_block", seed=5)
    assert torch.equal(a.collator(_images()).inputs, b.collator(_images()).inputs)


def test_loss_equals_weighted_l2_on_a_hand_made_case():
    pred = torch.zeros(1, 1, 2, 2, requires_grad=True)
    target = torch.tensor([[[[1.0, 2.0], [3.0, 0.5]]]])
    weights = torch.tensor([[[[10.0, 1.0], [0.0, 1.0]]]])
    # (10 * 1 + 1 * 4 + 0 * 9 + 1 * 0.25) / 3 pixels in the loss area
    loss = context_encoder_loss(pred, target, weights)
    assert loss.item() == pytest.approx(14.25 / 3)
    loss.backward()
    expected = -2 * weights * target / 3
    assert torch.allclose(pred.grad, expected)
    full = torch.ones(1, 1, 2, 2)
    assert context_encoder_loss(pred, target, full).item() == pytest.approx(
        float((target**2).mean()))


def test_adversarial_losses_touch_disjoint_parameters():
    torch.manual_seed(0)
    task = sslpipe.create_task("context_encoder", size=32, adversarial_weight=0.001)
    model = task.build(timm.create_model("resnet18", num_classes=0))
    batch = task.collator(_images(4, 32, 32))
    out = model(batch.inputs)
    g_adv, d_loss = adversarial_losses(out["discriminator"], out["pred"], batch.targets["image"])
    g_adv.backward(retain_graph=True)
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert model.decoder[0].weight.grad is not None
    model.zero_grad()
    d_loss.backward()
    assert model.decoder[0].weight.grad is None
    assert all(p.grad is not None for p in model.discriminator.parameters())
    total = task.loss(out, batch)
    rec = context_encoder_loss(out["pred"], batch.targets["image"], batch.targets["weights"])
    assert total.item() > rec.item()


@pytest.mark.parametrize("mask", ["center", "random_block"])
def test_model_forward_backward(mask):
    task = sslpipe.create_task("context_encoder", size=64, mask=mask, seed=0)
    batch = task.collator([im for im in _images(2, 70, 90)])
    model = task.build(timm.create_model("resnet18", num_classes=0))
    out = model(batch.inputs)
    assert out["pred"].shape == batch.targets["image"].shape
    loss = task.loss(out, batch)
    loss.backward()
    assert torch.isfinite(loss) and model.channel_fc.grad is not None
    with pytest.raises(ValueError, match="feed images of the task's `size`"):
        model(torch.zeros(1, 3, 128, 128))


def test_visualize_rows():
    task = sslpipe.create_task("context_encoder", size=32, seed=0)
    rows = task.visualize(task.collator(_images(3, 32, 32)), max_images=2)
    assert [r[1].shape for r in rows] == [(2, 3, 32, 32)] * 3
    assert all(r[1].min() >= 0 and r[1].max() <= 1 for r in rows)


@pytest.mark.parametrize("bad", [{"mask": "ring"}, {"size": 4}, {"overlap": 16, "size": 64},
                                 {"coverage": 1.0}, {"adversarial_weight": -1},
                                 {"random_weights": "band10"}, {"crop_side": 0.0},
                                 {"crop_side": 1.5}])
def test_wrong_options_raise(bad):
    with pytest.raises(ValueError):
        sslpipe.create_task("context_encoder", **bad)
