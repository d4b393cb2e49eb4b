"""Rotation (Gidaris et al. 2018): labels undo exactly, are balanced, work in a DataLoader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import sslpipe
from sslpipe.ops.color import normalize
from sslpipe.ops.geometry import hflip, resized_crop, rot90
from sslpipe.tasks.rotation import rotation_loss


def _square_batch(n: int = 6, side: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)


def test_rotating_back_by_the_label_restores_the_input_exactly() -> None:
    x = _square_batch()
    batch = sslpipe.create_collator("rotation", size=32, crop="center", flip=0.0, seed=0)(x)
    expected = normalize(x)
    back = rot90(batch.inputs, -batch.targets)  # undo: rotate clockwise by the label
    assert torch.equal(back, expected[batch.meta["source"]])
    # and the labels are not trivial: rotated inputs differ from the originals
    moved = batch.targets != 0
    assert not torch.equal(batch.inputs[moved], expected[batch.meta["source"]][moved])


def test_rot90_matches_torch_rot90_per_image() -> None:
    x = _square_batch(4, 9)
    k = torch.tensor([0, 1, 2, 3])
    out = rot90(x, k)
    for i in range(4):
        assert torch.equal(out[i], torch.rot90(x[i], int(k[i]), dims=(1, 2)))


def test_all_mode_gives_every_rotation_of_every_image() -> None:
    batch = sslpipe.create_collator("rotation", size=32)(_square_batch(5))
    assert batch.inputs.shape == (20, 3, 32, 32)
    assert torch.equal(torch.bincount(batch.targets, minlength=4), torch.full((4,), 5))
    assert torch.equal(batch.meta["source"], torch.arange(5).repeat_interleave(4))


def test_random_mode_labels_are_balanced() -> None:
    collator = sslpipe.create_collator("rotation", size=16, mode="random", seed=3)
    counts = torch.zeros(4)
    for _ in range(20):
        counts += torch.bincount(collator(_square_batch(50, 16)).targets, minlength=4)
    share = counts / counts.sum()
    # 1000 draws: each class within 4 standard deviations of 1/4
    assert torch.all((share - 0.25).abs() < 4 * (0.25 * 0.75 / 1000) ** 0.5)


def test_non_square_images_use_the_centre_square() -> None:
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, 10:30] = 255  # the centre 20x20 square is white, the sides black
    batch = sslpipe.create_collator("rotation", size=20, mode="random", crop="center",
                                    flip=0.0)([wide])
    assert batch.meta["boxes"].tolist() == [[10.0, 0.0, 30.0, 20.0]]
    assert torch.allclose(
        batch.inputs, normalize(torch.full((1, 3, 20, 20), 255, dtype=torch.uint8))
    )


def test_random_crop_policy_stays_inside_the_image() -> None:
    sizes = [(30, 50), (64, 20)]
    images = [np.zeros((h, w, 3), dtype=np.uint8) for h, w in sizes]
    batch = sslpipe.create_collator("rotation", size=16, crop="random", seed=0)(images)
    for (h, w), (x0, y0, x1, y1) in zip(sizes, batch.meta["boxes"].tolist()):
        assert x1 - x0 == y1 - y0 == min(h, w)
        assert x0 >= 0 and x1 <= w and y0 >= 0 and y1 <= h


def test_loss_is_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([0, 3])
    p0 = np.exp(2.0) / (np.exp(2.0) + 1 + np.exp(-1.0) + np.exp(0.5))
    expected = (-np.log(p0) - np.log(0.25)) / 2
    assert rotation_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    assert F.cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "bad", [{"size": 0}, {"mode": "some"}, {"crop": "left"}, {"flip": 2.0}, {"head": "conv"},
            {"crop_scale": (0.5, 1.5)}, {"crop_scale": (0.0, 1.0)}, {"crop_ratio": (2.0, 1.0)}]
)
def test_wrong_options_are_value_errors(bad: dict) -> None:
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        sslpipe.create_task("rotation", **bad)


class _Images(Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int):
        rng = np.random.default_rng(i)
        return Image.fromarray(rng.integers(0, 256, (24 + i, 30, 3), dtype=np.uint8)), i % 10


def test_works_as_collate_fn_with_two_workers() -> None:
    collator = sslpipe.create_collator("rotation", size=24, mode="random", seed=0)
    loader = DataLoader(_Images(), batch_size=4, num_workers=2, collate_fn=collator)
    batches = list(loader)
    assert len(batches) == 4
    assert all(b.inputs.shape == (4, 3, 24, 24) for b in batches)
    assert torch.equal(torch.cat([b.labels for b in batches]), torch.arange(16) % 10)
    # the two workers draw different rotations, but a second epoch reproduces the first
    again = list(DataLoader(_Images(), batch_size=4, num_workers=2, collate_fn=collator))
    assert all(torch.equal(a.targets, b.targets) for a, b in zip(batches, again))
    assert not all(torch.equal(batches[0].targets, b.targets) for b in batches[1:])


def test_all_rotations_equals_rot90_of_repeated_images() -> None:
    from sslpipe.ops.geometry import all_rotations

    x = _square_batch(3, 7)
    expected = rot90(x.repeat_interleave(4, dim=0), torch.arange(4).repeat(3))
    assert torch.equal(all_rotations(x), expected)


def test_defaults_are_the_official_imagenet_setting() -> None:
    opt = sslpipe.create_task("rotation").options  # RandomSizedCrop(224) + RandomHorizontalFlip
    assert (opt.size, opt.crop, opt.crop_scale, opt.flip, opt.mode) == (
        224, "random_resized", (0.08, 1.0), 0.5, "all")
    assert opt.crop_ratio == pytest.approx((3 / 4, 4 / 3))


def test_random_resized_boxes_lie_inside_and_flip_is_recorded_and_applied() -> None:
    g = torch.Generator().manual_seed(4)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
              for h, w in [(40, 60), (64, 30), (50, 50), (33, 90)] * 4]
    batch = sslpipe.create_collator("rotation", size=24, seed=2)(images)
    boxes, flip = batch.meta["boxes"], batch.meta["flip"]
    assert boxes.shape == (16, 4) and flip.dtype == torch.bool and flip.shape == (16,)
    for (x0, y0, x1, y1), im in zip(boxes.tolist(), images):
        h, w = im.shape[1:]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        area = (x1 - x0) * (y1 - y0) / (h * w)
        assert 0.08 - 0.05 <= area <= 1.0  # rounding of small boxes
    assert 0 < int(flip.sum()) < 16  # both outcomes happen in 16 draws at p = 1/2 (seeded)
    assert not all(b == [0, 0, im.shape[2], im.shape[1]]
                   for b, im in zip(boxes.tolist(), images))  # not whole images
    # undoing the rotation, then the recorded flip, gives the recorded box resized
    crops = normalize(hflip(resized_crop(images, boxes, 24), flip))
    back = rot90(batch.inputs, -batch.targets)
    assert torch.equal(back, crops[batch.meta["source"]])


def test_seed_reproduces_a_batch_with_the_default_crops() -> None:
    images = [_square_batch(1, 40)[0], torch.zeros(3, 30, 50, dtype=torch.uint8)]
    a = sslpipe.create_collator("rotation", size=16, seed=9)(images)
    b = sslpipe.create_collator("rotation", size=16, seed=9)(images)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.meta["boxes"], b.meta["boxes"])
    assert torch.equal(a.meta["flip"], b.meta["flip"])
    c = sslpipe.create_collator("rotation", size=16, seed=10)(images)
    assert not torch.equal(a.meta["boxes"], c.meta["boxes"])
