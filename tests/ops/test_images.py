"""ops.images.collect: every input kind becomes uint8 RGB, errors name the sample."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from sslpipe.ops.images import collect, decode


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(array)
    if mode:
        img = img.convert(mode)
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_uniform_sizes_stack_and_ragged_stay_a_list() -> None:
    a = np.zeros((8, 10, 3), dtype=np.uint8)
    assert isinstance(collect([a, a]).images, torch.Tensor)
    ragged = collect([a, np.zeros((9, 10, 3), dtype=np.uint8)])
    assert isinstance(ragged.images, list) and ragged.sizes() == [(8, 10), (9, 10)]


def test_every_kind_decodes_to_the_same_pixels() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    kinds = [
        rgb,
        Image.fromarray(rgb),
        torch.from_numpy(rgb).permute(2, 0, 1),
        _png(rgb),
        {"png": _png(rgb)},
    ]
    out = collect(kinds).images
    for i in range(1, len(kinds)):
        assert torch.equal(out[i], out[0])
    assert torch.equal(out[0], torch.from_numpy(rgb).permute(2, 0, 1))


def test_gray_palette_and_alpha_become_rgb() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgba = np.dstack([np.full((3, 4, 3), 7, np.uint8), np.full((3, 4), 9, np.uint8)])
    out = collect([gray, Image.fromarray(gray).convert("P"), rgba, _png(gray, "L")]).images
    assert out.shape == (4, 3, 3, 4)
    assert torch.equal(out[0][0], out[0][2]) and torch.equal(out[0][0], torch.from_numpy(gray))
    assert torch.equal(out[3], out[0])
    assert int(out[2].max()) == 7  # alpha dropped


def test_labels_from_tuples_dicts_and_bytes() -> None:
    a = np.zeros((4, 4, 3), dtype=np.uint8)
    assert collect([(a, 1), (a, 2)]).labels.tolist() == [1, 2]
    assert collect([{"image": a, "cls": b"5\n"}]).labels.tolist() == [5]
    assert collect([a]).labels is None


def test_batch_tensor_single_channel_is_expanded() -> None:
    x = torch.zeros(2, 1, 5, 5, dtype=torch.uint8)
    assert collect(x).images.shape == (2, 3, 5, 5)


@pytest.mark.parametrize(
    "samples, match",
    [
        ([b""], r"samples\[0\].*empty"),
        ([b"not an image at all"], r"samples\[0\].*cannot decode"),
        ([np.zeros((4, 4, 3), np.float32)], r"samples\[0\].*uint8"),
        ([np.zeros((4, 4, 5), np.uint8)], r"samples\[0\]"),
        ([(np.zeros((4, 4, 3), np.uint8), "cat")], r"samples\[0\].*label"),
        ([(np.zeros((4, 4, 3), np.uint8), 1), np.zeros((4, 4, 3), np.uint8)], "every sample"),
        ("abc", "samples"),
        (torch.zeros(2, 5, 4, 4, dtype=torch.uint8), "B x C x H x W"),
    ],
)
def test_bad_inputs_name_what_was_wrong(samples, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        collect(samples)


def test_too_small_names_the_sample() -> None:
    with pytest.raises(ValueError, match=r"samples\[1\].*2x3"):
        collect([np.zeros((9, 9, 3), np.uint8), np.zeros((2, 3, 3), np.uint8)], min_size=4)


def test_truncated_jpeg_is_reported() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(buf, format="JPEG")
    with pytest.raises(ValueError, match="cannot decode"):
        decode(buf.getvalue()[:200])


def test_dct_scaled_decode_keeps_at_least_min_side() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((400, 600, 3), 100, np.uint8)).save(buf, format="JPEG")
    out = decode(buf.getvalue(), min_side=90)
    assert min(out.shape[-2:]) >= 90 and out.shape[-2] < 400
    assert decode(buf.getvalue()).shape == (3, 400, 600)
