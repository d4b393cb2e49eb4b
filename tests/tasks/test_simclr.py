"""SimCLR: NT-Xent against the paper's formula, the two-view collator, DCT-scaled decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from sslpipe import create_task
from sslpipe.ops.color import normalize
from sslpipe.ops.geometry import resized_crop
from sslpipe.ops.images import EncodedImage, collect
from sslpipe.tasks.simclr import nt_xent


def _jpeg(h: int, w: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    # smooth content, so that reduced-scale decoding is close to a full decode and resize
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 17 + c) + np.cos(yy / 23 - c) for c in range(3)], -1)
    pixels = ((base + 2) * 60 + rng.integers(0, 8, (h, w, 3))).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    z = torch.cat([z1, z2])
    n2 = z.shape[0]
    b = n2 // 2

    def sim(i: int, j: int) -> torch.Tensor:
        return torch.dot(z[i], z[j]) / (z[i].norm() * z[j].norm())

    total = z.new_zeros(())
    for i in range(n2):
        p = (i + b) % n2
        denom = sum(torch.exp(sim(i, k) / t) for k in range(n2) if k != i)
        total = total - torch.log(torch.exp(sim(i, p) / t) / denom)
    return total / n2


def test_nt_xent_equals_paper_formula_and_gradient():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    z2 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    b1, b2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    ours = nt_xent(a1.float(), a2.float(), temperature=0.5)
    ref = _naive_nt_xent(b1, b2, 0.5)
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(a1.grad, b1.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a2.grad, b2.grad, atol=1e-5, rtol=1e-4)


def test_nt_xent_hand_made_case():
    # two images, orthogonal unit embeddings, views identical: every anchor sees its partner
    # at cosine 1 and the two others at cosine 0
    z = torch.eye(2)
    t = 0.5
    expected = -np.log(np.exp(1 / t) / (np.exp(1 / t) + 2.0))
    assert abs(float(nt_xent(z, z, t)) - expected) < 1e-6
    with pytest.raises(ValueError, match="z1 and z2"):
        nt_xent(torch.zeros(2, 3), torch.zeros(3, 3))


def test_collator_layout_and_seed():
    images = [torch.randint(0, 256, (3, 70 + 10 * i, 90), dtype=torch.uint8) for i in range(3)]
    samples = [(im, i) for i, im in enumerate(images)]
    a = create_task("simclr", size=32, seed=5).collator(samples)
    b = create_task("simclr", size=32, seed=5).collator(samples)
    assert isinstance(a.inputs, tuple) and len(a.inputs) == 2
    assert a.inputs[0].shape == (3, 3, 32, 32) and a.targets is None
    assert a.labels.tolist() == [0, 1, 2]
    assert all(torch.equal(x, y) for x, y in zip(a.inputs, b.inputs))
    for v in (1, 2):
        boxes = a.meta[f"view{v}_boxes"]
        assert boxes.shape == (3, 4) and bool((boxes[:, 2] <= 90).all())
        assert not bool(a.meta[f"view{v}_blur_sigma"].any())  # no blur below 96 px
    assert not torch.equal(a.meta["view1_boxes"], a.meta["view2_boxes"])


def test_plain_policy_view_is_the_recorded_crop():
    x = torch.randint(0, 256, (4, 3, 50, 60), dtype=torch.uint8)
    task = create_task("simclr", size=24, seed=1, strength=0.0, flip=0.0, grayscale=0.0, blur=0.0)
    batch = task.collator(x)
    for v in (1, 2):
        crop = resized_crop(x, batch.meta[f"view{v}_boxes"], 24)
        torch.testing.assert_close(batch.inputs[v - 1], normalize(crop), atol=1e-5, rtol=1e-5)


def test_dct_scaled_decode_matches_full_decode():
    data = [_jpeg(400, 480, seed=i) for i in range(3)]
    lazy = create_task("simclr", size=32, seed=2, strength=0.0, grayscale=0.0)
    full = create_task("simclr", size=32, seed=2, strength=0.0, grayscale=0.0, dct_scaling=False)
    a, b = lazy.collator(data), full.collator(data)
    assert int(a.meta["decode_scale"].max()) > 1 and int(b.meta["decode_scale"].max()) == 1
    torch.testing.assert_close(a.meta["view1_boxes"], b.meta["view1_boxes"])
    for x, y in zip(a.inputs, b.inputs):
        # same crops, decoded by IDCT scaling instead of resizing: a few gray levels apart
        assert float((x - y).abs().mean()) < 0.05


def test_encoded_image_header_and_reduced_decode():
    data = _jpeg(101, 203)
    enc = EncodedImage(data)
    assert enc.shape == (3, 101, 203) and enc.format == "JPEG"
    assert tuple(enc.decode(4).shape) == (3, 26, 51)  # ceil(101 / 4), ceil(203 / 4)
    assert torch.equal(enc.decode(1).contiguous(), collect([data]).images[0])
    images = collect([data, torch.zeros(3, 5, 5, dtype=torch.uint8)], decode=False)
    assert isinstance(images.images[0], EncodedImage) and images.sizes()[0] == (101, 203)
    with pytest.raises(ValueError, match="samples\\[0\\]"):
        collect([b"not a jpeg"], decode=False)
    with pytest.raises(ValueError, match="reduce"):
        enc.decode(3)


@pytest.mark.parametrize("options", [
    {"size": 0}, {"crop_scale": (0.5, 0.2)}, {"strength": -1.0}, {"blur": 1.5},
    {"blur_kernel": 4}, {"temperature": 0.0}, {"projection_dim": 0}, {"colour": 1},
])
def test_wrong_options_raise(options):
    with pytest.raises(ValueError):
        create_task("simclr", **options)


def test_model_forward_backward_and_metrics():
    task = create_task("simclr", size=32, seed=0, hidden_dim=32, projection_dim=8)
    batch = task.collator(torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8))
    model = task.build(timm.create_model("resnet18", num_classes=0))
    out = model(batch.inputs)
    assert out[0].shape == (4, 8) and out[1].shape == (4, 8)
    loss = task.loss(out, batch)
    loss.backward()
    assert torch.isfinite(loss) and model.backbone.conv1.weight.grad is not None
    assert 0.0 <= task.metrics(out, batch)["pretext_acc"] <= 1.0
    rows = task.visualize(batch, 2)
    assert [r[0] for r in rows] == ["view 1", "view 2"] and rows[0][1].shape == (2, 3, 32, 32)
