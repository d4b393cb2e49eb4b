"""Tests of sslpipe.ops.tiling: jittered grid tiles with gaps, one gather."""

from __future__ import annotations

import pytest
import torch

from sslpipe.ops.tiling import assemble_grid, extract_tiles, tile_boxes, tile_origins


def _reference_tiles(x: torch.Tensor, origins: torch.Tensor, tile: int) -> torch.Tensor:
    b, k = origins.shape[:2]
    c = x.shape[1]
    if origins.ndim == 3:
        origins = origins.unsqueeze(2).expand(-1, -1, c, -1)
    out = torch.empty(b, k, c, tile, tile, dtype=x.dtype)
    for i in range(b):
        for j in range(k):
            for ch in range(c):
                ox, oy = origins[i, j, ch].tolist()
                out[i, j, ch] = x[i, ch, oy:oy + tile, ox:ox + tile]
    return out


def test_extract_tiles_matches_slicing() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 30, 30), dtype=torch.uint8, generator=g)
    origins = tile_origins(2, 3, 10, 7, generator=g)
    tiles = extract_tiles(x, origins, 7)
    assert tiles.shape == (2, 9, 3, 7, 7) and tiles.dtype == torch.uint8
    assert torch.equal(tiles, _reference_tiles(x, origins, 7))


def test_extract_tiles_per_channel_origins() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 24, 24, generator=g)
    origins = torch.randint(0, 24 - 5 + 1, (2, 4, 3, 2), generator=g)
    assert torch.equal(extract_tiles(x, origins, 5), _reference_tiles(x, origins, 5))


def test_origins_stay_in_their_cells_with_gaps() -> None:
    g = torch.Generator().manual_seed(2)
    grid, cell, tile = 3, 12, 9
    origins = tile_origins(64, grid, cell, tile, generator=g)
    k = torch.arange(grid * grid)
    col, row = k % grid, k // grid
    ox, oy = origins[..., 0], origins[..., 1]
    assert ((ox >= col * cell) & (ox + tile <= (col + 1) * cell)).all()
    assert ((oy >= row * cell) & (oy + tile <= (row + 1) * cell)).all()
    # whole-cell jitter reaches both ends of the slack
    dx = ox - col * cell
    assert int(dx.min()) == 0 and int(dx.max()) == cell - tile


def test_jitter_bounds_and_centring() -> None:
    g = torch.Generator().manual_seed(3)
    centred = tile_origins(4, 3, 20, 10, jitter=0, generator=g)
    assert torch.equal(centred[0], centred[3])
    assert int(centred[0, 0, 0]) == 5
    jittered = tile_origins(256, 3, 20, 10, jitter=2, generator=g)
    offset = jittered - centred[:1]
    assert int(offset.abs().max()) == 2


def test_seed_reproduces_origins() -> None:
    a = tile_origins(5, 3, 10, 8, generator=torch.Generator().manual_seed(7))
    b = tile_origins(5, 3, 10, 8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_boxes_and_assemble() -> None:
    origins = torch.tensor([[[0, 0], [10, 0], [0, 10], [10, 10]]])
    boxes = tile_boxes(origins, 4)
    assert boxes[0, 3].tolist() == [10.0, 10.0, 14.0, 14.0]
    tiles = torch.arange(4, dtype=torch.float32).view(1, 4, 1, 1, 1).expand(1, 4, 1, 2, 2)
    pic = assemble_grid(tiles, 2, gap=1, fill=-1.0)
    assert pic.shape == (1, 1, 5, 5)
    assert pic[0, 0, 0, 0] == 0 and pic[0, 0, 0, 3] == 1 and pic[0, 0, 3, 0] == 2
    assert pic[0, 0, 4, 4] == 3 and pic[0, 0, 2, 2] == -1


@pytest.mark.parametrize("kwargs", [dict(tile=11), dict(tile=0), dict(grid=0), dict(jitter=-1)])
def test_bad_grid_options(kwargs: dict) -> None:
    args = dict(grid=3, cell=10, tile=8) | kwargs
    with pytest.raises(ValueError):
        tile_origins(2, generator=None, **args)


def test_tile_outside_image_is_an_error() -> None:
    x = torch.zeros(1, 3, 10, 10)
    with pytest.raises(ValueError, match="inside"):
        extract_tiles(x, torch.tensor([[[5, 0]]]), 6)
    with pytest.raises(ValueError, match="origins"):
        extract_tiles(x, torch.zeros(2, 1, 2, dtype=torch.long), 4)
