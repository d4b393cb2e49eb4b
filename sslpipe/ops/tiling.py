"""Batched tile extraction on a grid, with gaps and per-tile jitter.

Shared by the patch-based pretext tasks (jigsaw, relative patch location, counting). An image
of side ``grid * cell`` is split into ``grid x grid`` cells of side ``cell``; from each cell a
``tile x tile`` tile is cut (``tile <= cell``), so neighbouring tiles are separated by a gap of
about ``cell - tile`` pixels. Each tile's position inside its cell is jittered independently,
which keeps the network from solving the task by continuing edges and lines across tiles.

Tiles are numbered row-major (``k = row * grid + col``). Tile positions ("origins") are int64
``(x, y)`` top-left pixel coordinates in the gridded image, drawn on the CPU from a
``torch.Generator`` (so one seed gives the same tiles on every device) and applied to the
images with one gather, on any device and any dtype.
"""

from __future__ import annotations

import torch


def tile_origins(
    batch: int,
    grid: int,
    cell: int,
    tile: int,
    *,
    jitter: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random top-left corners of one tile per grid cell.

    Each tile sits centred in its cell and is then moved by an independent integer offset in
    ``[-jitter, jitter]`` along x and y, clipped so that it stays inside its cell.

    Args:
        batch: number of images B.
        grid: tiles per side (``grid * grid`` tiles per image).
        cell: side of a grid cell in pixels; the image side is ``grid * cell``.
        tile: side of a tile in pixels, ``1 <= tile <= cell``.
        jitter: largest offset from the centred position in pixels; ``None`` uses the whole
            cell (a tile anywhere inside its cell, as in Noroozi & Favaro's jigsaw); 0 centres
            every tile.
        generator: CPU generator the offsets are drawn from (None: torch's global RNG).

    Returns:
        int64 ``B x grid*grid x 2`` ``(x, y)`` origins, on the CPU.
    """
    _check_grid(grid, cell, tile)
    if batch < 1:
        raise ValueError(f"batch must be >= 1. Got {batch}")
    slack = cell - tile
    centre = slack // 2
    if jitter is None:
        lo, hi = 0, slack
    else:
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0 or None. Got {jitter}")
        lo, hi = max(0, centre - jitter), min(slack, centre + jitter)
    k = grid * grid
    offsets = torch.randint(lo, hi + 1, (batch, k, 2), generator=generator)
    rows, cols = torch.div(torch.arange(k), grid, rounding_mode="floor"), torch.arange(k) % grid
    cell_origin = torch.stack([cols, rows], dim=1) * cell
    return cell_origin.unsqueeze(0) + offsets


def extract_tiles(x: torch.Tensor, origins: torch.Tensor, tile: int) -> torch.Tensor:
    """Cut ``tile x tile`` tiles out of each image at the given origins, in one gather.

    Args:
        x: ``B x C x H x W`` images, any dtype, any device.
        origins: int ``B x K x 2`` ``(x, y)`` top-left corners (one tile each), or
            ``B x K x C x 2`` to cut each channel at its own position (colour-channel jitter).
            Every tile must lie inside the image.
        tile: tile side in pixels.

    Returns:
        ``B x K x C x tile x tile`` tiles, same dtype and device as ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be B x C x H x W. Got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if origins.ndim not in (3, 4) or origins.shape[0] != b or origins.shape[-1] != 2 or (
        origins.ndim == 4 and origins.shape[2] != c
    ):
        raise ValueError(
            f"origins must be B x K x 2 or B x K x C x 2 with B={b}, C={c}. "
            f"Got shape {tuple(origins.shape)}"
        )
    if tile < 1:
        raise ValueError(f"tile must be >= 1. Got {tile}")
    ox, oy = origins[..., 0], origins[..., 1]
    if bool((ox < 0).any() or (oy < 0).any() or (ox + tile > w).any() or (oy + tile > h).any()):
        raise ValueError(
            f"origins: every {tile}x{tile} tile must lie inside the {h}x{w} image. Got x in "
            f"[{int(ox.min())}, {int(ox.max())}], y in [{int(oy.min())}, {int(oy.max())}]"
        )
    origins = origins.to(device=x.device, dtype=torch.long)
    if origins.ndim == 3:
        origins = origins.unsqueeze(2).expand(-1, -1, c, -1)
    # A strided view of every tile x tile window (no copy); indexing it copies whole tiles,
    # about 8x faster on CPU than indexing each pixel.
    windows = x.unfold(2, tile, 1).unfold(3, tile, 1)  # B x C x H' x W' x tile x tile
    bi = torch.arange(b, device=x.device).view(b, 1, 1)
    ci = torch.arange(c, device=x.device).view(1, 1, c)
    return windows[bi, ci, origins[..., 1], origins[..., 0]]


def tile_boxes(origins: torch.Tensor, tile: int) -> torch.Tensor:
    """``(x0, y0, x1, y1)`` float boxes (x1, y1 exclusive) of tiles at ``origins`` (``... x 2``)."""
    o = origins.float()
    return torch.cat([o, o + tile], dim=-1)


def assemble_grid(tiles: torch.Tensor, grid: int, gap: int = 2, fill: float = 1.0) -> torch.Tensor:
    """Lay ``B x grid*grid x C x t x t`` tiles out row-major as ``B x C x S x S`` pictures,
    ``S = grid * t + (grid - 1) * gap``, with ``fill`` between tiles (for drawing)."""
    b, k, c, th, tw = tiles.shape
    if k != grid * grid:
        raise ValueError(f"tiles must hold grid*grid={grid * grid} tiles. Got {k}")
    step_h, step_w = th + gap, tw + gap
    out = tiles.new_full((b, c, grid * step_h - gap, grid * step_w - gap), fill)
    for i in range(k):
        r, col = divmod(i, grid)
        out[:, :, r * step_h: r * step_h + th, col * step_w: col * step_w + tw] = tiles[:, i]
    return out


def _check_grid(grid: int, cell: int, tile: int) -> None:
    if grid < 1:
        raise ValueError(f"grid must be >= 1. Got {grid}")
    if cell < 1:
        raise ValueError(f"cell must be >= 1. Got {cell}")
    if not 1 <= tile <= cell:
        raise ValueError(f"tile must be between 1 and cell={cell}. Got {tile}")
