"""Relative patch location (Doersch, Gupta & Efros, "Unsupervised Visual Representation Learning
by Context Prediction", ICCV 2015).

A square crop of the image is resized so that a 3x3 grid of ``size`` px patches separated by
``gap`` px fits it exactly (the paper: 96 px patches, 48 px gaps); each patch is jittered by up
to ``jitter`` px (the paper: 7). The network sees the centre patch and one of its 8 neighbours
and predicts where the neighbour lies. Neighbour positions are numbered row-major skipping the
centre::

    0 1 2
    3 . 4
    5 6 7

Against chromatic aberration (a shortcut that tells where a patch lies in the lens' field) each
patch can drop two of its three colour channels, replacing them with faint Gaussian noise
(``chroma="drop"``, the paper's colour dropping), or lose its green-magenta component
(``chroma="project"``, the paper's projection towards gray).

Against resolution and brightness cues, as the official code (``cdoersch/deepcontext``,
``train.py``, ``prep_image``) does: a third of the patches (``pixelate=0.33``) are downsampled
to between 100 pixels and 95 x 95 (at 96 px; scaled with ``size``) and upsampled back, and each
patch has its per-channel mean subtracted and is scaled to unit root-mean-square
(``patch_norm="rms"``). The degradations (pixelation, colour dropping, standardisation) are
shared machinery in ``sslpipe.ops.degrade``, the patch grid in ``sslpipe.ops.tiling``.

``variant="nine"`` shows all 8 neighbours with the centre in a random order; the target is the
position of each neighbour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.batch import Batch, HostBatch
from sslpipe.ops.color import denormalize, normalize
from sslpipe.ops.degrade import (
    drop_channels,
    pixelate,
    sample_pixelation,
    standardize_patches,
)
from sslpipe.ops.geometry import square_crops
from sslpipe.ops.images import Images
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
from sslpipe.tasks.heads import feature_dim, mlp

NUM_POSITIONS = 8
CENTER = 4
NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)  # grid cell (row-major 3x3) of each position label
_GREEN_MAGENTA = (-1 / math.sqrt(6), 2 / math.sqrt(6), -1 / math.sqrt(6))


@dataclass(frozen=True)
class RelativePatchOptions(CollatorOptions):
    """Options of the relative patch location task (defaults: Doersch et al. 2015).

    Attributes:
        size: patch side in pixels (the paper: 96).
        gap: pixels between neighbouring patches; None uses ``round(size / 2)`` (the paper's
            48 px at 96 px patches). The crop is resized to ``3 * (size + gap)`` px.
        jitter: largest random shift of each patch in pixels; None uses
            ``round(size * 7 / 96)`` (the paper's 7 px). Clipped so that each patch stays in
            its ``size + gap`` cell: patches never overlap.
        crop: square-crop policy for the source image: ``"random"`` or ``"center"``.
        variant: ``"pair"`` (centre + one neighbour, target ``B``) or ``"nine"`` (centre + all
            8 neighbours in random order, target ``B x 8``).
        chroma: ``"drop"`` (keep one random channel per patch, noise in the others),
            ``"project"`` (remove the green-magenta axis) or ``"none"``.
        drop_noise: std of the noise in dropped channels, relative to the kept channel's std
            (the paper: "~1/100"; the official code adds uniform noise of +-0.5 grey levels).
        pixelate: probability that a patch is downsampled and upsampled back (the official
            code: 0.33). Each fed patch draws its own.
        pixelate_min: smallest side a pixelated patch is downsampled to; None uses
            ``round(size * 10 / 96)`` (the official 10 px, 100 pixels, at 96 px). Sides are
            drawn with a uniform area up to ``(size - 1)**2`` (``ops.degrade``).
        patch_norm: ``"rms"`` (each patch's per-channel mean subtracted, then scaled to unit
            root-mean-square over its channels and pixels: the official code), ``"mean"``
            (mean subtraction only: the paper's words) or ``"none"`` (the dataset mean/std
            normalisation only).
        patch_dim: width of the per-patch fc layer of the head.
        hidden_dim: width of the classifier's hidden layer on the concatenated pair.
    """

    size: int = 96
    gap: int | None = None
    jitter: int | None = None
    crop: str = "random"
    variant: str = "pair"
    chroma: str = "drop"
    drop_noise: float = 0.01
    pixelate: float = 0.33
    pixelate_min: int | None = None
    patch_norm: str = "rms"
    patch_dim: int = 512
    hidden_dim: int = 4096

    def __post_init__(self) -> None:
        check_positive("size", self.size)
        if self.gap is not None:
            check_positive("gap", self.gap, allow_zero=True)
        if self.jitter is not None:
            check_positive("jitter", self.jitter, allow_zero=True)
        check_choice("crop", self.crop, ("random", "center"))
        check_choice("variant", self.variant, ("pair", "nine"))
        check_choice("chroma", self.chroma, ("drop", "project", "none"))
        check_positive("drop_noise", self.drop_noise, allow_zero=True)
        check_probability("pixelate", self.pixelate)
        if self.size < 2:
            raise ValueError(f"size must be >= 2 (pixelation needs a smaller side). "
                             f"Got {self.size}")
        if self.pixelate_min is not None and not 1 <= self.pixelate_min <= self.size - 1:
            raise ValueError(
                f"pixelate_min must be in 1..{self.size - 1} for size {self.size}. "
                f"Got {self.pixelate_min}"
            )
        check_choice("patch_norm", self.patch_norm, ("rms", "mean", "none"))
        check_positive("patch_dim", self.patch_dim)
        check_positive("hidden_dim", self.hidden_dim)

    @property
    def gap_px(self) -> int:
        return self.gap if self.gap is not None else round(self.size / 2)

    @property
    def jitter_px(self) -> int:
        return self.jitter if self.jitter is not None else round(self.size * 7 / 96)

    @property
    def pixelate_min_px(self) -> int:
        if self.pixelate_min is not None:
            return self.pixelate_min
        return min(max(1, round(self.size * 10 / 96)), self.size - 1)

    @property
    def region(self) -> int:
        """Side of the resized crop that holds the 3x3 patch grid."""
        return 3 * (self.size + self.gap_px)


class RelativePatchCollator(Collator):
    """Square crop, resize to the patch grid, cut the centre and neighbour patch(es).

    Returns a Batch with ``inputs`` ``(center, neighbours)``: float ``B x 3 x p x p`` and
    ``B x 3 x p x p`` (``variant="pair"``) or ``B x 8 x 3 x p x p`` (``"nine"``);
    ``targets`` int64 position(s) in 0..7 (``B`` or ``B x 8``), ``labels``, and ``meta``:
    ``boxes`` (``B x 4`` crop boxes in the source image), ``patch_boxes`` (``B x 9 x 4``
    ``(x0, y0, x1, y1)`` of every grid patch in the resized crop, row-major), ``input_boxes``
    (``B x K x 4``: boxes of the patches fed, centre first, K = 2 or 9), ``position`` (the
    targets), ``source`` (int64 ``B * K``: the image of each patch the backbone sees, centres
    first), ``pixelate_side`` (int64 ``B x K``: the side each fed patch was downsampled to,
    ``size`` where it was not) and, with ``chroma="drop"``, ``kept_channel`` (int64 ``B x K``).
    With ``patch_norm="rms"`` every fed patch has zero mean per channel and unit
    root-mean-square; otherwise inputs are normalised with ``mean`` / ``std``.
    """

    options: RelativePatchOptions

    def make_host(self, images: Images, generator: torch.Generator | None) -> HostBatch:
        opt = self.options
        n, p = len(images), opt.size
        crops, boxes = square_crops(images.images, opt.region, opt.crop, generator)
        origins = tile_origins(n, 3, p + opt.gap_px, p, jitter=opt.jitter_px, generator=generator)
        if opt.variant == "pair":
            position = torch.randint(NUM_POSITIONS, (n,), generator=generator)
            cells = torch.tensor(NEIGHBOURS)[position].view(n, 1)
        else:
            position = torch.rand(n, NUM_POSITIONS, generator=generator).argsort(1)
            cells = torch.tensor(NEIGHBOURS)[position]
        cells = torch.cat([torch.full((n, 1), CENTER), cells], dim=1)  # B x K, centre first
        fed = torch.gather(origins, 1, cells.unsqueeze(-1).expand(-1, -1, 2))
        # the patches are the output-size crops: only they cross to the device
        patches = extract_tiles(crops, fed, p)  # B x K x 3 x p x p
        meta = {"boxes": boxes, "patch_boxes": tile_boxes(origins, p),
                "input_boxes": tile_boxes(fed, p), "position": position}
        if opt.chroma == "drop":
            meta["kept_channel"] = torch.randint(3, (n, cells.shape[1]), generator=generator)
            meta["noise_seed"] = torch.randint(2**62, (1,), generator=generator)
        k = cells.shape[1]
        meta["pixelate_side"] = sample_pixelation(
            n * k, p, opt.pixelate, opt.pixelate_min_px, generator).view(n, k)
        return HostBatch({"patches": patches}, images.labels, meta)

    def make_device(self, host: HostBatch) -> Batch:
        opt, meta = self.options, host.meta
        patches = host.pixels["patches"]
        n, k, _, p, _ = patches.shape
        x = self._colour(patches.flatten(0, 1), meta).view(n, k, 3, p, p)
        center, neighbours = x[:, 0], (x[:, 1] if opt.variant == "pair" else x[:, 1:])
        device = x.device
        position = meta["position"].to(device, non_blocking=True)
        out_meta = meta_on({k: v for k, v in meta.items() if k != "noise_seed"}, device)
        # the image of each patch the backbone sees: the centres, then each image's neighbours
        rows = torch.arange(n, device=device)
        out_meta["source"] = torch.cat([rows, rows.repeat_interleave(k - 1)])
        return Batch((center, neighbours), position, labels_on(host, device), out_meta)

    def _colour(self, patches: torch.Tensor, meta: dict[str, torch.Tensor]) -> torch.Tensor:
        """uint8 ``N x 3 x p x p`` to float: normalised (projected with ``chroma="project"``),
        pixelated, colour-dropped, then standardised per patch; the official code's order
        (pixelation first: normalising and projecting are per-pixel affine maps, which commute
        with a resize whose weights sum to 1)."""
        opt = self.options
        matrix = None
        if opt.chroma == "project":
            v = torch.tensor(_GREEN_MAGENTA)
            m = torch.cat([torch.eye(3) - torch.outer(v, v), torch.zeros(3, 1)], dim=1)
            matrix = m.expand(len(patches), 3, 4)
        x = normalize(patches, opt.mean, opt.std, matrix)
        x = pixelate(x, meta["pixelate_side"].reshape(len(x)))
        if opt.chroma == "drop":
            x = drop_channels(x, meta["kept_channel"], opt.drop_noise, int(meta["noise_seed"]))
        if opt.patch_norm == "none":
            return x
        return standardize_patches(x, rms=opt.patch_norm == "rms")


@register_task("relative_patch",
               "predict where a neighbour patch lies relative to the centre (Doersch et al. 2015)")
class RelativePatch(Task):
    """Relative patch location: 8-way classification of a neighbour's position."""

    Options = RelativePatchOptions
    Collator = RelativePatchCollator
    options: RelativePatchOptions

    def build(self, backbone: nn.Module) -> nn.Module:
        return PatchPairClassifier(backbone, self.options.patch_dim, self.options.hidden_dim)

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return relative_patch_loss(outputs, batch.targets)  # type: ignore[arg-type]

    def metrics(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        hits = torch.eq(outputs.argmax(-1), cast(torch.Tensor, batch.targets))
        return {"pretext_acc": hits.float().mean()}

    def visualize(self, batch: Batch, max_images: int = 8) -> list[tuple[str, torch.Tensor]]:
        opt = self.options
        center, neighbours = (t[:max_images].float().cpu() for t in batch.inputs)
        n = len(center)
        position = batch.targets[:n].cpu().view(n, -1)  # type: ignore[index]
        neighbours = neighbours.view(n, -1, *center.shape[1:])
        grid = torch.ones(n, 9, *center.shape[1:])
        grid[:, CENTER] = denormalize(center, opt.mean, opt.std)
        cells = torch.tensor(NEIGHBOURS)[position]
        grid[torch.arange(n)[:, None], cells] = denormalize(neighbours, opt.mean, opt.std)
        labels = " ".join(str(row.tolist()[0]) for row in position) if opt.variant == "pair" \
            else "all 8"
        return [(f"centre and neighbour(s) drawn at their labelled positions ({labels})",
                 assemble_grid(grid, 3))]


class PatchPairClassifier(nn.Module):
    """Shared backbone on the centre and neighbour patches, per-patch fc, concatenated pair,
    MLP to 8 positions.

    Input ``(center B x C x p x p, neighbours B x C x p x p or B x 8 x C x p x p)``; output
    ``B x 8`` logits, or ``B x 8 x 8`` (one row per neighbour) for the nine-patch variant.
    """

    def __init__(self, backbone: nn.Module, patch_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.patch_fc = nn.Sequential(nn.Linear(feature_dim(backbone), patch_dim, bias=False),
                                      nn.BatchNorm1d(patch_dim), nn.ReLU(inplace=True))
        self.classifier = mlp(2 * patch_dim, hidden_dim, NUM_POSITIONS, num_layers=2, norm=False)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        center, neighbours = inputs
        b = center.shape[0]
        nine = neighbours.ndim == 5
        flat = neighbours.flatten(0, 1) if nine else neighbours
        feats = self.patch_fc(self.backbone(torch.cat([center, flat])))
        fc, fn = feats[:b], feats[b:].view(b, -1, feats.shape[1])
        pairs = torch.cat([fc.unsqueeze(1).expand_as(fn), fn], dim=-1)
        logits = self.classifier(pairs.flatten(0, 1)).view(b, -1, NUM_POSITIONS)
        return logits if nine else logits[:, 0]


def relative_patch_loss(logits: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``B x 8`` (or ``B x 8 x 8``) logits against positions in 0..7."""
    return F.cross_entropy(logits.reshape(-1, NUM_POSITIONS), position.reshape(-1))
