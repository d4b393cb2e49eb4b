"""ops.geometry and ops.crops: crop boxes follow their definitions, resized crops agree across
methods."""

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


def test_random_resized_crop_fallback_is_the_centre_crop_of_the_closest_ratio() -> None:
    # no draw can fit a 2 x 500 strip or a 500 x 2 one at ratio 3/4..4/3 with scale >= 0.9:
    # torchvision then takes the centre crop clipped to the nearest allowed ratio
    boxes = random_resized_crop_boxes([(2, 500), (500, 2), (10, 10)],
                                      torch.Generator().manual_seed(0), scale=(0.9, 1.0))
    assert boxes[0].tolist() == [248.0, 0.0, 251.0, 2.0]  # w = round(2 * 4/3) = 3, centred
    assert boxes[1].tolist() == [0.0, 248.0, 2.0, 251.0]  # h = round(2 / (3/4)) = 3
    w, h = boxes[2, 2] - boxes[2, 0], boxes[2, 3] - boxes[2, 1]
    assert 0.9 * 100 - 10 <= w * h <= 100  # a square fits: an ordinary draw


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


@pytest.mark.parametrize("method", ["interpolate", "roi_align"])
def test_crop_at_its_own_size_is_the_slice(method: str) -> None:
    # Box edges are pixel edges: a box of h x w whole pixels resized to h x w is a plain slice.
    # (roi_align with aligned=False put the box half a pixel off and averaged neighbours.)
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (2, 3, 20, 30), dtype=torch.uint8, generator=gen)
    boxes = torch.tensor([[4.0, 3, 16, 13], [0.0, 0, 12, 10]])
    out = resized_crop(x, boxes, (10, 12), method=method)
    assert torch.equal(out[0], x[0, :, 3:13, 4:16]) and torch.equal(out[1], x[1, :, :10, :12])


def test_methods_agree_to_rounding_when_upscaling() -> None:
    # Upscaling has no antialiasing to differ in: both are bilinear at the same sample points.
    # Only the outermost output pixels differ: interpolate clamps at the crop's edge, while
    # roi_align reads the image just outside the box.
    gen = torch.Generator().manual_seed(4)
    x = torch.randint(0, 256, (3, 3, 24, 32), dtype=torch.uint8, generator=gen)
    boxes = torch.tensor([[0.0, 0, 32, 24], [5.0, 2, 25, 17], [10.0, 4, 31, 23]])
    a = resized_crop(x, boxes, (48, 64), method="interpolate").int()
    b = resized_crop(x, boxes, (48, 64), method="roi_align").int()
    assert (a - b)[..., 2:-2, 2:-2].abs().max() <= 1


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
    from sslpipe.ops.crops import pad_ragged

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
    from sslpipe.ops.crops import pad_ragged

    images = [torch.randint(0, 256, (3, 20 + i, 30 - i), dtype=torch.uint8) for i in range(5)]
    cpu = pad_ragged(images, "loop")
    assert torch.equal(pad_ragged([im.cuda() for im in images]).cpu(), cpu)  # auto: nested
    boxes = torch.tensor([[1.0, 2, 20, 18]] * 5)
    a = resized_crop([im.cuda() for im in images], boxes, 8, method="roi_align").cpu()
    b = resized_crop(images, boxes, 8, method="roi_align")
    assert (a.int() - b.int()).abs().max() <= 1


def test_ragged_roi_align_equals_each_image_alone() -> None:
    # Padding must not bleed into crops that reach an image's bottom or right edge, and the
    # grouping of sizes must not change a pixel: the batch equals each image done alone.
    gen = torch.Generator().manual_seed(1)
    sizes = [(50, 60), (100, 120), (61, 37), (300, 280), (45, 45)]
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
              for h, w in sizes]
    boxes = torch.tensor([[0.0, 0, w, h] for h, w in sizes])
    boxes[2] = torch.tensor([10.0, 20, 37, 61])  # touches the right and bottom edges
    together = resized_crop(images, boxes, (16, 16), method="roi_align")
    for i, im in enumerate(images):
        alone = resized_crop(im[None], boxes[i : i + 1], (16, 16), method="roi_align")
        assert torch.equal(together[i], alone[0]), i
    constant = [torch.full((3, 50, 60), 200, dtype=torch.uint8),
                torch.full((3, 100, 120), 100, dtype=torch.uint8)]
    out = resized_crop(constant, torch.tensor([[0.0, 0, 60, 50], [0, 0, 120, 100]]), 16,
                       method="roi_align")
    assert torch.all(out[0] == 200) and torch.all(out[1] == 100)


def test_size_groups_isolate_outliers_and_split_orientations() -> None:
    from sslpipe.ops.crops import size_groups

    sizes = [(375, 500)] * 6 + [(500, 375)] * 4 + [(3000, 4000)]
    groups = size_groups(sizes)
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
    assert [10] in groups  # the 3000 x 4000 photo alone
    assert sorted(map(sorted, groups)) == [list(range(6)), list(range(6, 10)), [10]]
    assert size_groups([(32, 32)] * 5) == [[0, 1, 2, 3, 4]]
    # typical shards (shorter side 256): few groups (padding 484 x 484 is < 4x a 256 x 256)
    mixed = [(256, 256 + 12 * i) for i in range(20)] + [(256 + 12 * i, 256) for i in range(20)]
    assert len(size_groups(mixed)) == 1
    ragged = [(h, w) for h in (100, 200, 300) for w in (90, 250, 400)]
    for group in size_groups(ragged, 2.0):
        padded = max(ragged[i][0] for i in group) * max(ragged[i][1] for i in group)
        assert all(padded <= 2.0 * ragged[i][0] * ragged[i][1] for i in group)


def test_pad_ragged_edge_fill_repeats_the_last_row_and_column() -> None:
    from sslpipe.ops.crops import pad_ragged

    images = [torch.arange(6, dtype=torch.uint8).view(1, 2, 3),
              torch.zeros(1, 4, 5, dtype=torch.uint8)]
    for method in ("loop", "nested"):
        out = pad_ragged(images, method, fill="edge")
        assert out[0, 0, 2, :3].tolist() == [3.0, 4.0, 5.0]  # row below = last row
        assert out[0, 0, :2, 3].tolist() == [2.0, 5.0]  # column right = last column
        assert out[0, 0, 2, 3] == 5.0 and out[0, 0, 3, 4] == 0.0
    with pytest.raises(ValueError, match="fill must be"):
        pad_ragged(images, fill="reflect")


def test_all_views_from_one_padding_equal_one_view_at_a_time() -> None:
    from sslpipe.ops.crops import _crop_roi_align_views

    gen = torch.Generator().manual_seed(2)
    sizes = [(40, 60), (64, 48), (400, 500), (33, 33)]
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
              for h, w in sizes]
    views = [random_resized_crop_boxes(sizes, gen, scale=(0.2, 1.0)) for _ in range(3)]
    together = _crop_roi_align_views(images, views, (12, 16))
    assert len(together) == 3
    for v, boxes in enumerate(views):
        assert torch.equal(together[v], resized_crop(images, boxes, (12, 16), "roi_align"))
