"""Tests of the counting task: tiles and downsampling, derangement, loss and its gradient."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from sslpipe.ops.color import denormalize, normalize
from sslpipe.ops.geometry import resized_crop
from sslpipe.ops.resample import lanczos_resize
from sslpipe.ops.tiling import assemble_grid
from sslpipe.registry import create_task
from sslpipe.tasks.counting import counting_loss, random_derangement


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 70, 90), dtype=torch.uint8, generator=g)


def _task(**options):
    options = dict(size=16, seed=0, num_features=8) | options
    return create_task("counting", **options)


def test_tiles_partition_the_crop_and_dx_is_its_downsampling() -> None:
    task = _task(downsample=("area",), grayscale=0.0)
    images = _images(5)
    batch = task.collator(images)
    dx, tiles, dy = batch.inputs
    opt = task.options
    assert dx.shape == (5, 3, 16, 16) and tiles.shape == (5, 4, 3, 16, 16) and batch.targets is None
    crop = normalize(resized_crop(images, batch.meta["boxes"], 32), opt.mean, opt.std)
    torch.testing.assert_close(assemble_grid(tiles, 2, gap=0), crop)
    assert batch.meta["tile_boxes"][0].tolist() == [
        [0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32], [16, 16, 32, 32]]
    # area downsampling by 2 = mean of each 2x2 block = mean of the tiles' 2x2 blocks
    torch.testing.assert_close(dx, F.avg_pool2d(crop, 2), atol=1e-4, rtol=0)


def test_downsample_filter_is_recorded() -> None:
    assert _task().options.downsample == ("bilinear", "bicubic", "lanczos", "area")  # paper's
    methods = ("bilinear", "bicubic", "lanczos", "area", "nearest")
    task = _task(downsample="bilinear, bicubic,lanczos,area,nearest", crop="center",
                 grayscale=0.0)
    assert task.options.downsample == methods
    images = _images(24)
    batch = task.collator(images)
    opt = task.options
    crops = resized_crop(images, batch.meta["boxes"], 32).float()
    assert set(batch.meta["downsample"].tolist()) == set(range(5))
    for i, m in enumerate(batch.meta["downsample"].tolist()):
        if methods[m] == "lanczos":
            ref = lanczos_resize(crops[i:i + 1], 16).clamp(0, 255)
        else:
            kw = dict(antialias=True, align_corners=False) if m < 2 else {}
            ref = F.interpolate(crops[i:i + 1], size=16, mode=methods[m], **kw).clamp(0, 255)
        torch.testing.assert_close(batch.inputs[0][i:i + 1], normalize(ref, opt.mean, opt.std))


def test_one_filter_per_batch_option() -> None:
    batch = _task(downsample_per="batch", seed=1).collator(_images(8))
    assert len(set(batch.meta["downsample"].tolist())) == 1


def test_other_image_is_a_derangement() -> None:
    batch = _task(grayscale=0.0).collator(_images(6))
    other = batch.meta["other"]
    assert sorted(other.tolist()) == list(range(6))
    assert (other != torch.arange(6)).all()
    assert torch.equal(batch.inputs[2], batch.inputs[0][other])
    for n in (2, 3, 7):
        d = random_derangement(n, torch.Generator().manual_seed(n))
        assert sorted(d.tolist()) == list(range(n)) and (d != torch.arange(n)).all()
    with pytest.raises(ValueError, match="at least 2 images"):
        _task().collator(_images(1))


def _is_gray(x: torch.Tensor, opt) -> torch.Tensor:
    """Per leading index: are the three RGB channels equal (``... x 3 x H x W`` inputs)?"""
    rgb = denormalize(x, opt.mean, opt.std)
    flat = rgb.flatten(0, -4) if rgb.ndim > 4 else rgb
    same = (flat - flat[:, :1]).abs().flatten(1).amax(1) < 1e-4
    return same.view(x.shape[:-3])


def test_gray_choice_is_consistent_across_all_terms() -> None:
    """The paper: 67 % gray, and an image's D(x), tiles and D(y) are all gray or all colour."""
    task = _task(grayscale=0.5, seed=7)
    opt = task.options
    batch = task.collator(_images(24))
    dx, tiles, dy = batch.inputs
    gray = batch.meta["grayscale"]
    assert 0 < int(gray.sum()) < 24
    assert torch.equal(_is_gray(dx, opt), gray)
    assert torch.equal(_is_gray(tiles, opt), gray.view(24, 1).expand(24, 4))
    assert torch.equal(_is_gray(dy, opt), gray)  # the image's choice, not its partner's
    # D(y) is the partner's downsampled crop in the image's own colour mode
    other = batch.meta["other"]
    mixed = torch.nonzero(gray != gray[other])[:, 0]
    assert len(mixed) > 0
    same = torch.nonzero(gray == gray[other])[:, 0]
    torch.testing.assert_close(dy[same], dx[other[same]])
    colour = _task(grayscale=0.0, seed=7).collator(_images(24))
    for i in mixed.tolist():
        partner = colour.inputs[0][other[i]]
        rgb = denormalize(partner, opt.mean, opt.std).mean(0, keepdim=True).expand(3, -1, -1)
        expected = rgb if gray[i] else denormalize(partner, opt.mean, opt.std)
        torch.testing.assert_close(denormalize(dy[i], opt.mean, opt.std), expected,
                                   atol=1e-4, rtol=0)
    # the paper's rate by default
    rate = _task(seed=0).collator(_images(400)).meta["grayscale"].float().mean()
    assert abs(float(rate) - 0.67) < 0.08


def test_loss_matches_hand_computed_values() -> None:
    phi_dx = torch.tensor([[1.0, 2.0], [1.0, 1.0]], requires_grad=True)
    phi_tiles = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
                              [[0.5, 0.5], [0.5, 0.5], [0.0, 0.0], [0.0, 0.0]]],
                             requires_grad=True)  # totals [1, 1] and [1, 1]
    phi_dy = torch.tensor([[3.0, 1.0], [5.0, 1.0]], requires_grad=True)
    # image 0: |(0, 1)|^2 = 1, |(2, 0)|^2 = 4 -> hinge 10 - 4 = 6; image 1: 0, 16 -> hinge 0
    loss = counting_loss(phi_dx, phi_tiles, phi_dy, margin=10.0, contrastive_weight=1.0)
    assert loss.item() == pytest.approx((1 + 6 + 0 + 0) / 2)
    assert counting_loss(phi_dx, phi_tiles, phi_dy, contrastive_weight=0.5).item() == \
        pytest.approx((1 + 3) / 2)
    assert counting_loss(phi_dx, phi_tiles, phi_dy, margin=3.0).item() == pytest.approx(0.5)
    loss.backward()
    # d/dphi_dx = 2 (dx - total) / B; the inactive hinge of image 1 gives phi_dy no gradient
    torch.testing.assert_close(phi_dx.grad, torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    torch.testing.assert_close(phi_dy.grad, torch.tensor([[-2.0, 0.0], [0.0, 0.0]]))
    # each tile gets -d/dphi_dx from the first term and +d/dphi_dy's negative from the hinge
    expected_tile = torch.tensor([[0.0 + 2.0, -1.0 + 0.0], [0.0, 0.0]])
    torch.testing.assert_close(phi_tiles.grad, expected_tile[:, None].expand(-1, 4, -1))


def test_zero_counts_are_penalised_by_the_margin() -> None:
    zeros = torch.zeros(3, 5)
    loss = counting_loss(zeros, torch.zeros(3, 4, 5), zeros, margin=10.0, contrastive_weight=2.0)
    assert loss.item() == pytest.approx(20.0)


def test_seed_reproduces_batch_and_mixed_inputs() -> None:
    a, b = _task(seed=4).collator(_images()), _task(seed=4).collator(_images())
    assert all(torch.equal(x, y) for x, y in zip(a.inputs, b.inputs))
    assert torch.equal(a.meta["other"], b.meta["other"])
    rng = np.random.default_rng(0)
    samples = [(Image.fromarray(rng.integers(0, 256, (64, 90, 3), dtype=np.uint8)), 0),
               (rng.integers(0, 256, (100, 64, 3), dtype=np.uint8), 5)]
    batch = _task(size=64).collator(samples)
    assert batch.inputs[1].shape == (2, 4, 3, 64, 64) and batch.labels.tolist() == [0, 5]


@pytest.mark.parametrize("options", [
    dict(size=0), dict(crop="top"), dict(downsample=("sinc",)), dict(downsample=()),
    dict(downsample_per="epoch"), dict(grayscale=1.5),
    dict(downsample=""), dict(num_features=0), dict(margin=-1.0), dict(contrastive_weight=-0.1),
    dict(tiles=4),
])
def test_bad_options(options: dict) -> None:
    with pytest.raises(ValueError):
        _task(**options)


def test_model_forward_backward_and_metrics() -> None:
    task = _task()
    batch = task.collator(_images(2))
    model = task.build(timm.create_model("resnet18", num_classes=0))
    phi_dx, phi_tiles, phi_dy = model(batch.inputs)
    assert phi_dx.shape == (2, 8) and phi_tiles.shape == (2, 4, 8) and phi_dy.shape == (2, 8)
    assert (phi_dx >= 0).all()
    loss = task.loss((phi_dx, phi_tiles, phi_dy), batch)
    loss.backward()
    assert model.backbone.conv1.weight.grad is not None
    metrics = task.metrics((phi_dx, phi_tiles, phi_dy), batch)
    assert set(metrics) >= {"count_error", "pretext_acc"}
    rows = task.visualize(batch)
    assert len(rows) == 3 and all(p.shape[:2] == (2, 3) for _, p in rows)
    assert all(float(p.min()) >= 0 and float(p.max()) <= 1 for _, p in rows)
