"""The view machinery of the joint-embedding tasks: two views per image, and multi-crop.

SimCLR, VICReg and BYOL compare two views of every image (:class:`TwoViewOptions`,
:class:`TwoViewCollator`, :class:`TwoViewModel`). With ``multi_crop=N`` they also get ``N``
small *local* crops per image, SwAV's multi-crop (Caron et al. 2020), made in the same batched
pass as the two views (:mod:`sslpipe.ops.multicrop`: one decode per image, one resize group per
output size, the colour work on the device).

**The loss with local crops** (:func:`multi_crop_loss`). SwAV and DINO compare every crop with
each *global* view other than itself and average the pair losses; sslpipe does the same for
SimCLR, VICReg and BYOL: with views ``v_1, v_2`` and local crops ``l_1 .. l_N``,

    loss = 1 / (2 (N + 1)) * sum_{g in {1, 2}} sum_{c != g} L(v_g, c)

over the crops ``c`` in ``{v_1, v_2, l_1, .., l_N}``, where ``L`` is the task's two-view loss
(NT-Xent, VICReg's loss; BYOL: the online prediction of ``c`` regressed on the target's
projection of ``v_g``). The two views are compared with each other in both orders and with
every local crop; local crops are never compared with each other (as in SwAV, DINO, and
solo-learn's multi-crop BYOL). With ``N = 0`` it is the task's two-view loss itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sslpipe.batch import Batch, HostBatch
from sslpipe.models.vit import accept_any_size
from sslpipe.ops.augment import ViewAugment
from sslpipe.ops.color import denormalize
from sslpipe.ops.images import Images
from sslpipe.ops.multicrop import CropSet, apply_crop_sets, local_size_for, sample_crop_sets
from sslpipe.tasks.base import Collator, CollatorOptions, check_positive, labels_on, meta_on

__all__ = ["CropSetCollator", "MultiCropNet", "TwoViewCollator", "TwoViewModel", "TwoViewOptions",
           "accept_any_size", "check_scale", "crop_pairs", "crop_rows", "multi_crop_loss",
           "split_crops"]


@dataclass(frozen=True)
class TwoViewOptions(CollatorOptions):
    """Crop options shared by the two-view tasks (SimCLR, VICReg, BYOL).

    Attributes:
        size: output side of each view in pixels.
        crop_scale: range of the crop area as a fraction of the image area.
        crop_ratio: range of the crop aspect ratio (log-uniform).
        multi_crop: number of small local crops per image besides the two views (SwAV's
            multi-crop; 0: none). They are compared with the two views (module docstring).
        local_size: side of the local crops; None: ``96 / 224`` of ``size`` (96 at 224 px).
        local_scale: area range of the local crops (SwAV's (0.05, 0.14)).
    """

    size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    multi_crop: int = 0
    local_size: int | None = None
    local_scale: tuple[float, float] = (0.05, 0.14)

    def __post_init__(self) -> None:
        check_positive("size", self.size)
        check_scale("crop_scale", self.crop_scale)
        check_scale("local_scale", self.local_scale)
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise ValueError(
                f"crop_ratio must be (lo, hi) with 0 < lo <= hi. Got {self.crop_ratio}"
            )
        if not isinstance(self.multi_crop, int) or self.multi_crop < 0:
            raise ValueError(f"multi_crop must be an integer >= 0. Got {self.multi_crop!r}")
        if self.local_size is not None:
            check_positive("local_size", self.local_size)

    def view_augments(self) -> tuple[ViewAugment, ...]:
        """The colour/blur policy of each view (tasks override it; default: two
        :class:`~sslpipe.ops.augment.ViewAugment` defaults with the size-scaled blur kernel)."""
        return (ViewAugment(blur_kernel=self.default_blur_kernel()),) * 2

    def local_augment(self) -> ViewAugment:
        """The local crops' policy: view 1's flip, jitter and grayscale, blur with probability
        0.5 (SwAV's and DINO's local crops) when the views blur at all, no solarisation, and a
        blur kernel of 10 % of the local side."""
        first = self.view_augments()[0]
        blurs = any(a.blur > 0 for a in self.view_augments())
        return dataclasses.replace(first, blur=0.5 if blurs else 0.0, solarize=0.0,
                                   blur_kernel=odd_kernel(self.resolved_local_size()))

    def resolved_local_size(self) -> int:
        """``local_size``, or ``96 / 224`` of ``size``."""
        return self.local_size or local_size_for(self.size)

    def crop_sets(self) -> tuple[CropSet, ...]:
        """``view1``, ``view2`` at ``size`` and, with ``multi_crop``, ``local``."""
        first, second = self.view_augments()
        sets = [CropSet("view1", self.size, self.crop_scale, (first,), self.crop_ratio),
                CropSet("view2", self.size, self.crop_scale, (second,), self.crop_ratio)]
        if self.multi_crop:
            sets.append(CropSet("local", self.resolved_local_size(), self.local_scale,
                                (self.local_augment(),) * self.multi_crop, self.crop_ratio))
        return tuple(sets)

    def default_blur_kernel(self) -> int:
        """SimCLR's 10% of the image side, made odd: 23 taps at 224 px."""
        return odd_kernel(self.size)


class CropSetCollator(Collator):
    """A collator whose options list :class:`~sslpipe.ops.multicrop.CropSet` s
    (``options.crop_sets()``): every crop drawn and cut in the host stage
    (:func:`~sslpipe.ops.multicrop.sample_crop_sets`), coloured and normalised in the device
    stage (:func:`~sslpipe.ops.multicrop.apply_crop_sets`). ``inputs`` is the tuple of the
    sets' crops, ``meta`` every crop's parameters plus ``source`` (int64 ``2B``: the image of
    each row of the backbone's first batch, the two global views). The base of
    :class:`TwoViewCollator` and DINO's collator."""

    options: Any  # CollatorOptions with a crop_sets() method (TwoViewOptions, DINOOptions)

    def make_host(self, images: Images, generator: torch.Generator | None) -> HostBatch:
        pixels, meta = sample_crop_sets(images.images, self.options.crop_sets(), generator)
        return HostBatch(pixels, images.labels, meta)

    def make_device(self, host: HostBatch) -> Batch:
        opt = self.options
        crops = apply_crop_sets(host.pixels, host.meta, opt.crop_sets(), opt.mean, opt.std)
        device = crops[0].device
        meta = meta_on(host.meta, device)
        images = len(host.meta["decode_scale"])  # one per source image
        meta["source"] = torch.arange(images, device=device).repeat(2)
        return Batch(tuple(crops), None, labels_on(host, device), meta)


class TwoViewCollator(CropSetCollator):
    """Two augmented views of every image, and ``multi_crop`` local crops.

    Returns a Batch with ``inputs`` a tuple of two float ``B x 3 x size x size`` normalized
    views, and with ``multi_crop = N > 0`` a third entry, the local crops, float
    ``N*B x 3 x s x s`` (crop-major: row ``k * B + i`` is local crop ``k`` of image ``i``);
    ``targets`` None, ``labels`` int64 ``B`` or None, and ``meta``: per view ``v`` (1, 2)
    ``view{v}_boxes`` (float ``B x 4`` in source pixels), ``view{v}_flip``, ``view{v}_jitter``,
    ``view{v}_grayscale``, ``view{v}_solarize`` (bool ``B``), ``view{v}_brightness``,
    ``view{v}_contrast``, ``view{v}_saturation``, ``view{v}_hue``, ``view{v}_blur_sigma``
    (float ``B``, sigma 0 = no blur), ``view{v}_jitter_order`` (int64 ``B x 4``), the same
    ``local_*`` with ``N*B`` rows, ``decode_scale`` (int64 ``B``, the JPEG DCT reduction used;
    1 for decoded inputs) and ``source`` (int64 ``2B``: the image of each row of the two views
    concatenated, the backbone's first batch).
    """

    options: TwoViewOptions


class TwoViewModel(nn.Module):
    """Backbone + projector applied to the views (and local crops) of a two-view batch.

    ``forward((x1, x2))`` with float ``B x 3 x H x W`` views returns ``(z1, z2)``, each
    ``B x D``; ``forward((x1, x2, local))`` with local crops ``N*B x 3 x h x w`` also returns
    their ``N*B x D`` projections. The two views go through the backbone in one batch (batch
    norm statistics over all ``2B`` views), the local crops in a second one.
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone = accept_any_size(backbone)
        self.projector = projector

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if not isinstance(inputs, (tuple, list)) or len(inputs) not in (2, 3):
            raise ValueError(
                "inputs must be a tuple of two views, or two views and the local crops "
                f"(batch.inputs). Got {type(inputs).__name__}"
            )
        n = inputs[0].shape[0]
        z = self.projector(self.backbone(torch.cat(list(inputs[:2]))))
        if len(inputs) == 2:
            return z[:n], z[n:]
        return z[:n], z[n:], self.projector(self.backbone(inputs[2]))


class MultiCropNet(nn.Module):
    """Backbone and head over crops of several sizes (the official DINO ``MultiCropWrapper``).

    ``forward(crops)`` with a sequence of float ``N_j x 3 x h_j x w_j`` tensors (one per crop
    size) runs the backbone once per tensor and the head once on the features concatenated:
    float ``sum(N_j) x D``, rows in the order given.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
        features = [self.backbone(x) for x in crops]
        return self.head(features[0] if len(features) == 1 else torch.cat(features))


def split_crops(outputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """``[z1, z2, l_1, .., l_N]`` (``B`` rows each) of ``(z1, z2)`` or ``(z1, z2, local)``
    where ``local`` holds the ``N*B`` local rows crop-major."""
    crops = list(outputs[:2])
    if len(outputs) > 2:
        crops += list(outputs[2].split(outputs[0].shape[0]))
    return crops


def crop_pairs(num_crops: int, symmetric: bool = True) -> list[tuple[int, int, float]]:
    """The ``(global g, crop c, weight)`` pairs of the multi-crop loss (module docstring).

    Every crop ``c != g`` is paired with each global view ``g`` in {0, 1}. For a ``symmetric``
    two-view loss (``L(a, b) == L(b, a)``) the two orders of the global pair are one term of
    weight 2; weights sum to ``2 (num_crops - 1)``.
    """
    if num_crops < 2:
        raise ValueError(f"num_crops must be >= 2 (the two views). Got {num_crops}")
    pairs = [(g, c, 1.0) for g in (0, 1) for c in range(num_crops) if c != g]
    if symmetric:
        pairs = [(0, 1, 2.0)] + [(g, c, w) for g, c, w in pairs if c >= 2]
    return pairs


def multi_crop_loss(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    crops: list[torch.Tensor], symmetric: bool = True) -> torch.Tensor:
    """``sum_w w * loss(crops[g], crops[c]) / sum_w w`` over :func:`crop_pairs`: exactly
    ``loss(crops[0], crops[1])`` for two views of a symmetric loss."""
    pairs = crop_pairs(len(crops), symmetric)
    if len(pairs) == 1:
        return loss(crops[0], crops[1])
    total = sum(w * loss(crops[g], crops[c]) for g, c, w in pairs)
    return total / sum(w for _, _, w in pairs)  # type: ignore[return-value]


def crop_rows(views: list[tuple[str, torch.Tensor, int]], options: CollatorOptions,
              max_images: int) -> list[tuple[str, torch.Tensor]]:
    """``sslpipe show`` rows of crops: for each ``(name, N*B x 3 x h x w, N)`` one row per
    crop ``k`` (``"{name} k"``, or ``name`` when ``N`` is 1) with its first ``max_images``."""
    rows = []
    for name, x, count in views:
        for k, part in enumerate(x.chunk(count), 1):
            caption = name if count == 1 else f"{name} {k}"
            rows.append((caption, denormalize(part[:max_images].float().cpu(), options.mean,
                                              options.std)))
    return rows


def check_scale(name: str, scale: tuple[float, float]) -> None:
    """Raise ValueError unless ``scale`` is ``(lo, hi)`` with ``0 < lo <= hi <= 1``."""
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"{name} must be (lo, hi) with 0 < lo <= hi <= 1. Got {scale}")


def odd_kernel(side: int) -> int:
    """Blur taps of 10 % of ``side``, made odd (SimCLR's rule: 23 at 224 px, 9 at 96)."""
    return int(0.1 * side) // 2 * 2 + 1
