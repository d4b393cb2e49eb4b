"""SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020).

Two views of every image (random resized crop, flip, colour jitter, grayscale, Gaussian blur,
optional solarisation), a projection MLP, and the NT-Xent loss: each of the ``2B`` views must
pick out its partner among the other ``2B - 1``.

The collator is built for throughput on CPU workers (docs/design.md, "Where the time goes"): crop
boxes are drawn from the JPEG header size before decoding, each JPEG is decoded at the largest
DCT reduction (1/2, 1/4, 1/8) that keeps both views' crops at least ``size`` pixels on each
side (``dct_scaling=True``, an option of every collator; only JPEG bytes are affected), crops
are resized in uint8, and all
colour work is one ``3 x 4`` matrix per view fused with the normalisation. Blur is on by
default only at ``size >= 96``: the paper omits it for CIFAR-size images.

The shared two-view machinery (``TwoViewOptions``, ``TwoViewCollator``, ``TwoViewModel``) lives
in :mod:`sslpipe.tasks.multicrop` (re-exported here) and is reused by VICReg and BYOL. With
``multi_crop=N`` each image also gives ``N`` small local crops (SwAV's multi-crop), each compared
with the two views by NT-Xent (:func:`sslpipe.tasks.multicrop.multi_crop_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.batch import Batch
from sslpipe.ops.augment import ViewAugment
from sslpipe.registry import register_task
from sslpipe.tasks.base import CollatorOptions, Task, check_positive, check_probability
from sslpipe.tasks.heads import feature_dim, mlp
from sslpipe.tasks.multicrop import (
    TwoViewCollator,
    TwoViewModel,
    TwoViewOptions,
    crop_rows,
    multi_crop_loss,
    split_crops,
)

# the two-view machinery, re-exported for the tasks that import it from here
__all__ = ["SimCLR", "SimCLROptions", "TwoViewCollator", "TwoViewModel", "TwoViewOptions",
           "check_blur", "nt_xent", "view_rows", "wide_float"]


@dataclass(frozen=True)
class SimCLROptions(TwoViewOptions):
    """Options of the SimCLR task (defaults: the paper's ImageNet settings).

    Attributes:
        flip: probability of a horizontal flip per view.
        strength: colour distortion strength ``s``: jitter ``(0.8s, 0.8s, 0.8s, 0.2s)``.
        jitter_p: probability of the colour jitter per view.
        grayscale: probability of grayscale per view.
        blur: probability of a Gaussian blur per view; None means 0.5 when ``size >= 96`` and 0
            below (the paper blurs on ImageNet, not on CIFAR-10).
        blur_sigma: blur sigma range in pixels.
        blur_kernel: blur taps (odd); None means 10% of ``size`` (23 at 224 px).
        solarize: probability of solarisation per view (not in SimCLR; BYOL uses it).
        hidden_dim, projection_dim: projection MLP ``Linear-BN-ReLU-Linear`` widths.
        temperature: NT-Xent temperature: 0.1, the authors' ImageNet setting (their code's
            ``--temperature`` for ImageNet, LARS and batch 4096); 0.5 is their CIFAR-10 one.
        gather: under data parallelism, every rank's embeddings are the negatives (the global
            batch, as the authors' code); False: each rank's own (see :func:`nt_xent`).
        multi_crop, local_size, local_scale: local crops besides the two views
            (:class:`~sslpipe.tasks.multicrop.TwoViewOptions`; none by default).
    """

    flip: float = 0.5
    strength: float = 1.0
    jitter_p: float = 0.8
    grayscale: float = 0.2
    blur: float | None = None
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int | None = None
    solarize: float = 0.0
    hidden_dim: int = 2048
    projection_dim: int = 128
    temperature: float = 0.1
    gather: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("flip", "jitter_p", "grayscale", "solarize"):
            check_probability(name, getattr(self, name))
        if self.blur is not None:
            check_probability("blur", self.blur)
        check_positive("strength", self.strength, allow_zero=True)
        if self.strength > 2.5:
            raise ValueError(f"strength must be <= 2.5 (hue 0.2s <= 0.5). Got {self.strength}")
        check_blur(self.blur_sigma, self.blur_kernel)
        check_positive("hidden_dim", self.hidden_dim)
        check_positive("projection_dim", self.projection_dim)
        check_positive("temperature", self.temperature)

    def view_augments(self) -> tuple[ViewAugment, ...]:
        s = self.strength
        blur = self.blur if self.blur is not None else (0.5 if self.size >= 96 else 0.0)
        view = ViewAugment(
            flip=self.flip, jitter=(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s), jitter_p=self.jitter_p,
            grayscale=self.grayscale, blur=blur, blur_sigma=self.blur_sigma,
            blur_kernel=self.blur_kernel or self.default_blur_kernel(), solarize=self.solarize,
        )
        return (view, view)


@register_task("simclr", "pick the other view of each image among the batch, NT-Xent "
               "(Chen et al. 2020)")
class SimCLR(Task):
    """SimCLR: two views per image, projection MLP, NT-Xent loss."""

    sync_bn = True  # the paper's global BN: mean and variance over every device

    Options = SimCLROptions
    Collator = TwoViewCollator
    options: SimCLROptions

    def build(self, backbone: nn.Module) -> nn.Module:
        projector = mlp(feature_dim(backbone), self.options.hidden_dim,
                        self.options.projection_dim, num_layers=2)
        return TwoViewModel(backbone, projector)

    def loss(self, outputs: tuple[torch.Tensor, ...], batch: Batch) -> torch.Tensor:
        """NT-Xent of the two views; with local crops, the mean over the crop pairs
        (:func:`~sslpipe.tasks.multicrop.multi_crop_loss`)."""
        o = self.options
        return multi_crop_loss(lambda a, b: nt_xent(a, b, o.temperature, o.gather),
                               split_crops(outputs))

    def metrics(self, outputs: tuple[torch.Tensor, ...], batch: Batch
                ) -> dict[str, torch.Tensor]:
        z = F.normalize(torch.cat(outputs[:2]).detach().float(), dim=1)
        sim = (z @ z.T).fill_diagonal_(float("-inf"))
        partner = _partners(outputs[0].shape[0], z.device)
        return {"pretext_acc": (sim.argmax(1) == partner).float().mean()}

    def visualize(self, batch: Batch, max_images: int = 8) -> list[tuple[str, torch.Tensor]]:
        return view_rows(batch, self.options, max_images)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1,
            gather: bool = True) -> torch.Tensor:
    """NT-Xent (normalized temperature-scaled cross-entropy) of SimCLR.

    With ``u = z / ||z||`` over the ``2B`` rows of ``[z1; z2]`` and ``s_ij = u_i . u_j / t``,
    ``loss = 1/(2B) sum_i -log( exp(s_{i,p(i)}) / sum_{k != i} exp(s_ik) )`` where ``p(i)`` is
    the other view of the same image: both views serve as anchors.

    Under data parallelism (an initialized process group of ``W > 1`` ranks) and ``gather``,
    the negatives are the global batch's, as in the authors' code: each rank's rows are the
    anchors, every rank's rows (:func:`~sslpipe.ops.gather.gather_rows`) the keys, so the mean
    of the ranks' losses is the loss above on the whole ``W*B`` batch, and with DDP averaging
    the gradients are exactly its. ``gather=False``: each rank's ``B`` rows alone.

    Args:
        z1, z2: float ``B x D`` projections of the two views (row i of each: the same image).
        temperature: ``t`` > 0 (0.1: SimCLR's ImageNet setting; 0.5 its CIFAR-10 one).
        gather: use every rank's rows as negatives (no effect in a single process).
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be B x D with the same shape. Got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}"
        )
    check_positive("temperature", temperature)
    from sslpipe.ops.gather import gather_rows, world

    n = z1.shape[0]
    rank, size = world() if gather else (0, 1)
    u1, u2 = F.normalize(wide_float(z1), dim=1), F.normalize(wide_float(z2), dim=1)
    if size > 1:
        u1, u2 = gather_rows(u1), gather_rows(u2)
    keys = torch.cat([u1, u2])  # 2N rows: every rank's first views, then its second views
    total = size * n
    device = keys.device
    mine = torch.arange(rank * n, (rank + 1) * n, device=device)
    anchors = torch.cat([mine, mine + total])  # this rank's rows among the keys
    sim = keys[anchors] @ keys.T / temperature
    sim = sim.masked_fill(anchors[:, None] == torch.arange(2 * total, device=device), float("-inf"))
    return F.cross_entropy(sim, (anchors + total) % (2 * total))


def wide_float(x: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision embeddings (autocast), float64 kept."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _partners(n: int, device: torch.device) -> torch.Tensor:
    """int64 ``2B``: the row of each view's partner in ``[z1; z2]`` (made on the device: a
    copy from the host would wait for the stream)."""
    return torch.arange(2 * n, device=device).roll(n)


def check_blur(sigma: tuple[float, float], kernel: int | None) -> None:
    """Validate a blur sigma range and an optional odd kernel size."""
    if not 0 < sigma[0] <= sigma[1]:
        raise ValueError(f"blur_sigma must be (lo, hi) with 0 < lo <= hi. Got {sigma}")
    if kernel is not None and (kernel < 1 or kernel % 2 == 0):
        raise ValueError(f"blur_kernel must be an odd number >= 1. Got {kernel}")


def view_rows(batch: Batch, options: CollatorOptions, max_images: int
              ) -> list[tuple[str, torch.Tensor]]:
    """``sslpipe show`` rows of a two-view batch: the views of the same images, one row each,
    then one row per local crop (``local 1`` .. ``local N``) with ``multi_crop``."""
    views = batch.inputs if isinstance(batch.inputs, tuple) else (batch.inputs,)
    n = views[0].shape[0]
    named = [(f"view {v}", x, 1) for v, x in enumerate(views[:2], 1)]
    named += [("local", x, x.shape[0] // n) for x in views[2:]]
    return crop_rows(named, options, max_images)
