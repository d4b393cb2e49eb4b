"""Tests of the relative patch location task: labels vs geometry, colour remedies, head."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from sslpipe.ops.color import normalize
from sslpipe.ops.geometry import resized_crop
from sslpipe.ops.tiling import extract_tiles
from sslpipe.registry import create_task
from sslpipe.tasks.relative_patch import NEIGHBOURS, relative_patch_loss


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 72, 96), dtype=torch.uint8, generator=g)


def _task(**options):
    options = dict(size=16, seed=0, hidden_dim=32, patch_dim=16) | options
    return create_task("relative_patch", **options)


# no pixelation and no per-patch standardisation: inputs are the normalised pixels
PLAIN = dict(pixelate=0.0, patch_norm="none")


def _label_from_boxes(center: torch.Tensor, neighbour: torch.Tensor, pitch: int) -> torch.Tensor:
    """Position 0..7 (row-major, centre skipped) read off the two patch boxes; ``pitch`` is
    the distance between neighbouring patch centres before jitter."""
    cc = (center[..., :2] + center[..., 2:]) / 2
    nc = (neighbour[..., :2] + neighbour[..., 2:]) / 2
    dx, dy = torch.round((nc - cc) / pitch).long().unbind(-1)
    assert ((dx.abs() <= 1) & (dy.abs() <= 1) & ((dx != 0) | (dy != 0))).all()
    cell = (dy + 1) * 3 + (dx + 1)
    lookup = torch.full((9,), -1, dtype=torch.long)
    lookup[list(NEIGHBOURS)] = torch.arange(8)
    return lookup[cell]


def test_pair_label_matches_geometry_for_every_label() -> None:
    task = _task(chroma="none", **PLAIN)
    images = _images(64)
    batch = task.collator(images)
    boxes = batch.meta["input_boxes"]
    assert set(batch.targets.tolist()) == set(range(8))
    assert torch.equal(_label_from_boxes(boxes[:, 0], boxes[:, 1], 24), batch.targets)
    # the recorded boxes are where the pixels came from
    opt = task.options
    crops = resized_crop(images, batch.meta["boxes"], opt.region)
    ref = extract_tiles(crops, boxes[..., :2].long(), opt.size)
    center, neighbour = batch.inputs
    torch.testing.assert_close(center, normalize(ref[:, 0], opt.mean, opt.std))
    torch.testing.assert_close(neighbour, normalize(ref[:, 1], opt.mean, opt.std))
    # centre input is grid cell 4, neighbour input is the labelled cell
    grid = batch.meta["patch_boxes"]
    assert torch.equal(boxes[:, 0], grid[:, 4])
    cells = torch.tensor(NEIGHBOURS)[batch.targets]
    assert torch.equal(boxes[:, 1], grid[torch.arange(64), cells])


def test_gap_and_jitter_geometry() -> None:
    task = _task(size=96, chroma="none")  # the paper: 96 px patches, 48 px gap, 7 px jitter
    batch = task.collator(_images(32))
    grid = batch.meta["patch_boxes"]
    assert task.options.region == 3 * (96 + 48)
    nominal = torch.tensor([(c % 3) * 144 + 24 for c in range(9)], dtype=torch.float32)
    offset = grid[..., 0] - nominal
    assert float(offset.abs().max()) == 7
    # patches of neighbouring columns are always separated by a gap
    assert float((grid[:, 1, 0] - grid[:, 0, 2]).min()) >= 48 - 14


def test_nine_variant_targets_are_positions() -> None:
    task = _task(variant="nine", chroma="none")
    batch = task.collator(_images(6))
    center, neighbours = batch.inputs
    assert neighbours.shape == (6, 8, 3, 16, 16) and batch.targets.shape == (6, 8)
    assert (batch.targets.sort(1).values == torch.arange(8)).all()
    boxes = batch.meta["input_boxes"]
    labels = _label_from_boxes(boxes[:, :1].expand(-1, 8, -1), boxes[:, 1:], 24)
    assert torch.equal(labels, batch.targets)


def test_colour_dropping_keeps_one_channel() -> None:
    task = _task(chroma="drop", **PLAIN)
    batch = task.collator(_images(8))
    center, _ = batch.inputs
    kept = batch.meta["kept_channel"][:, 0]
    std = center.std(dim=(-2, -1))  # B x 3
    kept_std = std[torch.arange(8), kept]
    for c in range(3):
        dropped = kept != c
        assert (std[dropped, c] < 0.05 * kept_std[dropped]).all()
        assert (std[dropped, c] > 0).all()  # noise, not a constant
    ref = _task(chroma="none", **PLAIN).collator(_images(8))
    same = center[torch.arange(8), kept]
    torch.testing.assert_close(same, ref.inputs[0][torch.arange(8), kept])


def test_projection_removes_green_magenta() -> None:
    task = _task(chroma="project", **PLAIN)
    batch = task.collator(_images(4))
    opt = task.options
    rgb = batch.inputs[0] * torch.tensor(opt.std).view(3, 1, 1) + torch.tensor(opt.mean).view(
        3, 1, 1)
    green_magenta = 2 * rgb[:, 1] - rgb[:, 0] - rgb[:, 2]
    assert float(green_magenta.abs().max()) < 1e-4
    plain = _task(chroma="none", **PLAIN).collator(_images(4)).inputs[0]
    rgb_plain = plain * torch.tensor(opt.std).view(3, 1, 1) + torch.tensor(opt.mean).view(3, 1, 1)
    torch.testing.assert_close(rgb.sum(1), rgb_plain.sum(1), atol=1e-4, rtol=0)  # gray kept


def test_seed_reproduces_batch_and_mixed_inputs() -> None:
    a, b = _task(seed=3).collator(_images()), _task(seed=3).collator(_images())
    assert all(torch.equal(x, y) for x, y in zip(a.inputs, b.inputs))
    assert torch.equal(a.targets, b.targets)
    rng = np.random.default_rng(0)
    samples = [(Image.fromarray(rng.integers(0, 256, (64, 90, 3), dtype=np.uint8)), 0),
               (rng.integers(0, 256, (100, 64, 3), dtype=np.uint8), 5)]
    batch = _task(size=64).collator(samples)
    assert batch.inputs[0].shape == (2, 3, 64, 64) and batch.labels.tolist() == [0, 5]


@pytest.mark.parametrize("options", [
    dict(size=0), dict(gap=-1), dict(jitter=-2), dict(variant="four"), dict(chroma="gray"),
    dict(crop="top"), dict(drop_noise=-0.1), dict(patch_dim=0), dict(patches=2),
    dict(pixelate=1.5), dict(pixelate_min=0), dict(pixelate_min=16), dict(patch_norm="l2"),
])
def test_bad_options(options: dict) -> None:
    with pytest.raises(ValueError):
        _task(**options)


def test_loss_is_cross_entropy_over_pairs() -> None:
    logits = torch.zeros(2, 8)
    logits[0, 3] = 1.0
    target = torch.tensor([3, 0])
    p_right = np.e / (np.e + 7)
    expected = -(np.log(p_right) + np.log(1 / 8)) / 2  # row 2: all logits equal
    assert float(relative_patch_loss(logits, target)) == pytest.approx(expected, rel=1e-6)
    nine = torch.zeros(1, 8, 8, requires_grad=True)
    loss = relative_patch_loss(nine, torch.arange(8).view(1, 8))
    assert loss.item() == pytest.approx(np.log(8), rel=1e-6)
    loss.backward()
    # d/dz of mean CE at uniform logits: (1/8 - onehot) / 8 rows
    expected_grad = (torch.full((8, 8), 1 / 8) - torch.eye(8)) / 8
    torch.testing.assert_close(nine.grad[0], expected_grad)


@pytest.mark.parametrize("variant", ["pair", "nine"])
def test_model_forward_backward(variant: str) -> None:
    task = _task(variant=variant)
    batch = task.collator(_images(2))
    model = task.build(timm.create_model("resnet18", num_classes=0))
    out = model(batch.inputs)
    assert out.shape == ((2, 8) if variant == "pair" else (2, 8, 8))
    task.loss(out, batch).backward()
    assert model.backbone.conv1.weight.grad is not None
    assert 0.0 <= task.metrics(out, batch)["pretext_acc"] <= 1.0
    caption, pic = task.visualize(batch)[0]
    assert pic.shape == (2, 3, 52, 52) and float(pic.min()) >= 0 and float(pic.max()) <= 1


def test_defaults_are_the_official_preprocessing() -> None:
    opt = create_task("relative_patch").options  # deepcontext/train.py, prep_image
    assert (opt.size, opt.gap_px, opt.jitter_px) == (96, 48, 7)
    assert opt.pixelate == 0.33 and opt.pixelate_min_px == 10 and opt.patch_norm == "rms"


def test_pixelated_patches_are_the_plain_patches_resized_down_and_up() -> None:
    images = _images(6)
    plain = _task(chroma="none", **PLAIN).collator(images)
    # the same seed draws the same crops and positions: pixelation is drawn last
    pixelated = _task(chroma="none", pixelate=1.0, patch_norm="none").collator(images)
    side = pixelated.meta["pixelate_side"]
    assert side.shape == (6, 2) and bool((side >= 2).all()) and bool((side <= 14).all())
    for got, ref, s in zip(pixelated.inputs, plain.inputs, side.unbind(1)):
        for i in range(6):
            k = int(s[i])
            small = F.interpolate(ref[i:i + 1], size=(k, k), mode="bilinear", align_corners=False)
            back = F.interpolate(small, size=(16, 16), mode="bilinear", align_corners=False)
            torch.testing.assert_close(got[i:i + 1], back, atol=1e-4, rtol=0)
            # at most k degrees of freedom per row and column: rank <= k per channel
            assert int(torch.linalg.matrix_rank(got[i, 0].double(), atol=1e-4)) <= k


def test_fraction_of_pixelated_patches_follows_the_rule() -> None:
    collator = _task(chroma="none").collator
    side = torch.cat([collator(_images(64, seed=s)).meta["pixelate_side"].flatten()
                      for s in range(5)])
    n = len(side)  # 640 patches; 0.33 within 4 binomial standard deviations
    share = float((side < 16).float().mean())
    assert abs(share - 0.33) < 4 * (0.33 * 0.67 / n) ** 0.5


def test_patches_are_standardised_per_patch() -> None:
    for chroma in ("drop", "project", "none"):
        center, neighbour = _task(chroma=chroma).collator(_images(8)).inputs
        for x in (center, neighbour):
            assert float(x.mean(dim=(-2, -1)).abs().max()) < 1e-5  # every channel, every patch
            torch.testing.assert_close(x.square().mean(dim=(1, 2, 3)), torch.ones(8))
    x = _task(patch_norm="mean").collator(_images(4)).inputs[0]
    assert float(x.mean(dim=(-2, -1)).abs().max()) < 1e-5
    assert float(x.square().mean(dim=(1, 2, 3)).sub(1).abs().max()) > 1e-2  # not rescaled
