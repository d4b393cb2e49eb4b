"""Tests of the jigsaw task: permutation set, tile geometry, loss, head."""

from __future__ import annotations

import math
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
from sslpipe.tasks import jigsaw
from sslpipe.tasks.jigsaw import jigsaw_loss, permutation_set


def _hamming(perms: np.ndarray) -> np.ndarray:
    d = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    np.fill_diagonal(d, perms.shape[1] + 1)
    return d


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 70, 90), dtype=torch.uint8, generator=g)


def _task(**options):
    options = dict(size=64, seed=0, cache_dir=None, hidden_dim=32, tile_dim=16) | options
    return create_task("jigsaw", **options)


def test_permutation_set_properties() -> None:
    perms = permutation_set(1000, grid=3, seed=0)
    assert perms.shape == (1000, 9) and perms.dtype == np.int64
    assert (np.sort(perms, axis=1) == np.arange(9)).all()
    assert len(np.unique(perms, axis=0)) == 1000
    min_greedy = _hamming(perms).min()
    rng = np.random.default_rng(0)
    random_set = np.stack([rng.permutation(9) for _ in range(1000)])
    assert min_greedy >= 2
    assert min_greedy >= _hamming(random_set).min()
    assert np.array_equal(perms, permutation_set(1000, grid=3, seed=0))
    assert not np.array_equal(perms, permutation_set(1000, grid=3, seed=1))


def test_small_sets_and_other_grids() -> None:
    p100 = permutation_set(100, seed=0)
    assert _hamming(p100).min() >= _hamming(permutation_set(1000, seed=0)).min()
    p2 = permutation_set(24, grid=2)
    assert len(np.unique(p2, axis=0)) == 24  # every permutation of 4 tiles
    p4 = permutation_set(10, grid=4)
    assert p4.shape == (10, 16) and (np.sort(p4, axis=1) == np.arange(16)).all()


@pytest.mark.parametrize("num,grid", [(0, 3), (math.factorial(9) + 1, 3), (25, 2), (5, 1)])
def test_permutation_set_rejects_bad_sizes(num: int, grid: int) -> None:
    with pytest.raises(ValueError, match="num_permutations|grid"):
        permutation_set(num, grid=grid)


def test_permutation_cache_on_disk(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(jigsaw, "_PERMUTATIONS", {})
    first = permutation_set(20, seed=3, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == ["jigsaw_perms_g3_n20_s3.npy"]
    monkeypatch.setattr(jigsaw, "_PERMUTATIONS", {})
    assert np.array_equal(np.load(files[0]), first)
    assert np.array_equal(permutation_set(20, seed=3, cache_dir=tmp_path), first)
    # a corrupt cache is reported and replaced, never used
    monkeypatch.setattr(jigsaw, "_PERMUTATIONS", {})
    np.save(files[0], np.zeros((20, 9), dtype=np.int64))
    with pytest.warns(UserWarning, match="invalid permutation cache"):
        again = permutation_set(20, seed=3, cache_dir=tmp_path)
    assert np.array_equal(again, first)
    assert np.array_equal(np.load(files[0]), first)


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


def test_tile_geometry_has_gaps_and_jitter() -> None:
    task = _task(size=225, channel_jitter=0)
    batch = task.collator(_images(16))
    assert batch.inputs.shape == (16, 9, 3, 64, 64)  # the paper's 225 / 75 / 64
    origins = batch.meta["tile_origins"][:, :, 0]  # B x 9 x 2
    cell_pos = origins - (torch.stack([torch.arange(9) % 3, torch.arange(9) // 3], 1) * 75)
    assert int(cell_pos.min()) >= 0 and int(cell_pos.max()) <= 11
    assert len(torch.unique(cell_pos)) > 1
    centred = _task(size=225, channel_jitter=0, jitter=False).collator(_images(2))
    assert torch.equal(centred.meta["tile_origins"][0], centred.meta["tile_origins"][1])


def test_tiles_are_normalised_and_grayscale() -> None:
    batch = _task(grayscale=1.0).collator(_images(3))
    x = batch.inputs
    torch.testing.assert_close(x.mean(dim=(-2, -1)), torch.zeros(3, 9, 3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(-2, -1)), torch.ones(3, 9, 3), atol=1e-3, rtol=0)
    torch.testing.assert_close(x[:, :, 0], x[:, :, 1], atol=1e-3, rtol=0)
    assert batch.meta["grayscale"].all()
    colour = _task(grayscale=0.0, color_jitter=0.4).collator(_images(3))
    assert not torch.allclose(colour.inputs[:, :, 0], colour.inputs[:, :, 1], atol=1e-2)


def test_seed_reproduces_batch_and_inputs_of_every_kind() -> None:
    images = _images(3)
    a, b = _task(seed=5).collator(images), _task(seed=5).collator(images)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    c = _task(seed=6).collator(images)
    assert not torch.equal(a.inputs, c.inputs)
    rng = np.random.default_rng(0)
    samples = [(Image.fromarray(rng.integers(0, 256, (80, 64, 3), dtype=np.uint8)), 1),
               (rng.integers(0, 256, (64, 100, 3), dtype=np.uint8), 2)]
    batch = _task().collator(samples)
    assert batch.inputs.shape == (2, 9, 3, 18, 18) and batch.labels.tolist() == [1, 2]
    assert torch.isfinite(batch.inputs).all()


@pytest.mark.parametrize("options", [
    dict(grid=1), dict(num_permutations=0), dict(num_permutations=25, grid=2), dict(tile=30),
    dict(crop="left"), dict(grayscale=1.5), dict(color_jitter=1.0), dict(channel_jitter=-1),
    dict(size=0), dict(tile_dim=0), dict(tiles=3),
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
