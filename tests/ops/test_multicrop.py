"""Multi-crop in one batch: boxes recorded and inside the image, each crop the direct crop and
resize of its recorded box, a seed reproducing a batch, sizes and scales as asked, several
size groups, one decode per image, and the host / device split equal to one call."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import sslpipe.tasks.dino  # noqa: F401  (registers "dino")
from sslpipe import create_task
from sslpipe.ops.augment import ViewAugment
from sslpipe.ops.color import normalize
from sslpipe.ops.geometry import resized_crop
from sslpipe.ops.images import collect
from sslpipe.ops.multicrop import (
    CropSet,
    apply_crop_sets,
    local_size_for,
    multi_crop,
    sample_crop_sets,
)

PLAIN = ViewAugment(flip=0.0, jitter_p=0.0, grayscale=0.0, blur=0.0, solarize=0.0)
NO_COLOUR = {"flip": 0.0, "jitter_p": 0.0, "grayscale": 0.0, "blur": (0.0, 0.0),
             "local_blur": 0.0, "solarize": (0.0, 0.0)}


def _ragged(n: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, 60 + 9 * i, 90 - 7 * i), generator=g, dtype=torch.uint8)
            for i in range(n)]


def _jpeg(h: int, w: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 17 + c) + np.cos(yy / 23 - c) for c in range(3)], -1)
    pixels = ((base + 2) * 60 + rng.integers(0, 8, (h, w, 3))).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _sets(global_size: int = 32, local_size: int = 12, local: int = 5) -> list[CropSet]:
    return [CropSet("global", global_size, (0.4, 1.0), (PLAIN, PLAIN)),
            CropSet("local", local_size, (0.05, 0.4), (PLAIN,) * local)]


def test_boxes_are_recorded_and_inside_each_image():
    images = _ragged(5)
    pixels, meta = sample_crop_sets(images, _sets(), torch.Generator().manual_seed(0))
    assert pixels["global"].shape == (10, 3, 32, 32) and pixels["local"].shape == (25, 3, 12, 12)
    for name, count in (("global", 2), ("local", 5)):
        boxes = meta[f"{name}_boxes"].view(count, 5, 4)
        for i, image in enumerate(images):
            h, w = image.shape[-2:]
            b = boxes[:, i]
            assert bool((b[:, 0] >= 0).all() and (b[:, 1] >= 0).all())
            assert bool((b[:, 2] <= w).all() and (b[:, 3] <= h).all())
            assert bool((b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all())
        assert meta[f"{name}_flip"].shape == (count * 5,)
    assert meta["decode_scale"].tolist() == [1] * 5


@pytest.mark.parametrize("stacked", [False, True])
def test_each_crop_is_the_direct_crop_and_resize_of_its_box(stacked):
    images = _ragged(4)
    source = torch.stack([im[:, :60, :60] for im in images]) if stacked else images
    pixels, meta = sample_crop_sets(source, _sets(), torch.Generator().manual_seed(3))
    for name, count, size in (("global", 2, 32), ("local", 5, 12)):
        boxes = meta[f"{name}_boxes"]
        for k in range(count):
            rows = slice(k * 4, (k + 1) * 4)
            direct = resized_crop(source, boxes[rows], size)
            assert torch.equal(pixels[name][rows], direct), (name, k)


def test_without_colour_ops_the_task_inputs_are_the_normalised_crops():
    images = _ragged(3)
    task = create_task("dino", size=32, local_size=12, local_crops=4, seed=1, **NO_COLOUR)
    batch = task.collator(images)
    for x, name, size in zip(batch.inputs, ("global", "local"), (32, 12)):
        crops = torch.cat([resized_crop(images, b, size)
                           for b in batch.meta[f"{name}_boxes"].split(3)])
        torch.testing.assert_close(x, normalize(crops), atol=1e-5, rtol=1e-5)


def test_a_seed_reproduces_a_batch_and_another_differs():
    images = _ragged(4)
    a = create_task("dino", size=32, seed=7).collator(images)
    b = create_task("dino", size=32, seed=7).collator(images)
    c = create_task("dino", size=32, seed=8).collator(images)
    assert all(torch.equal(x, y) for x, y in zip(a.inputs, b.inputs))
    assert all(torch.equal(a.meta[k], b.meta[k]) for k in a.meta)
    assert not torch.equal(a.meta["local_boxes"], c.meta["local_boxes"])


def test_sizes_and_scales_as_asked():
    images = [torch.zeros(3, 200, 300, dtype=torch.uint8)] * 64
    sets = [CropSet("big", 40, (0.4, 1.0), (PLAIN,) * 2),
            CropSet("small", 16, (0.05, 0.14), (PLAIN,) * 3, ratio=(0.5, 2.0))]
    pixels, meta = sample_crop_sets(images, sets, torch.Generator().manual_seed(0))
    assert pixels["big"].shape == (128, 3, 40, 40) and pixels["small"].shape == (192, 3, 16, 16)
    for name, (lo, hi), (rlo, rhi) in (("big", (0.4, 1.0), (0.75, 4 / 3)),
                                       ("small", (0.05, 0.14), (0.5, 2.0))):
        b = meta[f"{name}_boxes"]
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        area = w * h / (200 * 300)
        # integer box sides: a side is within 0.5 px of the drawn one
        assert float(area.min()) >= lo * 0.97 and float(area.max()) <= hi * 1.03
        assert float((w / h).min()) >= rlo * 0.95 and float((w / h).max()) <= rhi * 1.05
        assert float(area.max() - area.min()) > (hi - lo) / 2  # the whole range is drawn
    assert local_size_for(224) == 96 and local_size_for(32) == 14


def test_several_size_groups_in_set_order():
    images = _ragged(3)
    sets = [CropSet("a", 24, (0.3, 1.0), (PLAIN,)), CropSet("b", 10, (0.1, 0.3), (PLAIN,) * 2),
            CropSet("c", 24, (0.2, 0.5), (PLAIN,) * 3), CropSet("d", 17, (0.1, 1.0), (PLAIN,))]
    pixels, meta = sample_crop_sets(images, sets, torch.Generator().manual_seed(0))
    assert [tuple(pixels[s.name].shape) for s in sets] == [
        (3, 3, 24, 24), (6, 3, 10, 10), (9, 3, 24, 24), (3, 3, 17, 17)]
    out = apply_crop_sets(pixels, meta, sets, (0.5,) * 3, (0.25,) * 3)
    assert [o.shape[0] for o in out] == [3, 6, 9, 3] and all(o.dtype == torch.float32
                                                             for o in out)
    with pytest.raises(ValueError, match="distinct"):
        sample_crop_sets(images, [sets[0], sets[0]], None)
    with pytest.raises(ValueError, match="as many"):
        multi_crop(images, [meta["a_boxes"]], [24, 10])


def test_one_decode_per_image_at_the_scale_every_crop_allows():
    data = [_jpeg(400, 480, seed=i) for i in range(3)]
    images = collect(data, decode=False).images
    g = torch.Generator().manual_seed(0)
    sets = [CropSet("global", 32, (0.4, 1.0), (PLAIN,) * 2),
            CropSet("local", 14, (0.05, 0.4), (PLAIN,) * 4)]
    pixels, meta = sample_crop_sets(images, sets, g)
    scale = meta["decode_scale"]
    assert int(scale.max()) > 1
    for name, size, count in (("global", 32, 2), ("local", 14, 4)):
        b = meta[f"{name}_boxes"].view(count, 3, 4)
        side = torch.minimum(b[..., 2] - b[..., 0], b[..., 3] - b[..., 1])
        assert bool((side >= scale * size).all())  # no crop upscaled by the reduction
    full = collect(data).images
    for name, size in (("global", 32), ("local", 14)):
        direct = torch.cat([resized_crop(full, b, size) for b in meta[f"{name}_boxes"].split(3)])
        diff = (pixels[name].float() - direct.float()).abs().mean()
        # decoded at 1/8 by IDCT scaling instead of resized: a few gray levels apart on average
        # (boxes 10 px off would be about 20 apart)
        assert float(diff) < 8.0


@pytest.mark.parametrize("name,options", [("dino", {}), ("simclr", {"multi_crop": 3}),
                                          ("vicreg", {"multi_crop": 2})])
def test_host_device_split_equals_one_call(name, options):
    samples = [(_jpeg(90 + 10 * i, 120, seed=i), i) for i in range(3)]
    fused = create_task(name, size=32, seed=4, **options).collator(samples)
    collator = create_task(name, size=32, seed=4, **options).collator
    host = collator.host_stage(samples)
    assert all(x.dtype == torch.uint8 for x in host.pixels.values())
    split = collator.device_stage(pickle.loads(pickle.dumps(host)))
    assert len(fused.inputs) == len(split.inputs) == (2 if name == "dino" else 3)
    assert all(torch.equal(x, y) for x, y in zip(fused.inputs, split.inputs))
    assert sorted(fused.meta) == sorted(split.meta)
    assert all(torch.equal(fused.meta[k], split.meta[k]) for k in fused.meta)


def test_crop_set_checks():
    with pytest.raises(ValueError, match="scale"):
        CropSet("x", 8, (0.5, 0.2), (PLAIN,))
    with pytest.raises(ValueError, match="at least one"):
        CropSet("x", 8, (0.1, 0.2), ())
    with pytest.raises(ValueError, match="blur_kernel"):
        CropSet("x", 8, (0.1, 0.2), (PLAIN, ViewAugment(blur_kernel=5)))


def _ordered_pairs(num_crops: int) -> list[tuple[int, int]]:
    """SwAV's and DINO's rule: every crop against each global view other than itself."""
    return [(g, c) for g in (0, 1) for c in range(num_crops) if c != g]


@pytest.mark.parametrize("name", ["simclr", "vicreg", "byol"])
def test_multi_crop_loss_is_the_mean_over_the_crop_pairs(name):
    import timm

    from sslpipe.tasks.byol import _regression, byol_loss
    from sslpipe.tasks.simclr import nt_xent
    from sslpipe.tasks.vicreg import vicreg_loss

    widths = {"simclr": {"hidden_dim": 16, "projection_dim": 8},
              "vicreg": {"expander_dim": 16},
              "byol": {"hidden_dim": 16, "projection_dim": 8, "predictor_dim": 16}}[name]
    images = _ragged(4)
    for local in (0, 3):
        task = create_task(name, size=32, seed=0, multi_crop=local, **widths)
        batch = task.collator(images)
        assert len(batch.inputs) == 2 + (local > 0)
        if local:
            assert batch.inputs[2].shape == (local * 4, 3, 14, 14)
        torch.manual_seed(0)
        model = task.build(timm.create_model("resnet18", num_classes=0))
        out = model(batch.inputs)
        if name == "byol":
            qs = [out.q1, out.q2, *([] if out.q_local is None else out.q_local.split(4))]
            terms = [_regression(qs[c], (out.k1, out.k2)[g]) for g, c in _ordered_pairs(len(qs))]
            expected = 2 * sum(terms) / len(terms)
            if not local:
                torch.testing.assert_close(expected, byol_loss(out.q1, out.q2, out.k1, out.k2))
        else:
            zs = [out[0], out[1], *(out[2].split(4) if local else [])]
            pair = ((lambda a, b: nt_xent(a, b, 0.1)) if name == "simclr"
                    else (lambda a, b: vicreg_loss(a, b)))
            terms = [pair(zs[g], zs[c]) for g, c in _ordered_pairs(len(zs))]
            expected = sum(terms) / len(terms)
        torch.testing.assert_close(task.loss(out, batch), expected, rtol=1e-5, atol=1e-6)
