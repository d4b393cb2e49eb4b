"""Jigsaw puzzles (Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving
Jigsaw Puzzles", ECCV 2016; official code: github.com/MehdiNoroozi/JigsawPuzzleSolver).

The central square of the image, resized to ``size`` px (255), is split into a ``grid x grid``
grid of cells (85 px); from each cell a tile of ``round(cell * 64 / 85)`` px (64) is cut at a
random position, so tiles are separated by random gaps (up to 21 px) and edges do not continue
across them. This is the geometry of the official code (``crop_size: 255``, cells of
``crop_size / 3``, ``patch_size: 64``) and of the paper's shortcut study; the paper's method
section describes a random 225 px crop with 75 px cells instead (``size=225, tile=64,
crop="random"``). The tiles are shuffled by one of ``num_permutations`` permutations chosen to
be far apart in Hamming distance (:func:`~sslpipe.ops.permutations.permutation_set`; the
paper's rule maximises the mean distance), and the network predicts which.

Shortcuts are removed as in the paper: each tile is standardised to zero mean and unit std
(``normalize_tiles``; over the whole tile, as the paper's "each patch" and the official
``MVN across_channels``), 30 % of the puzzles are gray (``grayscale``; the whole puzzle, the
paper's "composition of grayscale and color images with a ratio of 30% to 70%") and each colour
channel of a tile is cut 0, 1 or 2 px away from the others along x and y (``channel_jitter``;
the official code's per-channel ``rand() % 3``). The authors' later code (``caffe-master-jps++``)
greys 50 % of the puzzles and applies Doersch et al.'s green-magenta projection to half of the
colour ones: ``grayscale=0.5, color_projection=0.5``. Optional per-tile brightness/saturation
jitter (``color_jitter``, not in the paper) is folded into the same 3x4 colour matrix per tile.

Convention: with permutation ``p`` (a row of the permutation set), input tile ``i`` is grid
cell ``p[i]`` (cells numbered row-major), so ``tiles[:, argsort(p)]`` is back in grid order.

Size: one task, read in one file: its 18 options (each with the paper's or the official code's
value and the check of its range), collator, model, loss and drawing. The shared machinery is in
``sslpipe.ops`` already: the tile grid (``tiling``), the permutation sets (``permutations``),
the colour matrices (``chroma``) and the per-tile standardisation (``degrade``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.batch import Batch, HostBatch
from sslpipe.ops.chroma import green_magenta_projection, tile_colour_matrices
from sslpipe.ops.color import denormalize, normalize
from sslpipe.ops.degrade import standardize_tiles
from sslpipe.ops.geometry import square_crops
from sslpipe.ops.images import Images
from sslpipe.ops.permutations import PERMUTATION_RULES, permutation_set
from sslpipe.ops.tiling import assemble_grid, extract_tiles, tile_origins
from sslpipe.registry import register_task
from sslpipe.tasks.base import (
    Collator,
    CollatorOptions,
    Task,
    check_choice,
    check_positive,
    check_probability,
    labels_on,
    meta_on,
)
from sslpipe.tasks.heads import feature_dim, mlp

# permutation_set, green_magenta_projection and standardize_tiles are re-exported from
# sslpipe.ops (permutations, chroma, degrade), where they are shared machinery
__all__ = ["Jigsaw", "JigsawCollator", "JigsawOptions", "SiameseTiles", "jigsaw_loss",
           "permutation_set", "green_magenta_projection", "standardize_tiles"]

DEFAULT_CACHE_DIR = os.environ.get("SSLPIPE_CACHE", "~/.cache/sslpipe")


@dataclass(frozen=True)
class JigsawOptions(CollatorOptions):
    """Options of the jigsaw task (defaults: Noroozi & Favaro 2016 and their official code).

    Attributes:
        size: side of the square crop in pixels (the official code: 255); cells are
            ``size // grid``.
        grid: tiles per side (``grid * grid`` tiles).
        num_permutations: size of the permutation set (classes); the paper's best: 1000.
        permutation_rule: how the greedy set is grown: ``"mean"`` adds the permutation with the
            largest mean Hamming distance to the set (the paper's Algorithm 1), ``"min"`` the
            one with the largest minimum distance (max-min; a larger minimum distance).
        permutation_seed: seed of the greedy permutation set (keep it to compare runs).
        tile: tile side in pixels; None uses ``round(cell * 64 / 85)`` (the official 64 px
            tiles in 85 px cells).
        jitter: tile position inside its cell: True anywhere (random gaps), False centred.
        crop: square-crop policy for the source image: ``"center"`` (the paper's central
            square, against chromatic aberration, which grows towards the borders) or
            ``"random"``.
        normalize_tiles: standardise each tile (zero mean, unit std) in place of the dataset's
            ``mean`` / ``std``, which are then not used.
        normalize_over: ``"tile"``: one mean and std per tile, over its channels and pixels
            (the official ``MVN across_channels``); ``"channel"``: per channel of each tile.
        grayscale: probability that a puzzle (``grayscale_per="puzzle"``) or a tile
            (``"tile"``) is gray: the average of R, G and B in every channel.
        grayscale_per: ``"puzzle"`` (all tiles of an image, as the paper and the official code)
            or ``"tile"`` (each tile on its own).
        color_projection: probability that a colour puzzle is projected off the
            green-magenta axis (:func:`green_magenta_projection`); the official jps++ code: 0.5.
        color_jitter: strength s of per-tile brightness and saturation factors in
            ``[1 - s, 1 + s]`` (0 turns it off).
        channel_jitter: each colour channel of a tile is cut at its own offset in
            ``[0, channel_jitter]`` px along x and y, so channels are at most
            ``channel_jitter`` px apart; None uses ``round(2 * tile / 64)`` (the official 2 px
            at 64 px tiles), reduced to fit the cell. Tile and offsets stay inside the cell.
        tile_dim: width of the per-tile fc layer of the siamese head.
        hidden_dim: width of the classifier's hidden layer on the concatenated tile features.
        cache_dir: where the permutation set is cached on disk (None: in-process only).
    """

    size: int = 255
    grid: int = 3
    num_permutations: int = 1000
    permutation_rule: str = "mean"
    permutation_seed: int = 0
    tile: int | None = None
    jitter: bool = True
    crop: str = "center"
    normalize_tiles: bool = True
    normalize_over: str = "tile"
    grayscale: float = 0.3
    grayscale_per: str = "puzzle"
    color_projection: float = 0.0
    color_jitter: float = 0.0
    channel_jitter: int | None = None
    tile_dim: int = 512
    hidden_dim: int = 4096
    cache_dir: str | None = DEFAULT_CACHE_DIR

    def __post_init__(self) -> None:
        check_positive("size", self.size)
        if self.grid < 2:
            raise ValueError(f"grid must be >= 2. Got {self.grid}")
        if self.size // self.grid < 1:
            raise ValueError(f"size must be >= grid ({self.grid}). Got {self.size}")
        limit = math.factorial(self.grid * self.grid)
        if not 1 <= self.num_permutations <= limit:
            raise ValueError(
                f"num_permutations must be between 1 and (grid*grid)! = {limit}. "
                f"Got {self.num_permutations}"
            )
        check_choice("permutation_rule", self.permutation_rule, PERMUTATION_RULES)
        cell = self.size // self.grid
        if self.tile is not None and not 1 <= self.tile <= cell:
            raise ValueError(f"tile must be between 1 and the cell side {cell}. Got {self.tile}")
        check_choice("crop", self.crop, ("random", "center"))
        check_choice("normalize_over", self.normalize_over, ("tile", "channel"))
        check_probability("grayscale", self.grayscale)
        check_choice("grayscale_per", self.grayscale_per, ("puzzle", "tile"))
        check_probability("color_projection", self.color_projection)
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"color_jitter must be in [0, 1). Got {self.color_jitter}")
        if self.channel_jitter is not None:
            check_positive("channel_jitter", self.channel_jitter, allow_zero=True)
            if self.tile_side + self.channel_jitter > cell:
                raise ValueError(
                    f"channel_jitter: a {self.tile_side} px tile with channels up to "
                    f"{self.channel_jitter} px apart must fit the {cell} px cell, so "
                    f"channel_jitter must be <= {cell - self.tile_side}. Got {self.channel_jitter}"
                )
        check_positive("tile_dim", self.tile_dim)
        check_positive("hidden_dim", self.hidden_dim)

    @property
    def cell(self) -> int:
        return self.size // self.grid

    @property
    def tile_side(self) -> int:
        return self.tile if self.tile is not None else max(1, round(self.cell * 64 / 85))

    @property
    def channel_shift(self) -> int:
        if self.channel_jitter is not None:
            return self.channel_jitter
        return min(math.floor(2 * self.tile_side / 64 + 0.5), self.cell - self.tile_side)


class JigsawCollator(Collator):
    """Square crop, resize to ``size``, cut jittered tiles, shuffle them by a permutation.

    Returns a Batch with ``inputs`` float ``B x T x 3 x t x t`` (T = grid², t = tile side, in
    shuffled order), ``targets`` int64 ``B`` (index into the permutation set), ``labels`` and
    ``meta``: ``boxes`` (``B x 4`` crop boxes in the source image), ``permutation_index``
    (``B``), ``permutation`` (``B x T``), ``tile_origins`` (``B x T x 3 x 2`` int64 ``(x, y)``
    of each channel of each tile in the resized crop, grid order), ``grayscale`` (bool
    ``B x T``, grid order), ``color_projection`` (bool ``B``), ``tile_colour`` (float
    ``B x T x 3 x 4``, each tile's colour matrix on RGB in [0, 1], grid order) and ``source``
    (int64 ``B*T``, the image of each tile in input order). Every random parameter is drawn
    from the collator's generator, so a seed reproduces the batch.
    """

    options: JigsawOptions

    def __init__(self, options: JigsawOptions) -> None:
        super().__init__(options)
        self.permutations = torch.from_numpy(
            permutation_set(options.num_permutations, options.grid, options.permutation_seed,
                            rule=options.permutation_rule, cache_dir=options.cache_dir)
        )

    def make_host(self, images: Images, generator: torch.Generator | None) -> HostBatch:
        opt = self.options
        n, k, t, shift = len(images), opt.grid * opt.grid, opt.tile_side, opt.channel_shift
        crops, boxes = square_crops(images.images, opt.size, opt.crop, generator)
        # a window of t + shift px holds the tile and every channel's offset, inside the cell
        windows = tile_origins(n, opt.grid, opt.cell, t + shift,
                               jitter=None if opt.jitter else 0, generator=generator)
        offsets = torch.randint(0, shift + 1, (n, k, 3, 2), generator=generator)
        index = torch.randint(len(self.permutations), (n,), generator=generator)
        if opt.grayscale_per == "puzzle":
            gray = (torch.rand(n, generator=generator) < opt.grayscale).view(n, 1).expand(n, k)
        else:
            gray = torch.rand(n, k, generator=generator) < opt.grayscale
        project = (torch.rand(n, generator=generator) < opt.color_projection) & ~gray.all(1)
        matrix = tile_colour_matrices(gray, project, opt.color_jitter, generator)
        meta = {"boxes": boxes, "permutation_index": index,
                "permutation": self.permutations[index],
                "tile_origins": windows.unsqueeze(2) + offsets, "grayscale": gray.contiguous(),
                "color_projection": project, "tile_colour": matrix}
        return HostBatch({"crops": crops}, images.labels, meta)

    def make_device(self, host: HostBatch) -> Batch:
        opt, meta = self.options, host.meta
        k, t = opt.grid * opt.grid, opt.tile_side
        n = len(meta["permutation"])
        # Shuffle the (tiny) per-tile parameters rather than the tiles: tiles are cut straight
        # into input order, where input tile i is grid cell perm[i].
        rows = torch.arange(n).view(n, 1)
        perm = meta["permutation"]
        tiles = extract_tiles(host.pixels["crops"], meta["tile_origins"][rows, perm], t)
        matrix = meta["tile_colour"][rows, perm].view(n * k, 3, 4)
        if opt.normalize_tiles:
            # each tile's own statistics replace the dataset's mean and std; standardising
            # RGB in [0, 1] keeps a gray tile gray (a per-channel std first would tint it)
            x = normalize(tiles.reshape(n * k, 3, t, t), (0.0,) * 3, (1.0,) * 3, matrix)
            x = standardize_tiles(x, opt.normalize_over)
        else:
            x = normalize(tiles.reshape(n * k, 3, t, t), opt.mean, opt.std, matrix)
        inputs = x.view(n, k, 3, t, t)
        device = inputs.device
        targets = meta["permutation_index"].to(device, non_blocking=True)
        out_meta = meta_on(meta, device)
        # the source image of every tile (the backbone sees B x T tiles): the online probe
        # classifies tile features by their image's label
        out_meta["source"] = torch.arange(n, device=device).repeat_interleave(k)
        return Batch(inputs, targets, labels_on(host, device), out_meta)


@register_task("jigsaw",
               "solve 3x3 jigsaw puzzles: predict the tile permutation (Noroozi & Favaro 2016)")
class Jigsaw(Task):
    """Jigsaw puzzles: classify which of ``num_permutations`` shuffles was applied."""

    Options = JigsawOptions
    Collator = JigsawCollator
    options: JigsawOptions

    def build(self, backbone: nn.Module) -> nn.Module:
        opt = self.options
        return SiameseTiles(backbone, opt.grid * opt.grid, opt.tile_dim, opt.hidden_dim,
                            opt.num_permutations)

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return jigsaw_loss(outputs, batch.targets)  # type: ignore[arg-type]

    def metrics(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        hits = torch.eq(outputs.argmax(1), cast(torch.Tensor, batch.targets))
        return {"pretext_acc": hits.float().mean()}

    def visualize(self, batch: Batch, max_images: int = 8) -> list[tuple[str, torch.Tensor]]:
        opt = self.options
        tiles = cast(torch.Tensor, batch.inputs)[:max_images].float().cpu()
        n, k = tiles.shape[:2]
        if opt.normalize_tiles:  # per-tile standardised: stretch each tile to [0, 1]
            lo = tiles.amin(dim=(2, 3, 4), keepdim=True)
            hi = tiles.amax(dim=(2, 3, 4), keepdim=True)
            tiles = (tiles - lo) / (hi - lo).clamp_min(1e-6)
        else:
            tiles = denormalize(tiles, opt.mean, opt.std)
        perm = batch.meta["permutation"][:n].cpu()
        restored = torch.gather(tiles, 1, perm.argsort(1).view(n, k, 1, 1, 1).expand_as(tiles))
        ids = " ".join(str(int(i)) for i in batch.meta["permutation_index"][:n])
        return [(f"shuffled tiles (permutation index {ids})", assemble_grid(tiles, opt.grid)),
                ("tiles put back in grid order by the label", assemble_grid(restored, opt.grid))]


class SiameseTiles(nn.Module):
    """Context-free network: shared backbone per tile, per-tile fc, concat, MLP classifier.

    Input ``B x T x C x h x w`` float tiles; output ``B x num_classes`` logits. The tile
    features are concatenated in input order, so the classifier sees the shuffled layout.
    """

    def __init__(self, backbone: nn.Module, num_tiles: int, tile_dim: int, hidden_dim: int,
                 num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_tiles = num_tiles
        self.tile_fc = nn.Sequential(nn.Linear(feature_dim(backbone), tile_dim, bias=False),
                                     nn.BatchNorm1d(tile_dim), nn.ReLU(inplace=True))
        self.classifier = mlp(num_tiles * tile_dim, hidden_dim, num_classes, num_layers=2,
                              norm=False)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        if tiles.ndim != 5 or tiles.shape[1] != self.num_tiles:
            raise ValueError(
                f"tiles must be B x {self.num_tiles} x C x h x w. Got shape {tuple(tiles.shape)}"
            )
        b = tiles.shape[0]
        feats = self.tile_fc(self.backbone(tiles.flatten(0, 1)))
        return self.classifier(feats.view(b, -1))


def jigsaw_loss(logits: torch.Tensor, permutation_index: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``B x num_permutations`` logits against int64 ``B`` indices."""
    return F.cross_entropy(logits, permutation_index)
