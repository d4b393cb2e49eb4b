"""Pixelation and per-patch standardisation (deepcontext's prep_image, Doersch et al. 2015)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sslpipe.ops.degrade import pixelate, sample_pixelation, standardize_patches


def _patches(n: int = 6, c: int = 3, p: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, p, p, generator=torch.Generator().manual_seed(seed))


def test_pixelate_equals_bilinear_down_then_up_for_every_side() -> None:
    x = _patches(24)
    side = torch.arange(1, 25)  # every side from 1 px to the patch itself
    out = pixelate(x, side)
    for i, k in enumerate(side.tolist()):
        small = F.interpolate(x[i:i + 1], size=(k, k), mode="bilinear", align_corners=False)
        back = F.interpolate(small, size=(24, 24), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[i:i + 1], back, atol=1e-4, rtol=0)
    assert torch.equal(out[-1], x[-1])  # side == p: unchanged, exactly


def test_a_one_pixel_side_is_the_patch_mean_colour_and_a_small_side_has_low_rank() -> None:
    x = _patches(2)
    out = pixelate(x, torch.tensor([1, 5]))
    # bilinear to 1 px reads the two centre samples of each axis (no anti-alias filter)
    centre = x[0, :, 11:13, 11:13].mean(dim=(-2, -1))
    torch.testing.assert_close(out[0], centre.view(3, 1, 1).expand(3, 24, 24))
    ranks = [int(torch.linalg.matrix_rank(out[1, c].double(), atol=1e-5)) for c in range(3)]
    assert max(ranks) <= 5 and min(ranks) == 5


def test_sample_pixelation_follows_the_official_rule() -> None:
    g = torch.Generator().manual_seed(0)
    n = 20000
    side = sample_pixelation(n, 96, 0.33, 10, g)
    hit = side < 96
    share = float(hit.float().mean())
    assert abs(share - 0.33) < 4 * (0.33 * 0.67 / n) ** 0.5  # 4 binomial standard deviations
    drawn = side[hit].double()
    assert int(drawn.min()) == 10 and int(drawn.max()) == 94  # 100 pixels .. 94 x 94
    # the area (not the side) is uniform: floor(sqrt(a)) with a uniform in [100, 9025)
    area = drawn.square()
    expected = sum(k * k * ((k + 1) ** 2 - k * k) for k in range(10, 95)) / (95**2 - 100)
    sd = ((area - area.mean()).square().mean().sqrt() / len(area) ** 0.5).item()
    assert abs(area.mean().item() - expected) < 4 * sd
    assert torch.equal(sample_pixelation(50, 96, 0.0, 10, g), torch.full((50,), 96))


def test_sample_pixelation_is_reproducible_and_checks_arguments() -> None:
    a = sample_pixelation(64, 32, 0.5, 3, torch.Generator().manual_seed(7))
    b = sample_pixelation(64, 32, 0.5, 3, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="p must"):
        sample_pixelation(4, 32, 1.2)
    with pytest.raises(ValueError, match="min_side"):
        sample_pixelation(4, 32, 0.5, 32)


def test_standardize_patches_zero_mean_unit_rms() -> None:
    x = _patches() * 3 + torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1)
    out = standardize_patches(x)
    assert float(out.mean(dim=(-2, -1)).abs().max()) < 1e-5
    torch.testing.assert_close(out.square().mean(dim=(1, 2, 3)), torch.ones(6))
    # a hand-made patch: channels [0, 2] and [4, 4] -> [-1, 1] and [0, 0], RMS sqrt(1/2)
    hand = torch.tensor([[[[0.0, 2.0]], [[4.0, 4.0]]]])
    expected = torch.tensor([[[[-1.0, 1.0]], [[0.0, 0.0]]]]) * 2**0.5
    torch.testing.assert_close(standardize_patches(hand), expected)
    torch.testing.assert_close(standardize_patches(hand, rms=False),
                               torch.tensor([[[[-1.0, 1.0]], [[0.0, 0.0]]]]))
    assert torch.equal(standardize_patches(torch.full((1, 3, 4, 4), 5.0)),
                       torch.zeros(1, 3, 4, 4))


def test_pixelate_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="x must"):
        pixelate(torch.zeros(2, 3, 4, 5), torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="side must"):
        pixelate(torch.zeros(2, 3, 4, 4), torch.tensor([2]))
