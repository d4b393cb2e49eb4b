"""Context encoder (Pathak et al., "Context Encoders: Feature Learning by Inpainting", CVPR 2016;
official code ``pathak22/context-encoder``).

A region of each image is blanked and the network paints it back from its context. Input: a
random square of ``crop_side`` (128/350) of the shorter side, resized to ``size``, flipped with
probability ``flip`` (the official ``donkey_folder.lua``: shorter side resized to 350 px, a random
128 px window, a flip with probability 1/2). Masks (``sslpipe.ops.masks``):

* ``"center"`` (default): the central square of side ``size / 2``. The blank hole is that square
  shrunk by ``overlap`` pixels on each side (4 px at 128, the official commands'
  ``overlapPred=4``, scaled with ``size``); the model predicts the whole central square, and the
  visible ``overlap`` band around the hole weighs ``overlap_weight`` (10) times the hole in the L2
  loss (``train.lua``);
* ``"random_block"``: random squares of side ``size/8 .. size/4`` until about ``coverage``
  (1/4) of the image is blank (the paper; no official code);
* ``"random_region"``: smooth random noise (``train_random.lua``'s scale) thresholded per image:
  blobs covering ``coverage`` of the image.

For the random masks the model predicts the full image, weighted by ``random_weights``: by
default 1 on every pixel, as ``train_random.lua`` in the README's command
(``useOverlapPred=0``); ``"context"`` (hole 1, every visible pixel ``overlap_weight``:
``useOverlapPred=1``), ``"band"`` (hole 1, a visible band of ``overlap`` px ``overlap_weight``,
the rest 0) and ``"hole"`` (the paper's masked L2) are the alternatives. Blank pixels hold the
dataset mean (0 after normalisation). The model decodes the backbone's last feature map
(``forward_features``) with a channel-wise fully connected layer, a 1x1 conv and
up-convolutions.

With ``adversarial_weight > 0`` the model also holds a small DCGAN discriminator and the loss
adds ``adversarial_weight * G_adv + D_loss``; the two adversarial parts touch disjoint
parameters (see :func:`adversarial_losses`), so the trainer's one backward of the sum trains
both. The paper weighs reconstruction 0.999 and adversarial 0.001 (``adversarial_weight``
about 0.001).

Size: one task, read in one file: its options (each with the official code's value), the
collator of its three masks, the loss with its adversarial term, the drawing and the model. The
shared machinery is elsewhere: masks and their weights in ``sslpipe.ops.masks``, the decoder in
``sslpipe.tasks.decoders``, the discriminator and GAN losses in ``sslpipe.tasks.gan``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.batch import Batch, HostBatch
from sslpipe.ops.color import denormalize, normalize
from sslpipe.ops.geometry import hflip, resized_crop
from sslpipe.ops.images import Images
from sslpipe.ops.masks import (
    OVERLAP_WEIGHT,
    RANDOM_WEIGHTS,
    block_masks,
    center_mask,
    center_region,
    random_mask_weights,
    region_masks,
)
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
from sslpipe.tasks.decoders import probe_feature_map, upconv_decoder
from sslpipe.tasks.gan import Discriminator, adversarial_losses
from sslpipe.tasks.heads import feature_map

MASKS = ("center", "random_block", "random_region")


@dataclass(frozen=True)
class ContextEncoderOptions(CollatorOptions):
    """Options of the context-encoder task.

    Attributes:
        size: image side in pixels (128 in the paper).
        mask: ``"center"``, ``"random_block"`` or ``"random_region"``.
        overlap: width of the weighted visible band around the hole; None scales the official
            commands' 4 px at 128 to ``size`` (``round(4 * size / 128)``; the paper says 7).
        overlap_weight: loss weight of the band relative to the hole (10, as the official
            ``overlapL2Weight`` and the paper).
        random_weights: loss weights of the random masks' whole-image prediction:
            ``"uniform"`` (official README command), ``"context"``, ``"band"`` or ``"hole"``
            (``ops.masks.random_mask_weights``).
        coverage: fraction of the image the random masks blank (about 1/4).
        crop: position of the square crop, ``"random"`` or ``"center"``.
        crop_side: side of the square crop as a fraction of the image's shorter side: 128/350,
            the official 128 px window of an image resized to 350 px; 1.0 keeps the whole
            shorter side.
        flip: probability of a horizontal flip (0.5, as the official loader).
        adversarial_weight: weight of the generator's adversarial loss; 0 (default) builds no
            discriminator.
        decoder_dim: channels after the channel-wise fully connected layer.
    """

    size: int = 128
    mask: str = "center"
    overlap: int | None = None
    overlap_weight: float = OVERLAP_WEIGHT
    random_weights: str = "uniform"
    coverage: float = 0.25
    crop: str = "random"
    crop_side: float = 128 / 350
    flip: float = 0.5
    adversarial_weight: float = 0.0
    decoder_dim: int = 512

    def __post_init__(self) -> None:
        check_positive("size", self.size)
        if self.size < 8:
            raise ValueError(f"size must be >= 8 for a context encoder. Got {self.size}")
        check_choice("mask", self.mask, MASKS)
        if self.overlap is not None and not 0 <= self.overlap < self.size // 4:
            raise ValueError(
                f"overlap must be in 0..{self.size // 4 - 1} for size {self.size} (the hole "
                f"must stay non-empty). Got {self.overlap}"
            )
        check_positive("overlap_weight", self.overlap_weight)
        check_choice("random_weights", self.random_weights, RANDOM_WEIGHTS)
        if not 0.0 < self.crop_side <= 1.0:
            raise ValueError(f"crop_side must be in (0, 1]. Got {self.crop_side}")
        if not 0.0 < self.coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1). Got {self.coverage}")
        check_choice("crop", self.crop, ("random", "center"))
        check_probability("flip", self.flip)
        check_positive("adversarial_weight", self.adversarial_weight, allow_zero=True)
        check_positive("decoder_dim", self.decoder_dim)

    @property
    def overlap_px(self) -> int:
        """The overlap band width in pixels (the option, or 4 px at 128 scaled to ``size``)."""
        if self.overlap is not None:
            return self.overlap
        return min(int(4 * self.size / 128 + 0.5), self.size // 4 - 1)

    @property
    def output_size(self) -> int:
        """Side of the predicted area: ``size // 2`` for the centre mask, else ``size``."""
        return self.size // 2 if self.mask == "center" else self.size


class ContextEncoderCollator(Collator):
    """Square crop, resize, flip, blank a region; targets are the original pixels.

    Returns a Batch with ``inputs`` float ``B x 3 x size x size`` (normalised, blank pixels 0),
    ``labels`` int64 ``B`` or None, ``meta`` ``boxes`` (``B x 4``), ``flip`` (bool ``B``) and
    ``mask``, and ``targets`` a dict:

    * ``image``: float normalised original pixels of the predicted area, ``B x 3 x R x R``
      (``R = size // 2``, the central square, for ``mask="center"``; ``R = size`` otherwise);
    * ``mask``: bool ``B x 1 x size x size``, True where the input is blank;
    * ``weights``: float ``B x 1 x R x R`` loss weight of each target pixel: for the centre
      mask 1 in the hole and ``overlap_weight`` in the visible band around it; for the random
      masks the ``random_weights`` rule.
    """

    options: ContextEncoderOptions

    def make_host(self, images: Images, generator: torch.Generator | None) -> HostBatch:
        opt = self.options
        n, s = len(images), opt.size
        boxes = _square_windows(images.sizes(), opt.crop_side, opt.crop, generator)
        x = resized_crop(images.images, boxes, s)
        flip = torch.rand(n, generator=generator) < opt.flip
        meta = {"boxes": boxes, "flip": flip}
        if opt.mask == "random_block":
            meta["mask"] = block_masks(n, s, opt.coverage, generator)
        elif opt.mask == "random_region":
            meta["mask"] = region_masks(n, s, opt.coverage, generator)
        return HostBatch({"crops": x}, images.labels, meta)

    def make_device(self, host: HostBatch) -> Batch:
        opt = self.options
        s, o = opt.size, opt.overlap_px
        x = hflip(host.pixels["crops"], host.meta["flip"])
        n = x.shape[0]
        original = normalize(x, opt.mean, opt.std)
        device = original.device
        meta = meta_on(host.meta, device)
        if opt.mask == "center":
            start, side = center_region(s)
            mask, weights = center_mask(n, s, o, opt.overlap_weight, device)
            target = original[..., start:start + side, start:start + side]
            meta["mask"] = mask
        else:
            mask = meta["mask"]
            weights = random_mask_weights(mask, opt.random_weights, o, opt.overlap_weight)
            target = original
        inputs = original.masked_fill(mask, 0.0)
        targets = {"image": target.contiguous(), "mask": mask, "weights": weights}
        return Batch(inputs, targets, labels_on(host, device), meta)


@register_task("context_encoder",
               "inpaint a blanked region from its context (Pathak et al. 2016)")
class ContextEncoder(Task):
    """Context encoder: reconstruct blanked pixels (L2 with overlap weights, optional GAN)."""

    Options = ContextEncoderOptions
    Collator = ContextEncoderCollator
    options: ContextEncoderOptions

    def build(self, backbone: nn.Module) -> nn.Module:
        opt = self.options
        return ContextEncoderModel(backbone, opt.size, opt.output_size, opt.decoder_dim,
                                   adversarial=opt.adversarial_weight > 0)

    def loss(self, outputs: dict[str, torch.Tensor | nn.Module], batch: Batch) -> torch.Tensor:
        t = _targets(batch)
        pred = outputs["pred"] if isinstance(outputs, dict) else outputs
        if not isinstance(pred, torch.Tensor):
            raise ValueError(f"outputs['pred'] must be a tensor. Got {type(pred).__name__}")
        loss = context_encoder_loss(pred, t["image"], t["weights"])
        if self.options.adversarial_weight > 0:
            disc = outputs.get("discriminator") if isinstance(outputs, dict) else None
            if not isinstance(disc, nn.Module):
                raise ValueError(
                    "outputs must hold the model's 'discriminator' when adversarial_weight > 0 "
                    "(build the model with this task)"
                )
            fake = pred if self.options.mask == "center" else torch.where(
                t["mask"], pred, t["image"])
            g_adv, d_loss = adversarial_losses(disc, fake, t["image"])
            loss = loss + self.options.adversarial_weight * g_adv + d_loss
        return loss

    def visualize(self, batch: Batch, max_images: int = 8) -> list[tuple[str, torch.Tensor]]:
        opt = self.options
        t = {k: v[:max_images].float().cpu() for k, v in _targets(batch).items()}
        x = batch.inputs if isinstance(batch.inputs, torch.Tensor) else batch.inputs[0]
        masked = denormalize(x[:max_images].float().cpu(), opt.mean, opt.std)
        target = denormalize(t["image"], opt.mean, opt.std)
        weights = t["weights"]
        if opt.mask == "center":
            start, side = center_region(opt.size)
            full_target = masked.clone()
            full_target[..., start:start + side, start:start + side] = target
            full_weights = torch.zeros_like(t["mask"])
            full_weights[..., start:start + side, start:start + side] = weights
            target, weights = full_target, full_weights
        area = (weights / opt.overlap_weight).clamp(max=1.0)
        shown = target * (weights > 0) + 0.5 * (weights == 0)
        return [
            ("input: masked image (blank = dataset mean)", masked),
            ("target: original pixels the loss compares (grey: not in the loss)", shown),
            (f"loss weights: hole 1 (grey), overlap band {opt.overlap_weight:g} (white)",
             area.sqrt().expand(-1, 3, -1, -1)),
        ]


def context_encoder_loss(pred: torch.Tensor, target: torch.Tensor,
                         weights: torch.Tensor) -> torch.Tensor:
    """Weighted L2 reconstruction loss (Pathak et al. 2016, eq. 1 with the overlap weights).

    ``L = sum w (pred - target)^2 / (C * #{w > 0})``: the mean weighted squared error over the
    pixels in the loss area (for the centre mask, every pixel of the predicted square, so
    this is the paper's weighted MSE).

    Args:
        pred, target: float ``B x C x R x R`` (normalised pixels).
        weights: float ``B x 1 x R x R``.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred must have the target's shape {tuple(target.shape)}. Got {tuple(pred.shape)}"
        )
    sq = (pred.float() - target.float()).pow(2) * weights
    count = (weights > 0).sum().clamp_min(1) * pred.shape[1]
    return sq.sum() / count


def _targets(batch: Batch) -> dict[str, torch.Tensor]:
    if not isinstance(batch.targets, dict) or "weights" not in batch.targets:
        raise ValueError(
            "batch.targets must be the context-encoder collator's dict (image, mask, weights). "
            f"Got {type(batch.targets).__name__}"
        )
    return batch.targets


class ContextEncoderModel(nn.Module):
    """Backbone encoder + channel-wise fully connected layer + up-convolution decoder.

    ``forward(x)``: ``B x 3 x size x size`` -> ``{"pred": B x 3 x R x R}`` (normalised pixels
    of the predicted area), plus ``"discriminator"`` (this model's discriminator module) when
    built with ``adversarial=True``, for the loss to call.
    """

    def __init__(self, backbone: nn.Module, size: int, output_size: int, decoder_dim: int,
                 adversarial: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.output_size = output_size
        channels, self.grid = probe_feature_map(backbone, size)
        positions = self.grid[0] * self.grid[1]
        # Channel-wise FC (the paper's bottleneck): each channel mixes all its spatial
        # positions, with no parameters shared across channels.
        bound = 1.0 / math.sqrt(positions)
        self.channel_fc = nn.Parameter(
            torch.empty(channels, positions, positions).uniform_(-bound, bound))
        self.channel_bias = nn.Parameter(torch.zeros(channels, positions))
        self.decoder = upconv_decoder(channels, decoder_dim, min(self.grid), output_size)
        self.discriminator = Discriminator(output_size) if adversarial else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | nn.Module]:
        f = feature_map(self.backbone, x)
        if tuple(f.shape[-2:]) != self.grid:
            raise ValueError(
                f"x: the backbone's feature map is {f.shape[-2]}x{f.shape[-1]} but the model was "
                f"built for {self.grid[0]}x{self.grid[1]}; feed images of the task's `size`"
            )
        b, c = f.shape[:2]
        flat = torch.einsum("bcn,cnm->bcm", f.flatten(2), self.channel_fc) + self.channel_bias
        y = self.decoder(flat.view(b, c, *self.grid))
        if y.shape[-1] != self.output_size or y.shape[-2] != self.output_size:
            y = F.interpolate(y, size=(self.output_size, self.output_size), mode="bilinear",
                              align_corners=False)
        out: dict[str, torch.Tensor | nn.Module] = {"pred": y}
        if self.discriminator is not None:
            out["discriminator"] = self.discriminator
        return out


def _square_windows(sizes: list[tuple[int, int]], side: float, crop: str,
                    generator: torch.Generator | None) -> torch.Tensor:
    """``B x 4`` boxes of squares of ``side`` times each image's shorter side, centred
    (``crop="center"``) or at a uniformly random integer position (``"random"``; x and y
    drawn independently, as ``donkey_folder.lua``'s random window)."""
    hw = torch.tensor(sizes, dtype=torch.float32).reshape(len(sizes), 2)
    h, w = hw[:, 0], hw[:, 1]
    s = torch.clamp(torch.round(torch.minimum(h, w) * side), min=1)
    u = torch.rand(len(sizes), 2, generator=generator)
    if crop == "center":
        x0, y0 = torch.floor((w - s) / 2), torch.floor((h - s) / 2)
    else:
        x0 = torch.minimum(torch.floor(u[:, 0] * (w - s + 1)), w - s)
        y0 = torch.minimum(torch.floor(u[:, 1] * (h - s + 1)), h - s)
    return torch.stack([x0, y0, x0 + s, y0 + s], 1)
