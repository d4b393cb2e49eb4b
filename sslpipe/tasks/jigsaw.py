"""Jigsaw puzzles (Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving
Jigsaw Puzzles", ECCV 2016).

A square crop of side ``size`` is split into a ``grid x grid`` grid of cells (the paper: a 225
px crop, 75 px cells); from each cell a tile of ``round(cell * 64 / 75)`` px is cut at a random
position (the paper's 64 px tiles), so tiles are separated by random gaps and edges do not
continue across them. The tiles are shuffled by one of ``num_permutations`` permutations chosen
to be far apart in Hamming distance (:func:`permutation_set`), and the network predicts which.

Shortcuts are removed as in the paper: each tile is normalised to zero mean and unit std per
channel (``normalize_tiles``), some tiles are turned to grayscale (``grayscale``), and each
colour channel of a tile is cut at a slightly different position (``channel_jitter``) against
chromatic aberration. Optional per-tile brightness/saturation jitter (``color_jitter``) is
folded into one 3x4 colour matrix per tile.

Convention: with permutation ``p`` (a row of the permutation set), input tile ``i`` is grid
cell ``p[i]`` (cells numbered row-major), so ``tiles[:, argsort(p)]`` is back in grid order.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.atomic import atomic_write_bytes
from sslpipe.batch import Batch, HostBatch
from sslpipe.ops.color import denormalize, normalize
from sslpipe.ops.geometry import square_crops
from sslpipe.ops.images import Images
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

DEFAULT_CACHE_DIR = os.environ.get("SSLPIPE_CACHE", "~/.cache/sslpipe")
_GRAY = (0.299, 0.587, 0.114)
_TILE_STD_FLOOR = 1e-2  # keeps a flat tile flat instead of amplifying its noise


def permutation_set(
    num_permutations: int,
    grid: int = 3,
    seed: int = 0,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Permutations of ``grid * grid`` tiles chosen greedily for maximal Hamming distance.

    Starting from one permutation drawn with ``seed``, repeatedly adds the permutation whose
    minimum Hamming distance to the chosen set is largest (ties broken by the seeded RNG). For
    ``grid <= 3`` all ``(grid*grid)!`` permutations are candidates (vectorised with numpy, about
    2 s for 1000 of 9! on one core); for larger grids a seeded pool of random permutations is.
    Results are cached per ``(num_permutations, grid, seed)`` in the process and, with
    ``cache_dir``, on disk (``jigsaw_perms_g{grid}_n{num}_s{seed}.npy``, written atomically).

    Returns:
        int64 ``num_permutations x grid*grid``; each row is a permutation of ``0..grid*grid-1``.
    """
    if grid < 2:
        raise ValueError(f"grid must be >= 2. Got {grid}")
    limit = math.factorial(grid * grid)
    if not 1 <= num_permutations <= limit:
        raise ValueError(
            f"num_permutations must be between 1 and ({grid}*{grid})! = {limit}. "
            f"Got {num_permutations}"
        )
    key = (num_permutations, grid, seed)
    if key in _PERMUTATIONS:
        return _PERMUTATIONS[key].copy()
    path = None
    if cache_dir is not None:
        name = f"jigsaw_perms_g{grid}_n{num_permutations}_s{seed}.npy"
        path = Path(cache_dir).expanduser() / name
        perms = _load_cached(path, num_permutations, grid * grid)
        if perms is not None:
            _PERMUTATIONS[key] = perms
            return perms.copy()
    perms = _greedy_permutations(num_permutations, grid * grid, seed)
    _PERMUTATIONS[key] = perms
    if path is not None:
        _save_atomic(path, perms)
    return perms.copy()


_PERMUTATIONS: dict[tuple[int, int, int], np.ndarray] = {}


@dataclass(frozen=True)
class JigsawOptions(CollatorOptions):
    """Options of the jigsaw task (defaults: Noroozi & Favaro 2016).

    Attributes:
        size: side of the square crop in pixels (the paper: 225); cells are ``size // grid``.
        grid: tiles per side (``grid * grid`` tiles).
        num_permutations: size of the permutation set (classes); 100 and 1000 are common.
        permutation_seed: seed of the greedy permutation set (keep it to compare runs).
        tile: tile side in pixels; None uses ``round(cell * 64 / 75)`` (the paper's ratio).
        jitter: tile position inside its cell: True anywhere (random gaps), False centred.
        crop: square-crop policy for the source image: ``"random"`` or ``"center"``.
        normalize_tiles: standardise each tile per channel (zero mean, unit std).
        grayscale: per-tile probability of grayscale.
        color_jitter: strength s of per-tile brightness and saturation factors in
            ``[1 - s, 1 + s]`` (0 turns it off).
        channel_jitter: largest shift in pixels of each colour channel of a tile against the
            others; None uses ``round(2 * tile / 64)`` (the paper's +-2 px at 64 px tiles).
        tile_dim: width of the per-tile fc layer of the siamese head.
        hidden_dim: width of the classifier's hidden layer on the concatenated tile features.
        cache_dir: where the permutation set is cached on disk (None: in-process only).
    """

    size: int = 225
    grid: int = 3
    num_permutations: int = 1000
    permutation_seed: int = 0
    tile: int | None = None
    jitter: bool = True
    crop: str = "random"
    normalize_tiles: bool = True
    grayscale: float = 0.3
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
        cell = self.size // self.grid
        if self.tile is not None and not 1 <= self.tile <= cell:
            raise ValueError(f"tile must be between 1 and the cell side {cell}. Got {self.tile}")
        check_choice("crop", self.crop, ("random", "center"))
        check_probability("grayscale", self.grayscale)
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"color_jitter must be in [0, 1). Got {self.color_jitter}")
        if self.channel_jitter is not None:
            check_positive("channel_jitter", self.channel_jitter, allow_zero=True)
        check_positive("tile_dim", self.tile_dim)
        check_positive("hidden_dim", self.hidden_dim)

    @property
    def cell(self) -> int:
        return self.size // self.grid

    @property
    def tile_side(self) -> int:
        return self.tile if self.tile is not None else max(1, round(self.cell * 64 / 75))

    @property
    def channel_shift(self) -> int:
        if self.channel_jitter is not None:
            return self.channel_jitter
        return round(2 * self.tile_side / 64)


class JigsawCollator(Collator):
    """Square crop, resize to ``size``, cut jittered tiles, shuffle them by a permutation.

    Returns a Batch with ``inputs`` float ``B x T x 3 x t x t`` (T = grid², t = tile side, in
    shuffled order), ``targets`` int64 ``B`` (index into the permutation set), ``labels`` and
    ``meta``: ``boxes`` (``B x 4`` crop boxes in the source image), ``permutation_index``
    (``B``), ``permutation`` (``B x T``), ``tile_origins`` (``B x T x 3 x 2`` int64 ``(x, y)``
    of each channel of each tile in the resized crop, grid order), ``grayscale`` (bool
    ``B x T``, grid order), ``tile_colour`` (float ``B x T x 3 x 4``, each tile's colour
    matrix on RGB in [0, 1], grid order) and ``source`` (int64 ``B*T``, the image of each tile
    in input order).
    """

    options: JigsawOptions

    def __init__(self, options: JigsawOptions) -> None:
        super().__init__(options)
        self.permutations = torch.from_numpy(
            permutation_set(options.num_permutations, options.grid, options.permutation_seed,
                            cache_dir=options.cache_dir)
        )

    def make_host(self, images: Images, generator: torch.Generator | None) -> HostBatch:
        opt = self.options
        n, k, t = len(images), opt.grid * opt.grid, opt.tile_side
        crops, boxes = square_crops(images.images, opt.size, opt.crop, generator)
        origins = tile_origins(n, opt.grid, opt.cell, t, jitter=None if opt.jitter else 0,
                               generator=generator)
        origins = _channel_origins(origins, opt.channel_shift, opt.size - t, generator)
        index = torch.randint(len(self.permutations), (n,), generator=generator)
        gray = torch.rand(n, k, generator=generator) < opt.grayscale
        matrix = _tile_colour_matrix(gray, opt.color_jitter, generator)
        meta = {"boxes": boxes, "permutation_index": index,
                "permutation": self.permutations[index], "tile_origins": origins,
                "grayscale": gray, "tile_colour": matrix}
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
        x = normalize(tiles.reshape(n * k, 3, t, t), opt.mean, opt.std,
                      meta["tile_colour"][rows, perm].view(n * k, 3, 4))
        if opt.normalize_tiles:
            x = _standardize(x)
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


def _standardize(x: torch.Tensor) -> torch.Tensor:
    """Each ``N x C x h x w`` tile to zero mean and unit (unbiased) std per channel."""
    flat = x.flatten(2)
    p = flat.shape[-1]
    mean = flat.mean(-1)
    # E[x^2] - E[x]^2: one pass less than torch.std_mean, and exact enough for unit-scale data
    var = ((flat * flat).mean(-1) - mean * mean).clamp_min(0) * (p / max(p - 1, 1))
    inv = var.sqrt().clamp_min(_TILE_STD_FLOOR).reciprocal()
    return torch.addcmul((-mean * inv)[..., None, None], x, inv[..., None, None])


def _channel_origins(origins: torch.Tensor, shift: int, max_origin: int,
                     generator: torch.Generator | None) -> torch.Tensor:
    """Per-channel tile origins ``B x T x 3 x 2``: each channel moved by up to ``shift`` px."""
    b, k, _ = origins.shape
    delta = torch.randint(-shift, shift + 1, (b, k, 3, 2), generator=generator)
    return (origins.unsqueeze(2) + delta).clamp(0, max_origin)


def _tile_colour_matrix(gray: torch.Tensor, strength: float,
                        generator: torch.Generator | None) -> torch.Tensor:
    """``B x T x 3 x 4`` matrices: brightness * (saturation blend of RGB and its luma)."""
    b, k = gray.shape
    luma = torch.tensor(_GRAY).expand(3, 3)
    bright = 1 + (torch.rand(b, k, generator=generator) * 2 - 1) * strength
    sat = 1 + (torch.rand(b, k, generator=generator) * 2 - 1) * strength
    sat = torch.where(gray, torch.zeros_like(sat), sat)
    s = sat.view(b, k, 1, 1)
    m = s * torch.eye(3) + (1 - s) * luma
    m = m * bright.view(b, k, 1, 1)
    return torch.cat([m, torch.zeros(b, k, 3, 1)], dim=-1)


def _greedy_permutations(num: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if k <= 9:
        candidates = np.array(list(itertools.permutations(range(k))), dtype=np.uint8)
    else:  # (k)! candidates cannot be enumerated: a seeded random pool stands in
        pool = max(50_000, 20 * num)
        candidates = np.argsort(rng.random((pool, k)), axis=1).astype(np.uint8)
    # match[i, v] is 1 where a candidate has value v at position i: the number of positions
    # where a candidate agrees with p is then a sum of k precomputed rows.
    match = np.stack([np.stack([candidates[:, i] == v for v in range(k)]) for i in range(k)])
    match = match.astype(np.uint8)
    chosen = [int(rng.integers(len(candidates)))]
    min_dist = np.full(len(candidates), k + 1, dtype=np.uint8)
    for _ in range(num - 1):
        p = candidates[chosen[-1]]
        agree = match[0, p[0]].copy()
        for i in range(1, k):
            agree += match[i, p[i]]
        np.minimum(min_dist, k - agree, out=min_dist)
        best = np.flatnonzero(min_dist == min_dist.max())
        chosen.append(int(best[rng.integers(len(best))]))
    return candidates[chosen].astype(np.int64)


def _load_cached(path: Path, num: int, k: int) -> np.ndarray | None:
    if not path.exists():
        return None
    try:
        perms = np.load(path)
    except (OSError, ValueError) as err:
        warnings.warn(f"ignoring unreadable permutation cache {path}: {err}", stacklevel=3)
        return None
    valid = (perms.shape == (num, k) and np.issubdtype(perms.dtype, np.integer)
             and (np.sort(perms, axis=1) == np.arange(k)).all()
             and len(np.unique(perms, axis=0)) == num)
    if not valid:
        warnings.warn(f"ignoring invalid permutation cache {path}; regenerating it", stacklevel=3)
        return None
    return perms.astype(np.int64)


def _save_atomic(path: Path, perms: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, perms)
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as err:  # a read-only home must not stop training: the set is recomputable
        warnings.warn(f"could not cache permutations to {path}: {err}", stacklevel=3)
