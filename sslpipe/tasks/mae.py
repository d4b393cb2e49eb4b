"""Masked autoencoders (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022).

Following the official code (facebookresearch/mae, ``models_mae.py``, ``main_pretrain.py``):

* **Views**: a random resized crop (area 20-100 %, ratio 3/4-4/3) and a horizontal flip with
  probability 1/2, normalised with the ImageNet mean and std.
* **Mask** (the pseudo-label, drawn in the host stage): per image, uniform noise over the
  ``N = (size / patch_size)^2`` patches is sorted and the ``round(mask_ratio * N)`` patches with
  the largest noise are masked (75 % by default); ``meta["mask"]`` is bool ``B x N``, True =
  masked, row-major patch order.
* **Encoder**: the timm ViT's patch embedding plus its position embedding, then only the visible
  patches, with the class token (and any register tokens) prepended, run through ``blocks`` and
  ``norm``. ``fixed_pos_embed`` fills the ViT's ``pos_embed`` with the official fixed 2-D
  sin-cos table and freezes it.
* **Decoder**: Linear to ``decoder_dim``, a learned mask token at every masked position, a fixed
  2-D sin-cos position embedding, ``decoder_depth`` transformer blocks with ``decoder_heads``
  heads (paper: 8 blocks of 512 wide, 16 heads), LayerNorm and a Linear to ``p * p * 3`` pixels
  per patch; Xavier-uniform Linear layers and N(0, 0.02) tokens as ``initialize_weights``.
* **Loss** (:func:`mae_loss`): the MSE per patch against the patch of the normalised image,
  each target patch first normalised by its own mean and (unbiased) variance
  (``norm_pix_loss``, eps 1e-6), averaged over the masked patches only.

A backbone that is not a timm ``VisionTransformer`` (a ConvNet) cannot drop patches: it gets
SimMIM's encoder instead (:mod:`sslpipe.tasks.simmim`: a learned mask token pasted into the
masked patches of the input, a 1x1-conv + pixel-shuffle decoder from the last feature map),
with MAE's targets and loss unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from sslpipe.batch import Batch, HostBatch
from sslpipe.ops.color import denormalize, normalize
from sslpipe.ops.geometry import hflip, random_resized_crop_boxes, resized_crop
from sslpipe.ops.images import Images
from sslpipe.registry import register_task
from sslpipe.tasks.base import (
    Collator,
    CollatorOptions,
    Task,
    check_positive,
    check_probability,
    labels_on,
    meta_on,
)
from sslpipe.tasks.heads import patchify, unpatchify
from sslpipe.tasks.mae_model import MAEModel, build_masked_model

__all__ = ["MAE", "MAECollator", "MAEOptions", "MAEModel", "mae_loss", "random_patch_mask"]


@dataclass(frozen=True)
class MAEOptions(CollatorOptions):
    """Options of the MAE task (defaults: the paper's ImageNet pretraining).

    Attributes:
        size: output side in pixels; a multiple of ``patch_size``, and the input size of the
            ViT (``vit_small_patch16_224``: 224; ``vit_tiny_patch4_32``: 32).
        patch_size: side of a masked patch in pixels; must equal the ViT's patch size.
        mask_ratio: share of the patches masked per image, in (0, 1); 0.75 in the paper.
        crop_scale: range of the crop's share of the image area (0.2-1 in the official code).
        crop_ratio: range of the crop's aspect ratio, log-uniform.
        flip: probability of a horizontal flip.
        norm_pix_loss: normalise each target patch by its own mean and std (the official
            ``--norm_pix_loss``, used for the paper's results).
        decoder_dim, decoder_depth, decoder_heads: the decoder's width, blocks and heads (paper:
            512, 8, 16).
        fixed_pos_embed: fill the ViT's ``pos_embed`` with the 2-D sin-cos table and freeze it
            (official); False keeps timm's learned one.
    """

    size: int = 224
    patch_size: int = 16
    mask_ratio: float = 0.75
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    norm_pix_loss: bool = True
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    fixed_pos_embed: bool = True

    def __post_init__(self) -> None:
        for name in ("size", "patch_size", "decoder_dim", "decoder_depth", "decoder_heads"):
            check_positive(name, getattr(self, name))
        if self.size % self.patch_size:
            raise ValueError(f"size must be a multiple of patch_size={self.patch_size}. Got "
                             f"{self.size}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1). Got {self.mask_ratio}")
        masked = round(self.mask_ratio * self.num_patches)
        if not 0 < masked < self.num_patches:
            raise ValueError(f"mask_ratio={self.mask_ratio} masks {masked} of the "
                             f"{self.num_patches} patches; at least one must be masked and one "
                             "visible (a larger size or a smaller patch_size)")
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(f"decoder_dim must be a multiple of decoder_heads="
                             f"{self.decoder_heads}. Got {self.decoder_dim}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must be (lo, hi) with 0 < lo <= hi <= 1. "
                             f"Got {self.crop_scale}")
        if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must be (lo, hi) with 0 < lo <= hi. "
                             f"Got {self.crop_ratio}")
        check_probability("flip", self.flip)

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patches per image, ``N``."""
        return self.grid * self.grid


def random_patch_mask(batch: int, num_patches: int, mask_ratio: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool ``batch x num_patches``, True = masked: exactly ``round(mask_ratio * num_patches)``
    per row, a uniformly random subset per image.

    As the official ``random_masking``: uniform noise per patch, argsort; the patches ranked
    last (largest noise) are masked.
    """
    noise = torch.rand(batch, num_patches, generator=generator)
    rank = noise.argsort(1).argsort(1)
    return rank >= num_patches - round(mask_ratio * num_patches)


class MAECollator(Collator):
    """Random resized crop, flip and a random patch mask per image.

    Returns a Batch with ``inputs`` a pair: float ``B x 3 x size x size`` (normalised) and the
    mask as a float ``B x 1 x g x g`` grid (``g = size / patch_size``, 1 = masked, what the
    model reads); ``targets`` float ``B x N x (p * p * 3)``, the patches of the normalised
    images (:func:`~sslpipe.tasks.heads.patchify`); ``labels`` int64 ``B`` or None; ``meta``:
    ``boxes`` (float ``B x 4`` crop boxes in source pixels), ``flip`` (bool ``B``) and ``mask``
    (bool ``B x N``, True = masked, row-major patches).
    """

    options: MAEOptions

    def make_host(self, images: Images, generator: torch.Generator | None) -> HostBatch:
        opt = self.options
        n = len(images)
        boxes = random_resized_crop_boxes(images.sizes(), generator, opt.crop_scale,
                                          opt.crop_ratio)
        x = resized_crop(images.images, boxes, opt.size)
        flip = torch.rand(n, generator=generator) < opt.flip
        mask = random_patch_mask(n, opt.num_patches, opt.mask_ratio, generator)
        return HostBatch({"crops": x}, images.labels, {"boxes": boxes, "flip": flip,
                                                        "mask": mask})

    def make_device(self, host: HostBatch) -> Batch:
        opt = self.options
        x = hflip(host.pixels["crops"], host.meta["flip"]).contiguous()
        images = normalize(x, opt.mean, opt.std)
        device = images.device
        meta = meta_on(host.meta, device)
        grid = meta["mask"].to(images.dtype).view(-1, 1, opt.grid, opt.grid)
        targets = patchify(images, opt.patch_size)
        return Batch((images, grid), targets, labels_on(host, device), meta)


@register_task("mae", "reconstruct the pixels of 75% masked patches from the visible ones "
               "(He et al. 2022)")
class MAE(Task):
    """Masked autoencoder: encoder on the visible patches, light decoder, masked-pixel MSE."""

    Options = MAEOptions
    Collator = MAECollator
    options: MAEOptions

    def build(self, backbone: nn.Module) -> nn.Module:
        """:class:`MAEModel` for a timm ``VisionTransformer`` (its patch size and grid must
        match ``patch_size`` and ``size``: a ValueError says which option to change), SimMIM's
        masked-input model for any other timm backbone."""
        return build_masked_model(backbone, self.options)

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return mae_loss(outputs, cast(torch.Tensor, batch.targets), batch.meta["mask"],
                        self.options.norm_pix_loss)

    def visualize(self, batch: Batch, max_images: int = 8) -> list[tuple[str, torch.Tensor]]:
        """The inputs, and what the encoder sees (masked patches gray)."""
        opt = self.options
        images = cast(tuple, batch.inputs)[0][:max_images].float().cpu()
        mask = batch.meta["mask"][:max_images].cpu()
        pictures = denormalize(images, opt.mean, opt.std)
        rows = patchify(pictures, opt.patch_size).masked_fill(mask[..., None], 0.5)
        seen = unpatchify(rows, opt.patch_size, (opt.grid, opt.grid))
        return [("inputs", pictures),
                (f"visible patches ({opt.mask_ratio:.0%} masked, gray)", seen)]


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
             norm_pix: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """MAE's loss: the mean over masked patches of the per-patch mean squared error.

    Args:
        pred: float ``B x N x D`` predicted patches (``D = p * p * 3``).
        target: float ``B x N x D`` patches of the normalised image.
        mask: bool ``B x N``, True = masked (only these count).
        norm_pix: normalise each target patch as ``(t - mean(t)) / sqrt(var(t) + eps)`` over its
            ``D`` values, with the unbiased variance (the official ``norm_pix_loss``).

    ``loss = sum_{b,i} m_bi * mean_d (pred_bid - t_bid)^2 / sum_{b,i} m_bi``, as
    ``forward_loss`` of facebookresearch/mae ``models_mae.py``. Returns a 0-dim float tensor.
    """
    if pred.shape != target.shape or mask.shape != pred.shape[:2]:
        raise ValueError(f"pred and target must be B x N x D and mask B x N. Got "
                         f"{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}")
    target = target.to(pred.dtype)
    if norm_pix:
        mean = target.mean(-1, keepdim=True)
        var = target.var(-1, keepdim=True)
        target = (target - mean) / (var + eps).sqrt()
    per_patch = (pred - target).pow(2).mean(-1)
    weight = mask.to(per_patch.dtype)
    return (per_patch * weight).sum() / weight.sum()
