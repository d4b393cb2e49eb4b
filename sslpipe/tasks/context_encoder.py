"""Context encoder (Pathak et al., "Context Encoders: Feature Learning by Inpainting", CVPR 2016).

A region of each image is blanked and the network paints it back from its context. Masks:

* ``"center"`` (default): the central square of side ``size / 2``. As in the paper, the blank
  hole is that square shrunk by ``overlap`` pixels on each side (7 px at 128, scaled with
  ``size``); the model predicts the whole central square, and the visible ``overlap`` band
  around the hole weighs ``overlap_weight`` (10) times the hole in the L2 loss;
* ``"random_block"``: random squares of side ``size/8 .. size/4`` until about ``coverage``
  (1/4) of the image is blank;
* ``"random_region"``: smooth random noise thresholded per image at its ``1 - coverage``
  quantile: blobs covering ``coverage`` of the image.

For the random masks the model predicts the full image; the hole weighs 1, the visible band of
``overlap`` pixels around it ``overlap_weight``, the rest 0. Blank pixels hold the dataset mean
(0 after normalisation). The model decodes the backbone's last feature map (``forward_features``)
with a channel-wise fully connected layer, a 1x1 conv and up-convolutions.

With ``adversarial_weight > 0`` the model also holds a small DCGAN discriminator and the loss
adds ``adversarial_weight * G_adv + D_loss``; the two adversarial parts touch disjoint
parameters (see :func:`adversarial_losses`), so the trainer's one backward of the sum trains
both. The paper weighs reconstruction 0.999 and adversarial 0.001 (``adversarial_weight``
about 0.001).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sslpipe.batch import Batch, HostBatch
from sslpipe.ops.color import denormalize, normalize
from sslpipe.ops.geometry import hflip, square_crops
from sslpipe.ops.images import Images
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
from sslpipe.tasks.heads import feature_map

MASKS = ("center", "random_block", "random_region")


@dataclass(frozen=True)
class ContextEncoderOptions(CollatorOptions):
    """Options of the context-encoder task.

    Attributes:
        size: image side in pixels (128 in the paper).
        mask: ``"center"``, ``"random_block"`` or ``"random_region"``.
        overlap: width of the weighted visible band around the hole; None scales the paper's
            7 px at 128 to ``size`` (``round(7 * size / 128)``).
        overlap_weight: loss weight of the band relative to the hole (10 in the paper).
        coverage: fraction of the image the random masks blank (about 1/4).
        crop: square crop of non-square images, ``"random"`` or ``"center"``.
        flip: probability of a horizontal flip.
        adversarial_weight: weight of the generator's adversarial loss; 0 (default) builds no
            discriminator.
        decoder_dim: channels after the channel-wise fully connected layer.
    """

    size: int = 128
    mask: str = "center"
    overlap: int | None = None
    overlap_weight: float = 10.0
    coverage: float = 0.25
    crop: str = "random"
    flip: float = 0.0
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
        if not 0.0 < self.coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1). Got {self.coverage}")
        check_choice("crop", self.crop, ("random", "center"))
        check_probability("flip", self.flip)
        check_positive("adversarial_weight", self.adversarial_weight, allow_zero=True)
        check_positive("decoder_dim", self.decoder_dim)

    @property
    def overlap_px(self) -> int:
        """The overlap band width in pixels (the option, or 7 px at 128 scaled to ``size``)."""
        if self.overlap is not None:
            return self.overlap
        return min(int(7 * self.size / 128 + 0.5), self.size // 4 - 1)

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
    * ``weights``: float ``B x 1 x R x R`` loss weight of each target pixel: 1 in the hole,
      ``overlap_weight`` in the visible band around it, 0 elsewhere.
    """

    options: ContextEncoderOptions

    def make_host(self, images: Images, generator: torch.Generator | None) -> HostBatch:
        opt = self.options
        n, s = len(images), opt.size
        x, boxes = square_crops(images.images, s, opt.crop, generator)
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
            mask = torch.zeros(n, 1, s, s, dtype=torch.bool, device=device)
            mask[..., start + o:start + side - o, start + o:start + side - o] = True
            weights = torch.full((n, 1, side, side), opt.overlap_weight, device=device)
            weights[..., o:side - o, o:side - o] = 1.0
            target = original[..., start:start + side, start:start + side]
            meta["mask"] = mask
        else:
            mask = meta["mask"]
            band = dilate(mask, o) & ~mask
            weights = mask.float() + band.float() * opt.overlap_weight
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
        channels, self.grid = _probe_feature_map(backbone, size)
        positions = self.grid[0] * self.grid[1]
        # Channel-wise FC (the paper's bottleneck): each channel mixes all its spatial
        # positions, with no parameters shared across channels.
        bound = 1.0 / math.sqrt(positions)
        self.channel_fc = nn.Parameter(
            torch.empty(channels, positions, positions).uniform_(-bound, bound))
        self.channel_bias = nn.Parameter(torch.zeros(channels, positions))
        layers: list[nn.Module] = [
            nn.Conv2d(channels, decoder_dim, 1, bias=False), nn.BatchNorm2d(decoder_dim),
            nn.ReLU(inplace=True),
        ]
        dim, side = decoder_dim, min(self.grid)
        while side < output_size:
            out = max(dim // 2, 32)
            layers += [nn.ConvTranspose2d(dim, out, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            dim, side = out, side * 2
        layers.append(nn.Conv2d(dim, 3, 3, padding=1))
        self.decoder = nn.Sequential(*layers)
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


class Discriminator(nn.Module):
    """DCGAN-style discriminator: 4x4 stride-2 convs (BN, LeakyReLU 0.2) down to 4x4, then one
    logit per image. ``B x 3 x R x R`` -> ``B``."""

    def __init__(self, size: int, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        dim, side = width, size // 2
        while side > 4:
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(dim * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            dim, side = dim * 2, side // 2
        layers.append(nn.Conv2d(dim, 1, max(side, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1).mean(1)


def adversarial_losses(discriminator: nn.Module, fake: torch.Tensor,
                       real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G_adv, D_loss)`` of the non-saturating GAN, built so that one backward trains both.

    ``G_adv = BCE(D(fake), 1)`` is evaluated with the discriminator's parameters detached, so
    it moves only the generator; ``D_loss = BCE(D(real), 1) + BCE(D(fake.detach()), 0)`` sees a
    detached fake, so it moves only the discriminator.
    """
    frozen = {k: v.detach() for k, v in discriminator.named_parameters()}
    frozen.update(dict(discriminator.named_buffers()))
    g_logit = functional_call(discriminator, frozen, (fake,))
    g_adv = F.binary_cross_entropy_with_logits(g_logit, torch.ones_like(g_logit))
    d_real = discriminator(real)
    d_fake = discriminator(fake.detach())
    d_loss = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + (
        F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
    return g_adv, d_loss


def center_region(size: int) -> tuple[int, int]:
    """``(start, side)`` of the central square of side ``size // 2``."""
    side = size // 2
    return (size - side) // 2, side


def block_masks(n: int, size: int, coverage: float,
                generator: torch.Generator | None, max_blocks: int = 64) -> torch.Tensor:
    """Random square blocks (side ``size/8 .. size/4``) added until each image is at least
    ``coverage`` blank: bool ``n x 1 x size x size`` on the CPU."""
    lo, hi = max(1, size // 8), max(1, size // 4)
    sides = torch.randint(lo, hi + 1, (max_blocks, n), generator=generator)
    corner = torch.rand(max_blocks, 2, n, generator=generator)
    coords = torch.arange(size)
    mask = torch.zeros(n, 1, size, size, dtype=torch.bool)
    for k in range(max_blocks):
        need = mask.float().mean((1, 2, 3)) < coverage
        if not bool(need.any()):
            break
        x0 = (corner[k, 0] * (size - sides[k] + 1)).long()
        y0 = (corner[k, 1] * (size - sides[k] + 1)).long()
        cols = (coords >= x0[:, None]) & (coords < (x0 + sides[k])[:, None])
        rows = (coords >= y0[:, None]) & (coords < (y0 + sides[k])[:, None])
        block = rows[:, :, None] & cols[:, None, :]
        mask |= (block & need[:, None, None])[:, None]
    return mask


def region_masks(n: int, size: int, coverage: float,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Smooth random blobs covering ``coverage`` of each image: bool ``n x 1 x size x size``.

    Two octaves of uniform noise (4x4 and 8x8, bicubic-upsampled) are summed and each image is
    thresholded at its own ``1 - coverage`` quantile.
    """
    noise = torch.zeros(n, 1, size, size)
    for cells, amplitude in ((4, 1.0), (8, 0.5)):
        coarse = torch.rand(n, 1, cells, cells, generator=generator)
        noise += amplitude * F.interpolate(coarse, size=(size, size), mode="bicubic",
                                           align_corners=False)
    flat = noise.flatten(1)
    k = max(1, min(flat.shape[1], int(round((1 - coverage) * flat.shape[1]))))
    threshold = flat.kthvalue(k, dim=1).values
    return (flat > threshold[:, None]).view(n, 1, size, size)


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a bool ``B x 1 x H x W`` mask by a ``(2r+1)`` square."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0


def _probe_feature_map(backbone: nn.Module, size: int) -> tuple[int, tuple[int, int]]:
    """Channels and ``(h, w)`` of the backbone's feature map at ``size`` (one dummy forward)."""
    param = next(backbone.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            f = feature_map(backbone, torch.zeros(1, 3, size, size, device=device))
    finally:
        backbone.train(was_training)
    return int(f.shape[1]), (int(f.shape[-2]), int(f.shape[-1]))
