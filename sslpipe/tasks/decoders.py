"""Decoders of pixel-predicting pretext tasks: from a backbone's feature map back to an image.

The context encoder (Pathak et al. 2016) decodes the backbone's last feature map
(:func:`~sslpipe.tasks.heads.feature_map`, ``B x C x h x w``) with up-convolutions that double
the side until it reaches the output; :func:`probe_feature_map` finds ``C`` and ``(h, w)`` for an
input size with one dummy forward, so a head can be sized before training.
"""

from __future__ import annotations

import torch
from torch import nn

from sslpipe.tasks.heads import feature_map


def upconv_decoder(channels: int, decoder_dim: int, side: int, output_size: int) -> nn.Sequential:
    """1x1 conv to ``decoder_dim`` channels, then 4x4 stride-2 up-convolutions (BatchNorm, ReLU;
    channels halved each time, at least 32) until the side ``side`` reaches ``output_size``,
    then a 3x3 conv to 3 channels: ``B x channels x side x side`` to ``B x 3 x S x S`` with
    ``S = side * 2**k >= output_size`` (the caller resizes when ``S`` overshoots)."""
    layers: list[nn.Module] = [
        nn.Conv2d(channels, decoder_dim, 1, bias=False), nn.BatchNorm2d(decoder_dim),
        nn.ReLU(inplace=True),
    ]
    dim = decoder_dim
    while side < output_size:
        out = max(dim // 2, 32)
        layers += [nn.ConvTranspose2d(dim, out, 4, stride=2, padding=1, bias=False),
                   nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        dim, side = out, side * 2
    layers.append(nn.Conv2d(dim, 3, 3, padding=1))
    return nn.Sequential(*layers)


def probe_feature_map(backbone: nn.Module, size: int) -> tuple[int, tuple[int, int]]:
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
