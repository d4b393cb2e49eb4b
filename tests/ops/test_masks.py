"""Inpainting masks and loss weights (Pathak et al. 2016, pathak22/context-encoder)."""

from __future__ import annotations

import pytest
import torch

from sslpipe.ops.masks import (
    block_masks,
    center_region,
    dilate,
    random_mask_weights,
    region_masks,
)

# a hand-made 5x5 mask: a 1-pixel hole at (1, 1)
HOLE = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
HOLE[0, 0, 1, 1] = True


def test_random_mask_weights_on_a_hand_made_mask() -> None:
    h = HOLE.float()
    assert torch.equal(random_mask_weights(HOLE, "uniform"), torch.ones(1, 1, 5, 5))
    # train_random.lua useOverlapPred=1: 10 everywhere, the hole 1
    assert torch.equal(random_mask_weights(HOLE, "context"), 10 - 9 * h)
    assert torch.equal(random_mask_weights(HOLE, "hole"), h)
    band = torch.zeros(1, 1, 5, 5)
    band[0, 0, :3, :3] = 10.0  # the 3x3 square around (1, 1): chessboard distance 1
    band[0, 0, 1, 1] = 1.0
    assert torch.equal(random_mask_weights(HOLE, "band", overlap=1), band)
    assert torch.equal(random_mask_weights(HOLE, "band", overlap=1, overlap_weight=3.0),
                       band.where(band != 10, torch.tensor(3.0)))
    with pytest.raises(ValueError, match="rule"):
        random_mask_weights(HOLE, "ring")


def test_region_masks_cover_the_share_and_are_smooth_blobs() -> None:
    g = torch.Generator().manual_seed(0)
    masks = region_masks(8, 128, 0.25, g)
    assert masks.shape == (8, 1, 128, 128) and masks.dtype == torch.bool
    torch.testing.assert_close(masks.float().mean((1, 2, 3)), torch.full((8,), 0.25),
                               atol=1 / 128**2, rtol=0)
    # blobs, not salt-and-pepper: few boundary pixels for the area (8 noise cells across)
    edges = (masks[..., 1:, :] != masks[..., :-1, :]).float().mean()
    assert float(edges) < 0.05
    again = region_masks(8, 128, 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)


def test_block_masks_reach_the_coverage_and_center_region() -> None:
    masks = block_masks(6, 64, 0.25, torch.Generator().manual_seed(1))
    share = masks.float().mean((1, 2, 3))
    assert bool((share >= 0.25).all()) and bool((share < 0.5).all())
    assert center_region(128) == (32, 64) and center_region(65) == (16, 32)


def test_dilate_by_a_square() -> None:
    assert torch.equal(dilate(HOLE, 0), HOLE)
    grown = dilate(HOLE, 1)
    expected = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    expected[0, 0, :3, :3] = True
    assert torch.equal(grown, expected)
