"""Colour matrices against chromatic shortcuts: gray, the green-magenta projection, jitter.

Chromatic aberration tells a network where a patch lay in the lens' field; the jigsaw and
relative-patch papers remove the cue by greying some inputs or projecting colours off the
green-magenta axis (Doersch, Gupta & Efros 2015). Here these are ``3 x 3`` (or ``3 x 4``
affine) matrices on RGB in [0, 1], drawn per tile on the CPU generator (a host stage) and
applied by :func:`sslpipe.ops.color.normalize` with the mean/std normalisation, in one pass
(a device stage).
"""

from __future__ import annotations

import torch

from sslpipe.ops.augment import AVERAGE_GRAY_WEIGHTS


def green_magenta_projection() -> torch.Tensor:
    """The ``3 x 3`` RGB projection ``I - a a^T / |a|^2``, ``a = (1, -2, 1)``: removes the
    green-magenta colour axis (Doersch, Gupta & Efros 2015, against chromatic aberration; the
    jigsaw ``caffe-master-jps++`` code applies it as ``[[5, 2, -1], [2, 2, 2], [-1, 2, 5]] / 6``).
    Symmetric and idempotent; gray (R = G = B) is left unchanged."""
    a = torch.tensor([1.0, -2.0, 1.0])
    return torch.eye(3) - torch.outer(a, a) / a.dot(a)


def tile_colour_matrices(gray: torch.Tensor, project: torch.Tensor, strength: float,
                          generator: torch.Generator | None) -> torch.Tensor:
    """``B x T x 3 x 4`` matrices on RGB in [0, 1]: gray (the RGB average) where ``gray``
    (``B x T``), else the green-magenta projection where ``project`` (``B``), after per-tile
    brightness * saturation factors of strength ``strength`` (identity at 0)."""
    b, k = gray.shape
    bright = 1 + (torch.rand(b, k, generator=generator) * 2 - 1) * strength
    sat = 1 + (torch.rand(b, k, generator=generator) * 2 - 1) * strength
    average = torch.tensor(AVERAGE_GRAY_WEIGHTS).expand(3, 3)
    s = sat.view(b, k, 1, 1)
    m = (s * torch.eye(3) + (1 - s) * average) * bright.view(b, k, 1, 1)
    colour = torch.where(project.view(b, 1, 1, 1), green_magenta_projection() @ m, m)
    m = torch.where(gray.view(b, k, 1, 1), average @ m, colour)
    return torch.cat([m, torch.zeros(b, k, 3, 1)], dim=-1)
