"""Adversarial machinery shared by generative pretext tasks: a DCGAN discriminator and the
non-saturating GAN losses built so that the trainer's single backward trains both players
(the context encoder's adversarial term, Pathak et al. 2016, ``pathak22/context-encoder``
``train.lua``, which adapts ``soumith/dcgan.torch``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


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
