"""Tests of the jigsaw task: permutation set, tile geometry, loss, head."""

from __future__ import annotations

import warnings

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
from sslpipe.tasks.jigsaw import green_magenta_projection, jigsaw_loss, permutation_set


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 70, 90), dtype=torch.uint8, generator=g)


def _task(**options):
    options = dict(size=64, seed=0, cache_dir=None, hidden_dim=32, tile_dim=16) | options
    return create_task("jigsaw", **options)


def test_collator_uses_the_chosen_permutation_rule() -> None:
    mean = _task(num_permutations=50)
    assert mean.options.permutation_rule == "mean"  # the paper's Algorithm 1
    assert torch.equal(mean.collator.permutations, torch.from_numpy(permutation_set(50)))
    max_min = _task(num_permutations=50, permutation_rule="min")
    assert torch.equal(max_min.collator.permutations,
                       torch.from_numpy(permutation_set(50, rule="min")))


def test_unpermuting_restores_grid_order() -> None:
    task = _task(normalize_tiles=False, grayscale=0.0, channel_jitter=2, crop="random")
    images = _images(8)
    batch = task.collator(images)
    opt = task.options
    perm = batch.meta["permutation"]
    assert torch.equal(perm, torch.from_numpy(permutation_set(1000))[batch.targets])
    assert torch.equal(batch.meta["permutation_index"], batch.targets)
    # cut the tiles again from the un-shuffled crop with the recorded offsets
    crops = resized_crop(images, batch.meta["boxes"], opt.size)
    t = opt.tile_side
    ref = extract_tiles(crops, batch.meta["tile_origins"], t)
    ref = normalize(ref.flatten(0, 1), opt.mean, opt.std).view(8, 9, 3, t, t)
    restored = torch.gather(batch.inputs, 1, perm.argsort(1).view(8, 9, 1, 1, 1).expand_as(ref))
    torch.testing.assert_close(restored, ref)
    # and input tile i really is grid cell perm[i]
    torch.testing.assert_close(batch.inputs[:, 0], ref[torch.arange(8), perm[:, 0]])
    assert not torch.allclose(batch.inputs, ref)  # the shuffle did something


def test_default_geometry_is_the_official_one() -> None:
    """255 px central square, 85 px cells, 64 px tiles anywhere in their cell (gaps 0-21 px)."""
    task = _task(size=255, channel_jitter=0, seed=1)
    opt = task.options
    assert (opt.crop, opt.cell, opt.tile_side) == ("center", 85, 64)
    batch = task.collator(_images(16))
    assert batch.inputs.shape == (16, 9, 3, 64, 64)
    origins = batch.meta["tile_origins"][:, :, 0]  # B x 9 x 2, channels coincide here
    assert torch.equal(batch.meta["tile_origins"], origins.unsqueeze(2).expand(-1, -1, 3, -1))
    cell_pos = origins - (torch.stack([torch.arange(9) % 3, torch.arange(9) // 3], 1) * 85)
    assert int(cell_pos.min()) >= 0 and int(cell_pos.max()) <= 21
    assert len(torch.unique(cell_pos)) > 10
    centred = _task(size=255, channel_jitter=0, jitter=False).collator(_images(2))
    assert torch.equal(centred.meta["tile_origins"][0], centred.meta["tile_origins"][1])
    assert _task(size=225, tile=64).options.cell == 75  # the paper's method-section geometry


@pytest.mark.parametrize("bound", [None, 0, 2, 5])
def test_channel_jitter_keeps_channels_within_the_bound_and_the_cell(bound) -> None:
    options = dict(size=255, channel_jitter=bound, seed=2)
    batch = _task(**options).collator(_images(32))
    origins = batch.meta["tile_origins"]  # B x 9 x 3 x 2
    limit = 2 if bound is None else bound  # default: the official rand() % 3 per channel
    spread = origins.amax(2) - origins.amin(2)  # B x 9 x 2, per axis
    assert int(spread.max()) == limit  # reached, never exceeded
    cell_origin = torch.stack([torch.arange(9) % 3, torch.arange(9) // 3], 1) * 85
    inside = origins - cell_origin[None, :, None]
    assert int(inside.min()) >= 0 and int(inside.max()) <= 85 - 64
    # each channel of each tile is cut at its own recorded origin
    plain = _task(**options, grayscale=0.0, normalize_tiles=False, mean=(0.0,) * 3,
                  std=(1.0,) * 3).collator(_images(32))
    assert torch.equal(plain.meta["tile_origins"], origins)
    crops = resized_crop(_images(32), plain.meta["boxes"], 255)
    perm = plain.meta["permutation"]
    for b, i, c in [(0, 0, 0), (3, 4, 2), (31, 8, 1)]:
        x0, y0 = origins[b, perm[b, i], c].tolist()
        expected = crops[b, c, y0:y0 + 64, x0:x0 + 64].float() / 255
        torch.testing.assert_close(plain.inputs[b, i, c], expected)


def test_a_gray_puzzle_is_gray_in_every_tile_and_standardised() -> None:
    batch = _task(grayscale=0.5, seed=3).collator(_images(24))
    gray = batch.meta["grayscale"]
    assert (gray == gray[:, :1]).all()  # one choice per puzzle
    assert 0 < int(gray[:, 0].sum()) < 24
    x = batch.inputs
    for i in range(24):
        equal = torch.allclose(x[i, :, 0], x[i, :, 1], atol=1e-4) and torch.allclose(
            x[i, :, 1], x[i, :, 2], atol=1e-4)
        assert equal == bool(gray[i, 0])
    # one mean and std per tile, over its channels and pixels (the official MVN)
    torch.testing.assert_close(x.mean(dim=(-3, -2, -1)), torch.zeros(24, 9), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(-3, -2, -1)), torch.ones(24, 9), atol=1e-3, rtol=0)
    per_tile = _task(grayscale=1.0, grayscale_per="tile").collator(_images(3))
    assert per_tile.meta["grayscale"].all()
    mixed = _task(grayscale=0.5, grayscale_per="tile", seed=0).collator(_images(8))
    assert not (mixed.meta["grayscale"] == mixed.meta["grayscale"][:, :1]).all()


def test_per_channel_standardisation_option() -> None:
    batch = _task(normalize_over="channel", color_jitter=0.4).collator(_images(3))
    x = batch.inputs
    torch.testing.assert_close(x.mean(dim=(-2, -1)), torch.zeros(3, 9, 3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(-2, -1)), torch.ones(3, 9, 3), atol=1e-3, rtol=0)


def test_green_magenta_projection_matches_the_official_matrix() -> None:
    p = green_magenta_projection()
    official = torch.tensor([[5.0, 2.0, -1.0], [2.0, 2.0, 2.0], [-1.0, 2.0, 5.0]]) / 6
    torch.testing.assert_close(p, official)
    torch.testing.assert_close(p @ p, p)  # a projection
    torch.testing.assert_close(p @ torch.tensor([1.0, -2.0, 1.0]), torch.zeros(3))
    torch.testing.assert_close(p @ torch.ones(3), torch.ones(3))  # gray unchanged


def test_colour_projection_is_applied_to_colour_puzzles_only() -> None:
    plain = dict(normalize_tiles=False, mean=(0.0,) * 3, std=(1.0,) * 3, channel_jitter=0)
    images = _images(16)
    batch = _task(grayscale=0.5, color_projection=1.0, seed=4, **plain).collator(images)
    project, gray = batch.meta["color_projection"], batch.meta["grayscale"][:, 0]
    assert torch.equal(project, ~gray)
    ref = _task(grayscale=0.5, color_projection=0.0, seed=4, **plain).collator(images)
    # same seed, same draws: a projected puzzle is P applied to the plain tiles' RGB
    projected = torch.einsum("ij,bkjhw->bkihw", green_magenta_projection(), ref.inputs)
    assert bool(project.any())
    for i in range(16):
        expected = projected[i] if project[i] else ref.inputs[i]
        torch.testing.assert_close(batch.inputs[i], expected, atol=1e-5, rtol=0)
    assert not _task(seed=4, **plain).collator(images).meta["color_projection"].any()


def test_seed_reproduces_batch_and_inputs_of_every_kind() -> None:
    images = _images(3)
    options = dict(seed=5, grayscale=0.5, color_projection=0.5, color_jitter=0.3,
                   crop="random")
    a, b = _task(**options).collator(images), _task(**options).collator(images)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert a.meta.keys() == b.meta.keys()
    assert all(torch.equal(a.meta[key], b.meta[key]) for key in a.meta)
    c = _task(seed=6).collator(images)
    assert not torch.equal(a.inputs, c.inputs)
    rng = np.random.default_rng(0)
    samples = [(Image.fromarray(rng.integers(0, 256, (80, 64, 3), dtype=np.uint8)), 1),
               (rng.integers(0, 256, (64, 100, 3), dtype=np.uint8), 2)]
    batch = _task().collator(samples)
    assert batch.inputs.shape == (2, 9, 3, 16, 16) and batch.labels.tolist() == [1, 2]
    assert torch.isfinite(batch.inputs).all()


@pytest.mark.parametrize("options", [
    dict(grid=1), dict(num_permutations=0), dict(num_permutations=25, grid=2), dict(tile=30),
    dict(crop="left"), dict(grayscale=1.5), dict(color_jitter=1.0), dict(channel_jitter=-1),
    dict(size=0), dict(tile_dim=0), dict(tiles=3), dict(permutation_rule="max"),
    dict(normalize_over="image"), dict(grayscale_per="image"), dict(color_projection=-0.1),
    dict(size=255, channel_jitter=22), dict(size=255, tile=80, channel_jitter=6),
])
def test_bad_options(options: dict) -> None:
    with pytest.raises(ValueError):
        _task(**options)


def test_loss_is_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    target = torch.tensor([0, 1])
    expected = -(np.log(np.exp(2) / (np.exp(2) + 2)) + np.log(np.e / (1 + np.e + np.e**3))) / 2
    assert float(jigsaw_loss(logits, target)) == pytest.approx(expected, rel=1e-6)


def test_model_forward_backward() -> None:
    task = _task(num_permutations=100, size=48)
    batch = task.collator(_images(2))
    model = task.build(timm.create_model("resnet18", num_classes=0))
    out = model(batch.inputs)
    assert out.shape == (2, 100)
    loss = task.loss(out, batch)
    loss.backward()
    assert model.backbone.conv1.weight.grad is not None
    assert set(task.metrics(out, batch)) == {"pretext_acc"}
    with pytest.raises(ValueError, match="tiles"):
        model(batch.inputs[:, :4])
    # the head sees tiles in input order: shuffling the tiles changes the logits
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(batch.inputs), model(batch.inputs.flip(1)))
    assert F.cross_entropy(out, batch.targets).item() == pytest.approx(loss.item())


def test_visualize_rows() -> None:
    task = _task()
    batch = task.collator(_images(3))
    rows = task.visualize(batch, max_images=2)
    assert len(rows) == 2
    for caption, pic in rows:
        assert isinstance(caption, str) and pic.shape[:2] == (2, 3)
        assert float(pic.min()) >= 0 and float(pic.max()) <= 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _task(normalize_tiles=False).visualize(batch)
