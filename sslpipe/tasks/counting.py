"""Learning to count (Noroozi, Pirsiavash & Favaro, "Representation Learning by Learning to
Count", ICCV 2017).

A network phi maps an image to a non-negative "counting vector" of visual primitives. Counts
are additive over a partition of the image and invariant to scaling, so the count of the
downsampled image ``D(x)`` must equal the sum of the counts of its four tiles ``T_j(x)``::

    loss = |phi(D(x)) - sum_j phi(T_j(x))|^2
           + w * max(0, M - |phi(D(y)) - sum_j phi(T_j(x))|^2)

The second, contrastive term (``y`` another image of the batch) keeps phi from the trivial
solution phi = 0. A square crop of each image is resized to ``2 * size``; its 2x2 tiles are
``size`` px and ``D(x)`` is the crop downsampled to ``size`` with a randomly chosen filter per
image (``downsample``), so the network cannot tell ``D(x)`` from a tile by its resampling
artefacts: the paper draws among bicubic, bilinear, Lanczos and area (OpenCV's), and so does
sslpipe by default (Lanczos as OpenCV's ``INTER_LANCZOS4``, :mod:`sslpipe.ops.resample`).

Against chromatic aberration, which would also tell tiles from downsampled images, 67 % of the
images are gray (``grayscale``; the paper's "color images 33% of the time and grayscale images
67% of the time", gray being the average colour replicated in the 3 channels), and the choice
is consistent across all the terms of an image's loss: ``D(x)``, its four tiles and the ``D(y)``
it is contrasted with are all gray or all colour. No official code was released; the settings
follow the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.batch import Batch, HostBatch
from sslpipe.ops.augment import AVERAGE_GRAY_WEIGHTS, grayscale_matrix
from sslpipe.ops.color import denormalize, normalize
from sslpipe.ops.geometry import square_crops
from sslpipe.ops.images import Images
from sslpipe.ops.resample import lanczos_resize
from sslpipe.ops.tiling import assemble_grid, extract_tiles, tile_boxes, tile_origins
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
from sslpipe.tasks.heads import feature_dim

DOWNSAMPLE_METHODS = ("bilinear", "bicubic", "lanczos", "area", "nearest")
NUM_TILES = 4


@dataclass(frozen=True)
class CountingOptions(CollatorOptions):
    """Options of the counting task (defaults: Noroozi et al. 2017).

    Attributes:
        size: side of ``D(x)``, ``D(y)`` and of each tile in pixels (the paper: 114, from a
            228 px crop).
        crop: square-crop policy for the source image: ``"random"`` or ``"center"``.
        downsample: filters ``D`` draws from among ``"bilinear"``, ``"bicubic"`` (both
            antialiased), ``"lanczos"`` (OpenCV's Lanczos-4), ``"area"``, ``"nearest"`` (a
            tuple, or a comma-separated string); default: the paper's four.
        downsample_per: ``"image"`` draws a filter per image; ``"batch"`` one per batch (the
            paper's "at each stochastic gradient descent iteration").
        grayscale: probability that an image is gray (the RGB average in every channel) in
            all its terms: ``D(x)``, its tiles and the ``D(y)`` it is contrasted with.
        num_features: length of the counting vector phi.
        margin: M of the contrastive hinge.
        contrastive_weight: w of the contrastive term. Too small and phi collapses to zeros
            (the trivial solution of the first term); too large and its gradient, which
            pushes counts of different images apart, dominates and training diverges.
    """

    size: int = 114
    crop: str = "random"
    downsample: tuple[str, ...] | str = ("bilinear", "bicubic", "lanczos", "area")
    downsample_per: str = "image"
    grayscale: float = 0.67
    num_features: int = 1000
    margin: float = 10.0
    contrastive_weight: float = 1.0

    def __post_init__(self) -> None:
        check_positive("size", self.size)
        check_choice("crop", self.crop, ("random", "center"))
        methods = self.downsample
        if isinstance(methods, str):
            methods = tuple(m.strip() for m in methods.split(",") if m.strip())
            object.__setattr__(self, "downsample", methods)
        if not methods:
            raise ValueError(f"downsample must name at least one of {DOWNSAMPLE_METHODS}. Got ()")
        for m in methods:
            check_choice("downsample", m, DOWNSAMPLE_METHODS)
        check_choice("downsample_per", self.downsample_per, ("image", "batch"))
        check_probability("grayscale", self.grayscale)
        check_positive("num_features", self.num_features)
        check_positive("margin", self.margin, allow_zero=True)
        check_positive("contrastive_weight", self.contrastive_weight, allow_zero=True)

    @property
    def methods(self) -> tuple[str, ...]:
        """``downsample`` as a tuple (``__post_init__`` has split a string form)."""
        return tuple(self.downsample) if not isinstance(self.downsample, str) else (
            self.downsample,)


class CountingCollator(Collator):
    """Square crop at ``2 * size``, its 2x2 tiles, its downsampled version, and another image.

    Returns a Batch with ``inputs`` ``(D(x), tiles, D(y))``: float ``B x 3 x s x s``,
    ``B x 4 x 3 x s x s`` (row-major tiles) and ``B x 3 x s x s``; ``targets`` None (the loss
    needs no pseudo-label); ``labels``; and ``meta``: ``boxes`` (``B x 4`` crop boxes in the
    source image), ``tile_boxes`` (``B x 4 x 4`` in the ``2s`` crop), ``downsample`` (int64
    ``B``, index into ``options.downsample``), ``grayscale`` (bool ``B``: image ``i``'s
    ``D(x)``, tiles and ``D(y)`` are gray) and ``other`` (int64 ``B``: ``D(y)[i]`` is
    ``D(x)[other[i]]``, a random derangement, so ``other[i] != i``) and ``source`` (int64
    ``6B``: the image of each row the backbone sees, ``D(x)``, tiles, ``D(y)``). Needs B >= 2.
    """

    min_batch_size = 2
    options: CountingOptions

    def make_host(self, images: Images, generator: torch.Generator | None) -> HostBatch:
        opt = self.options
        n, s = len(images), opt.size
        if n < 2:
            raise ValueError(
                f"samples: counting contrasts each image with another one of the batch, so it "
                f"needs at least 2 images per batch. Got {n}"
            )
        crops, boxes = square_crops(images.images, 2 * s, opt.crop, generator)
        origins = tile_origins(n, 2, s, s, jitter=0)
        draws = n if opt.downsample_per == "image" else 1
        method = torch.randint(len(opt.methods), (draws,), generator=generator).expand(n)
        other = random_derangement(n, generator)
        gray = torch.rand(n, generator=generator) < opt.grayscale
        meta = {"boxes": boxes, "tile_boxes": tile_boxes(origins, s),
                "downsample": method.contiguous(), "other": other, "grayscale": gray}
        return HostBatch({"crops": crops}, images.labels, meta)

    def make_device(self, host: HostBatch) -> Batch:
        opt, meta = self.options, host.meta
        s = opt.size
        crops = host.pixels["crops"]
        n = crops.shape[0]
        # one colour matrix per image, for all its terms: gray or colour throughout
        colour = grayscale_matrix(meta["grayscale"], AVERAGE_GRAY_WEIGHTS)
        tiles = extract_tiles(crops, meta["tile_boxes"][..., :2].long(), s)
        tiles = normalize(tiles.flatten(0, 1), opt.mean, opt.std,
                          colour.repeat_interleave(NUM_TILES, 0)).view(n, NUM_TILES, 3, s, s)
        small = downsample(crops, meta["downsample"], opt.methods, s)
        down = normalize(small, opt.mean, opt.std, colour)
        device = down.device
        other = meta["other"].to(device, non_blocking=True)
        down_other = normalize(small[other], opt.mean, opt.std, colour)
        out_meta = meta_on(meta, device)
        # the image of each row the backbone sees: D(x), the 4 tiles of each image, D(y)
        rows = torch.arange(n, device=device)
        out_meta["source"] = torch.cat([rows, rows.repeat_interleave(NUM_TILES), other])
        return Batch((down, tiles, down_other), None, labels_on(host, device), out_meta)


@register_task("counting",
               "count visual primitives: D(x) counts = sum of tile counts (Noroozi et al. 2017)")
class Counting(Task):
    """Learning to count: phi(D(x)) = sum_j phi(T_j(x)), contrasted with another image."""

    Options = CountingOptions
    Collator = CountingCollator
    min_batch_size = 2  # each image is contrasted with another of the batch
    options: CountingOptions

    def build(self, backbone: nn.Module) -> nn.Module:
        return CountingModel(backbone, self.options.num_features)

    def loss(self, outputs: tuple[torch.Tensor, ...], batch: Batch) -> torch.Tensor:
        phi_dx, phi_tiles, phi_dy = outputs
        return counting_loss(phi_dx, phi_tiles, phi_dy, margin=self.options.margin,
                             contrastive_weight=self.options.contrastive_weight)

    def metrics(self, outputs: tuple[torch.Tensor, ...], batch: Batch
                ) -> dict[str, torch.Tensor]:
        phi_dx, phi_tiles, phi_dy = (o.detach() for o in outputs)
        total = phi_tiles.sum(1)
        same = (phi_dx - total).pow(2).sum(1)
        diff = (phi_dy - total).pow(2).sum(1)
        # "accuracy": the tiles' total count is closer to their own image than to the other
        return {"count_error": same.mean(), "contrast_distance": diff.mean(),
                "pretext_acc": (same < diff).float().mean(), "phi_mean": phi_dx.mean()}

    def visualize(self, batch: Batch, max_images: int = 8) -> list[tuple[str, torch.Tensor]]:
        opt = self.options
        dx, tiles, dy = (t[:max_images].float().cpu() for t in batch.inputs)
        tiles = assemble_grid(denormalize(tiles, opt.mean, opt.std), 2, gap=4)
        small = F.interpolate(denormalize(dx, opt.mean, opt.std), size=tiles.shape[-2:])
        other = F.interpolate(denormalize(dy, opt.mean, opt.std), size=tiles.shape[-2:])
        names = " ".join(opt.methods[int(i)] for i in batch.meta["downsample"][:max_images])
        return [(f"D(x), downsampled ({names}); drawn at tile scale", small),
                ("T_j(x): the 4 tiles whose counts must add up to D(x)'s", tiles),
                ("D(y): another image of the batch (contrastive term)", other)]


class CountingModel(nn.Module):
    """Shared backbone -> fc -> ReLU: the counting vector phi (``num_features`` wide).

    Input ``(D(x) B x C x s x s, tiles B x 4 x C x s x s, D(y) B x C x s x s)``, run through
    the backbone in one pass; output ``(phi_dx B x F, phi_tiles B x 4 x F, phi_dy B x F)``,
    float, >= 0.
    """

    def __init__(self, backbone: nn.Module, num_features: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(feature_dim(backbone), num_features)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dx, tiles, dy = inputs
        b, t = tiles.shape[:2]
        phi = F.relu(self.fc(self.backbone(torch.cat([dx, tiles.flatten(0, 1), dy]))))
        return phi[:b], phi[b:b + b * t].view(b, t, -1), phi[b + b * t:]


def counting_loss(phi_dx: torch.Tensor, phi_tiles: torch.Tensor, phi_dy: torch.Tensor,
                  margin: float = 10.0, contrastive_weight: float = 1.0) -> torch.Tensor:
    """The counting loss, averaged over the batch.

    ``mean_i |phi_dx[i] - sum_j phi_tiles[i, j]|^2
    + w * max(0, M - |phi_dy[i] - sum_j phi_tiles[i, j]|^2)`` with squared Euclidean norms.

    Args:
        phi_dx: ``B x F`` counts of the downsampled images.
        phi_tiles: ``B x T x F`` counts of their tiles.
        phi_dy: ``B x F`` counts of the other (downsampled) images.
        margin: M >= 0.
        contrastive_weight: w >= 0.
    """
    total = phi_tiles.sum(1)
    same = (phi_dx - total).pow(2).sum(1)
    diff = (phi_dy - total).pow(2).sum(1)
    return (same + contrastive_weight * (margin - diff).clamp_min(0)).mean()


def downsample(x: torch.Tensor, method: torch.Tensor, methods: tuple[str, ...],
               size: int) -> torch.Tensor:
    """Resize uint8 ``B x C x H x W`` to float ``B x C x size x size`` in [0, 255], image ``i``
    with the filter ``methods[method[i]]``: antialiased bilinear / bicubic (torch), OpenCV's
    Lanczos-4 (:func:`~sslpipe.ops.resample.lanczos_resize`), area or nearest."""
    out = x.new_empty((x.shape[0], x.shape[1], size, size), dtype=torch.float32)
    for m, name in enumerate(methods):
        # selected where ``method`` is (the CPU, in a device stage): no device sync
        sel = torch.nonzero(method == m)[:, 0]
        if not sel.numel():
            continue
        sel = sel.to(x.device, non_blocking=True)
        src = x[sel].float()
        if name in ("bilinear", "bicubic"):
            res = F.interpolate(src, size=size, mode=name, antialias=True, align_corners=False)
        elif name == "lanczos":
            res = lanczos_resize(src, size)
        else:
            res = F.interpolate(src, size=size, mode=name)
        out[sel] = res.clamp_(0, 255)
    return out


def random_derangement(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """int64 ``n``: a random permutation with no fixed point (``out[i] != i``), n >= 2.

    A random cyclic shift by 1..n-1 along a random ordering of the indices.
    """
    order = torch.randperm(n, generator=generator)
    shift = int(torch.randint(1, n, (1,), generator=generator))
    out = torch.empty(n, dtype=torch.long)
    out[order] = order.roll(-shift)
    return out
