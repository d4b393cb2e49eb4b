"""ops.geometry: crop boxes follow their definitions, resized crops agree across methods."""

from __future__ import annotations

import pytest
import torch

from sslpipe.ops.geometry import (
    center_square_boxes,
    hflip,
    random_resized_crop_boxes,
    resized_crop,
)


def test_random_resized_crop_boxes_respect_scale_and_ratio() -> None:
    g = torch.Generator().manual_seed(0)
    sizes = [(300, 400)] * 200 + [(50, 500)] * 20
    boxes = random_resized_crop_boxes(sizes, g, scale=(0.2, 0.6), ratio=(0.75, 4 / 3))
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    assert torch.all(boxes[:, :2] >= 0)
    hw = torch.tensor(sizes, dtype=torch.float32)
    assert torch.all(boxes[:, 2] <= hw[:, 1]) and torch.all(boxes[:, 3] <= hw[:, 0])
    area = (w * h)[:200] / (300 * 400)
    assert area.min() > 0.19 and area.max() < 0.61  # rounding allows a hair of slack
    ratio = (w / h)[:200]
    assert ratio.min() > 0.74 and ratio.max() < 1.35
    # the 50x500 strip cannot fit most draws: the fallback keeps ratio within bounds
    assert torch.all((w / h)[200:] <= 4 / 3 + 1 / 50 + 1e-6)  # one pixel of rounding


def test_same_generator_state_gives_same_boxes() -> None:
    sizes = [(100, 120), (64, 64)]
    a = random_resized_crop_boxes(sizes, torch.Generator().manual_seed(5))
    b = random_resized_crop_boxes(sizes, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_identity_crop_returns_the_image() -> None:
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    boxes = center_square_boxes([(16, 16)] * 2)
    assert torch.equal(resized_crop(x, boxes, 16), x)


@pytest.mark.parametrize("method", ["interpolate", "roi_align"])
def test_downscale_of_a_constant_is_the_constant(method: str) -> None:
    x = [
        torch.full((3, 90, 60), 77, dtype=torch.uint8),
        torch.full((3, 40, 50), 200, dtype=torch.uint8),
    ]
    out = resized_crop(x, torch.tensor([[0.0, 0, 60, 90], [5.0, 5, 45, 35]]), 12, method=method)
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 12, 12)
    assert torch.all(out[0] == 77) and torch.all(out[1] == 200)


def test_methods_agree_on_smooth_images() -> None:
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(128.0), indexing="ij")
    smooth = (127 + 100 * torch.sin(xx / 15) * torch.cos(yy / 11)).to(torch.uint8)
    x = smooth.expand(3, -1, -1)[None].repeat(2, 1, 1, 1)
    boxes = torch.tensor([[10.0, 5, 90, 85], [0.0, 0, 128, 96]])
    a = resized_crop(x, boxes, (32, 40), method="interpolate").float()
    b = resized_crop(x, boxes, (32, 40), method="roi_align").float()
    assert (a - b).abs().mean() < 3.0


def test_hflip_only_where_asked() -> None:
    x = torch.arange(8, dtype=torch.uint8).view(2, 1, 1, 4)
    out = hflip(x, torch.tensor([True, False]))
    assert out[0, 0, 0].tolist() == [3, 2, 1, 0] and out[1, 0, 0].tolist() == [4, 5, 6, 7]


def test_bad_boxes_and_method() -> None:
    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="boxes"):
        resized_crop(x, torch.zeros(3, 4), 4)
    with pytest.raises(ValueError, match="method"):
        resized_crop(x, center_square_boxes([(8, 8)] * 2), 4, method="nearest")


def test_pad_ragged_nested_and_loop_agree() -> None:
    from sslpipe.ops.geometry import pad_ragged

    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
              for h, w in [(7, 9), (12, 4), (5, 11)]]
    loop = pad_ragged(images, "loop")
    assert loop.shape == (3, 3, 12, 11) and loop.dtype == torch.float32
    assert torch.equal(pad_ragged(images, "nested"), loop)
    for i, im in enumerate(images):
        h, w = im.shape[-2:]
        assert torch.equal(loop[i, :, :h, :w], im.float())
        assert loop[i, :, h:].abs().sum() == 0 and loop[i, :, :, w:].abs().sum() == 0
    with pytest.raises(ValueError, match="method must be"):
        pad_ragged(images, "scatter")


@pytest.mark.gpu
def test_pad_ragged_on_cuda_matches_the_cpu() -> None:
    from sslpipe.ops.geometry import pad_ragged

    images = [torch.randint(0, 256, (3, 20 + i, 30 - i), dtype=torch.uint8) for i in range(5)]
    cpu = pad_ragged(images, "loop")
    assert torch.equal(pad_ragged([im.cuda() for im in images]).cpu(), cpu)  # auto: nested
    boxes = torch.tensor([[1.0, 2, 20, 18]] * 5)
    a = resized_crop([im.cuda() for im in images], boxes, 8, method="roi_align").cpu()
    b = resized_crop(images, boxes, 8, method="roi_align")
    assert (a.int() - b.int()).abs().max() <= 1
