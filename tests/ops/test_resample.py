"""Tests of the Lanczos-4 resampling (OpenCV's INTER_LANCZOS4)."""

from __future__ import annotations

import math

import pytest
import torch

from sslpipe.ops.resample import lanczos_resize, lanczos_weights


def _lanczos4(t: float) -> float:
    if t == 0:
        return 1.0
    return (math.sin(math.pi * t) / (math.pi * t)) * (math.sin(math.pi * t / 4) / (math.pi * t / 4))


def test_halving_weights_by_hand() -> None:
    """Downsampling by 2: output d sits at source 2d + 0.5, between pixels 2d and 2d + 1; the
    8 taps are at distances 0.5, 1.5, 2.5, 3.5 on each side."""
    w = lanczos_weights(32, 16)
    raw = [_lanczos4(abs(2 * 8 + 0.5 - j)) for j in range(2 * 8 - 3, 2 * 8 + 5)]
    expected = torch.tensor(raw, dtype=torch.float64) / sum(raw)
    torch.testing.assert_close(w[8, 13:21], expected)
    assert float(w[8, :13].abs().sum() + w[8, 21:].abs().sum()) == 0.0
    assert (w[8, 16:17] > 0).all() and (w[8, 13] < 0)  # main lobe positive, outer lobe negative
    torch.testing.assert_close(w.sum(1), torch.ones(16, dtype=torch.float64))


def test_edges_repeat_the_border_pixel() -> None:
    w = lanczos_weights(8, 4)
    raw = [_lanczos4(abs(0.5 - j)) for j in range(-3, 5)]
    # taps -3..-1 fall on pixel 0
    expected0 = (sum(raw[:4])) / sum(raw)
    assert float(w[0, 0]) == pytest.approx(expected0)


def test_resize_is_separable_and_keeps_constants() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 12, 20, generator=g, dtype=torch.float64)
    out = lanczos_resize(x, (6, 10))
    wh, ww = lanczos_weights(12, 6), lanczos_weights(20, 10)
    ref = torch.einsum("ih,bchw,jw->bcij", wh, x, ww)
    torch.testing.assert_close(out, ref)
    flat = torch.full((1, 3, 10, 10), 77, dtype=torch.uint8)
    torch.testing.assert_close(lanczos_resize(flat, 5), torch.full((1, 3, 5, 5), 77.0))
    assert lanczos_resize(flat, 5).dtype == torch.float32
    with pytest.raises(ValueError, match="B x C x H x W"):
        lanczos_resize(torch.zeros(3, 4, 4), 2)
