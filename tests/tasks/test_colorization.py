"""Colorization: L inputs, soft-encoded ab targets, rebalancing, loss formula, model."""

from __future__ import annotations

import pytest
import timm
import torch

import sslpipe
from sslpipe.ops import ab_bins, lab_to_rgb, rgb_to_lab
from sslpipe.tasks.colorization import (
    colorization_loss,
    colorization_regression_loss,
    default_ab_prior,
    estimate_ab_prior,
    load_ab_prior,
    rebalance_weights,
)


def _images(n=3, h=72, w=90, seed=0):
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def test_inputs_are_the_l_channel_and_targets_its_colour():
    task = sslpipe.create_task("colorization", size=32, crop="center", flip=0.0, seed=0)
    x = _images(2, 32, 32)
    batch = task.collator(x)
    lab = rgb_to_lab(x.float() / 255)
    grey = batch.inputs * torch.tensor(task.options.std).view(1, 3, 1, 1) + torch.tensor(
        task.options.mean).view(1, 3, 1, 1)
    assert torch.allclose(grey, (lab[:, :1] / 100).expand(-1, 3, -1, -1), atol=1e-5)
    t = batch.targets
    assert t["ab"].shape == (2, 2, 8, 8)
    # the authors' net point-samples ab every 4 pixels (a 1x1 convolution of stride 4)
    assert torch.allclose(t["ab"], lab[:, 1:, ::4, ::4], atol=1e-4)
    assert t["soft"].shape == (2, 10, 8, 8)  # the authors' 10 nearest bins
    # the soft encoding's first entry is the nearest bin, and carries the largest weight
    d = (t["ab"].permute(0, 2, 3, 1)[..., None, :] - ab_bins()).norm(dim=-1)
    assert torch.equal(t["bins"][:, 0], d.argmin(-1))
    assert torch.equal(t["soft"].argmax(1), torch.zeros_like(t["bins"][:, 0]))
    assert torch.allclose(t["weights"], task.collator.bin_weights[t["bins"][:, 0]])


def test_area_sampling_averages_each_stride_square():
    task = sslpipe.create_task("colorization", size=32, crop="center", flip=0.0,
                               target_sampling="area", neighbours=5, seed=0)
    x = _images(2, 32, 32)
    t = task.collator(x).targets
    pooled = torch.nn.functional.avg_pool2d(rgb_to_lab(x.float() / 255)[:, 1:], 4)
    assert torch.allclose(t["ab"], pooled, atol=1e-4)
    assert t["soft"].shape == (2, 5, 8, 8)


def test_point_sampling_with_a_size_not_divisible_by_the_stride():
    task = sslpipe.create_task("colorization", size=30, crop="center", flip=0.0, seed=0)
    x = _images(1, 30, 30)
    ab = task.collator(x).targets["ab"]
    assert ab.shape == (1, 2, 7, 7)
    assert torch.allclose(ab, rgb_to_lab(x.float() / 255)[:, 1:, :28:4, :28:4], atol=1e-4)


def test_seed_reproduces_a_batch_and_regression_mode_has_only_ab():
    a = sslpipe.create_task("colorization", size=32, seed=3).collator(_images())
    b = sslpipe.create_task("colorization", size=32, seed=3).collator(_images())
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.meta["flip"], b.meta["flip"])
    r = sslpipe.create_task("colorization", size=32, mode="regression", seed=0).collator(_images())
    assert set(r.targets) == {"ab", "color"}


def test_rebalancing_weights_formula_and_normalisation():
    prior = default_ab_prior()
    w = rebalance_weights(prior, 0.5, sigma=5.0)
    centres = ab_bins().double()
    kernel = torch.exp(-torch.cdist(centres, centres) ** 2 / 50)
    smooth = kernel @ prior.double()
    smooth /= smooth.sum()
    raw = 1 / (0.5 * smooth + 0.5 / 313)
    assert torch.allclose(w.double(), raw / (smooth * raw).sum(), rtol=1e-5)
    assert abs(float((smooth * w.double()).sum()) - 1) < 1e-5
    assert w.argmin() == prior.argmax()  # the commonest colour is down-weighted
    assert torch.allclose(rebalance_weights(prior, 1.0), torch.ones(313), atol=1e-5)


def test_estimate_prior_counts_nearest_bins(tmp_path):
    red = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    red[:, 0] = 255
    grey = torch.full((1, 3, 4, 4), 128, dtype=torch.uint8)
    prior = estimate_ab_prior([red, [grey[0], grey[0]]])
    ab_red = rgb_to_lab(red.float() / 255)[0, 1:, 0, 0]
    red_bin = int((ab_bins() - ab_red).norm(dim=1).argmin())
    grey_bin = int(ab_bins().norm(dim=1).argmin())
    assert prior[red_bin] == pytest.approx(16 / 48) and prior[grey_bin] == pytest.approx(32 / 48)
    torch.save(prior, tmp_path / "prior.pt")
    task = sslpipe.create_task("colorization", size=16, prior=str(tmp_path / "prior.pt"))
    assert torch.allclose(task.collator.bin_weights, rebalance_weights(prior, 0.5))
    with pytest.raises(ValueError, match="prior must hold 313"):
        load_ab_prior([1.0, 2.0])


def test_loss_equals_the_papers_formula_on_a_hand_made_case():
    logits = torch.zeros(1, 313, 1, 2)
    logits[0, 7, 0, 0] = 2.0
    bins = torch.tensor([[[[7, 3]], [[1, 5]]]]).view(1, 2, 1, 2).long()
    soft = torch.tensor([0.75, 0.25, 0.5, 0.5]).view(2, 2).T.reshape(1, 2, 1, 2)
    weights = torch.tensor([[[2.0, 0.5]]])
    logz0 = torch.log(torch.exp(torch.tensor(2.0)) + 312)
    logz1 = torch.log(torch.tensor(313.0))
    pixel0 = -2.0 * (soft[0, 0, 0, 0] * (2.0 - logz0) + soft[0, 1, 0, 0] * (0 - logz0))
    pixel1 = -0.5 * (soft[0, 0, 0, 1] * -logz1 + soft[0, 1, 0, 1] * -logz1)
    loss = colorization_loss(logits.requires_grad_(), bins, soft, weights)
    assert loss.item() == pytest.approx(float(pixel0 + pixel1) / 2, rel=1e-6)
    loss.backward()
    # d/dlogit = v * (softmax - Z) / (B h w): at the target bin 7 of pixel 0
    p7 = torch.exp(torch.tensor(2.0) - logz0)
    assert logits.grad[0, 7, 0, 0].item() == pytest.approx(float(2.0 * (p7 - 0.75) / 2), rel=1e-5)


def test_regression_loss():
    pred = torch.zeros(1, 2, 1, 1)
    ab = torch.tensor([30.0, -300.0]).view(1, 2, 1, 1)
    # smooth L1 (beta 1) on ab / 100: 0.5 * 0.3^2 and 3 - 0.5
    assert colorization_regression_loss(pred, ab).item() == pytest.approx((0.045 + 2.5) / 2)
    assert colorization_regression_loss(pred, ab, "l2").item() == pytest.approx((0.09 + 9) / 2)


def test_model_forward_backward_and_decoding():
    task = sslpipe.create_task("colorization", size=32, seed=0)
    batch = task.collator(_images(2, 40, 36))
    model = task.build(timm.create_model("resnet18", num_classes=0))
    out = model(batch.inputs)
    assert out.shape == (2, 313, 8, 8)
    loss = task.loss(out, batch)
    loss.backward()
    assert torch.isfinite(loss) and model.head[0].weight.grad is not None
    assert 0 <= task.metrics(out, batch)["pretext_acc"] <= 1
    ab = sslpipe.ops.decode_ab(out.detach())
    light = torch.full((2, 1, 8, 8), 50.0)
    rgb = lab_to_rgb(torch.cat([light, ab], 1))
    assert rgb.shape == (2, 3, 8, 8) and rgb.min() >= 0 and rgb.max() <= 1


def test_visualize_rows():
    task = sslpipe.create_task("colorization", size=32, seed=0)
    rows = task.visualize(task.collator(_images()), max_images=2)
    assert [r[1].shape for r in rows] == [(2, 3, 32, 32)] * 3 + [(2, 3, 8, 8)]
    assert all(r[1].min() >= 0 and r[1].max() <= 1 for r in rows)


@pytest.mark.parametrize("bad", [{"mode": "gan"}, {"size": 0}, {"rebalance": 1.5},
                                 {"neighbours": 0}, {"size": 8, "target_stride": 16},
                                 {"prior": "/no/such/prior.pt"}, {"gray_threshold": -1},
                                 {"target_sampling": "nearest"}])
def test_wrong_options_raise(bad):
    with pytest.raises(ValueError):
        sslpipe.create_task("colorization", **bad)


@pytest.mark.parametrize("mode", ["classification", "regression"])
def test_grayscale_images_are_left_out_of_the_loss(mode):
    # the authors' NonGrayMaskLayer: colour when any |ab| > 5; a gray image teaches nothing
    task = sslpipe.create_task("colorization", size=32, crop="center", flip=0.0, mode=mode,
                               seed=0)
    colour = _images(2, 32, 32, seed=1)
    gray = colour[:1, :1].expand(-1, 3, -1, -1).clone()  # R = G = B: ab = 0
    batch = task.collator(torch.cat([colour, gray]))
    assert batch.targets["color"].tolist() == [1.0, 1.0, 0.0]
    if mode == "classification":
        assert not batch.targets["weights"][2].any() and batch.targets["weights"][:2].all()
    side = 32 // task.options.target_stride
    out = 313 if mode == "classification" else 2
    logits = torch.randn(3, out, side, side, generator=torch.Generator().manual_seed(0))
    loss = task.loss(logits, batch)
    changed = logits.clone()
    changed[2] = torch.randn(out, side, side)  # another prediction for the gray image
    assert task.loss(changed, batch).item() == pytest.approx(loss.item())
    # the mean over every pixel of the batch, the gray image's counting as zeros
    colour_only = task.loss(logits[:2], _first(batch, 2))
    assert loss.item() == pytest.approx(colour_only.item() * 2 / 3, rel=1e-5)
    # a batch of gray images only: zero loss and gradients, never NaN
    all_gray = task.collator(gray.expand(2, -1, -1, -1).clone())
    pred = torch.randn(2, out, side, side, requires_grad=True)
    zero = task.loss(pred, all_gray)
    zero.backward()
    assert zero.item() == 0.0 and torch.isfinite(pred.grad).all() and not pred.grad.any()
    # gray_threshold=None trains on every image
    every = sslpipe.create_task("colorization", size=32, crop="center", flip=0.0, mode=mode,
                                gray_threshold=None, seed=0)
    assert every.collator(gray).targets["color"].tolist() == [1.0]


def _first(batch, n):
    return sslpipe.Batch(batch.inputs[:n], {k: v[:n] for k, v in batch.targets.items()})
