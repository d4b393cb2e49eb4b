"""SimMIM-style masked image modelling for backbones that cannot drop tokens (ConvNets).

Xie et al., "SimMIM: A Simple Framework for Masked Image Modeling", CVPR 2022 (official code
microsoft/SimMIM, ``models/simmim.py``): the encoder sees the whole image with every masked patch
replaced by a learned mask token, and a light decoder (one 1x1 convolution to
``stride^2 * 3`` channels and a pixel shuffle) predicts the pixels from the last feature map.
SimMIM puts the token in the patch-embedding space of its transformers; a ConvNet has no such
space, so here the token is a learned ``3 x p x p`` pixel patch pasted into each masked patch
of the (normalised) input, the nearest thing its first convolution can read.

:class:`MaskedConvModel` is what the ``mae`` task builds for a backbone that is not a timm
``VisionTransformer`` (any timm model whose ``forward_features`` gives a feature map or tokens):
it returns its prediction as patch rows, so MAE's loss (:func:`sslpipe.tasks.mae.mae_loss`)
applies unchanged. :func:`simmim_loss` is SimMIM's own loss (L1 on the raw pixels of masked
patches), for reference and for a later ``simmim`` task.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.tasks.heads import feature_dim, feature_map, patchify

__all__ = ["MaskedConvModel", "simmim_loss"]


class MaskedConvModel(nn.Module):
    """Mask token pasted into the masked input patches -> backbone -> linear pixel decoder.

    Args:
        backbone: a timm model (``num_classes=0``) with ``forward_features``.
        patch_size: side of a mask patch in pixels (the collator's ``patch_size``).
        stride: the backbone's total stride at its last feature map (``feature_info``'s last
            ``reduction``); the decoder upsamples by it.
        in_chans: image channels.

    ``forward((images, mask_grid))``: float ``B x C x H x W`` normalised images and float
    ``B x 1 x H/p x W/p`` (1 = masked) -> predicted pixels as patch rows
    ``B x N x (p * p * C)`` (:func:`~sslpipe.tasks.heads.patchify` order), for every patch.
    """

    def __init__(self, backbone: nn.Module, patch_size: int, stride: int, in_chans: int = 3):
        super().__init__()
        self.backbone = backbone
        self.patch_size = patch_size
        self.stride = stride
        self.mask_token = nn.Parameter(torch.zeros(1, in_chans, patch_size, patch_size))
        nn.init.trunc_normal_(self.mask_token, std=0.02)  # as SimMIM's mask token
        self.decoder = nn.Sequential(
            nn.Conv2d(feature_dim(backbone), stride * stride * in_chans, 1),
            nn.PixelShuffle(stride),
        )

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, grid = inputs
        p = self.patch_size
        gh, gw = grid.shape[-2:]
        hole = grid.to(images.dtype).repeat_interleave(p, 2).repeat_interleave(p, 3)
        token = self.mask_token.to(images.dtype).repeat(1, 1, gh, gw)
        x = images * (1 - hole) + token * hole
        y = self.decoder(feature_map(self.backbone, x))
        if y.shape[-2:] != images.shape[-2:]:  # a stride that does not divide the input
            y = F.interpolate(y, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return patchify(y, p)


def simmim_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SimMIM's loss: the mean absolute error over the values of the masked patches.

    ``pred``, ``target``: float ``B x N x D`` patch rows; ``mask``: bool ``B x N`` (True =
    masked). ``loss = sum(|pred - target| * mask) / (sum(mask) * D)``, the official
    ``F.l1_loss(reduction='none')`` weighted by the pixel mask, divided by the masked pixels
    and the channels (microsoft/SimMIM, ``models/simmim.py``; its ``1e-5`` guard is left out:
    every image has masked patches).
    """
    weight = mask.to(pred.dtype).unsqueeze(-1)
    return ((pred - target).abs() * weight).sum() / (weight.sum() * pred.shape[-1])
