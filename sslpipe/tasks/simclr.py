"""SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020).

Two views of every image (random resized crop, flip, colour jitter, grayscale, Gaussian blur,
optional solarisation), a projection MLP, and the NT-Xent loss: each of the ``2B`` views must
pick out its partner among the other ``2B - 1``.

The collator is built for throughput on CPU workers (DESIGN.md, "Where the time goes"): crop
boxes are drawn from the JPEG header size before decoding, each JPEG is decoded at the largest
DCT reduction (1/2, 1/4, 1/8) that keeps both views' crops at least ``size`` pixels on each
side (``dct_scaling=True``, an option of every collator; only JPEG bytes are affected), crops
are resized in uint8, and all
colour work is one ``3 x 4`` matrix per view fused with the normalisation. Blur is on by
default only at ``size >= 96``: the paper omits it for CIFAR-size images.

The shared two-view machinery (:class:`TwoViewOptions`, :class:`TwoViewCollator`,
:class:`TwoViewModel`) is reused by VICReg.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.batch import Batch, HostBatch
from sslpipe.ops.augment import ViewAugment, apply_view, sample_view
from sslpipe.ops.color import denormalize
from sslpipe.ops.geometry import crop_views, random_resized_crop_boxes
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
from sslpipe.tasks.heads import feature_dim, mlp


@dataclass(frozen=True)
class TwoViewOptions(CollatorOptions):
    """Crop options shared by the two-view tasks (SimCLR, VICReg).

    Attributes:
        size: output side of each view in pixels.
        crop_scale: range of the crop area as a fraction of the image area.
        crop_ratio: range of the crop aspect ratio (log-uniform).
    """

    size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        check_positive("size", self.size)
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(
                f"crop_scale must be (lo, hi) with 0 < lo <= hi <= 1. Got {self.crop_scale}"
            )
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise ValueError(
                f"crop_ratio must be (lo, hi) with 0 < lo <= hi. Got {self.crop_ratio}"
            )

    def view_augments(self) -> tuple[ViewAugment, ...]:
        """The colour/blur policy of each view (tasks override it; default: two
        :class:`~sslpipe.ops.augment.ViewAugment` defaults with the size-scaled blur kernel)."""
        return (ViewAugment(blur_kernel=self.default_blur_kernel()),) * 2

    def default_blur_kernel(self) -> int:
        """SimCLR's 10% of the image side, made odd: 23 taps at 224 px."""
        return int(0.1 * self.size) // 2 * 2 + 1


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


class TwoViewCollator(Collator):
    """Two augmented views of every image.

    Returns a Batch with ``inputs`` a tuple of two float ``B x 3 x size x size`` normalized
    views, ``targets`` None, ``labels`` int64 ``B`` or None, and ``meta``: per view ``v`` (1, 2)
    ``view{v}_boxes`` (float ``B x 4`` in source pixels), ``view{v}_flip``, ``view{v}_jitter``,
    ``view{v}_grayscale``, ``view{v}_solarize`` (bool ``B``), ``view{v}_brightness``,
    ``view{v}_contrast``, ``view{v}_saturation``, ``view{v}_hue``, ``view{v}_blur_sigma``
    (float ``B``, sigma 0 = no blur), ``view{v}_jitter_order`` (int64 ``B x 4``),
    ``decode_scale`` (int64 ``B``, the JPEG DCT reduction used; 1 for decoded inputs) and
    ``source`` (int64 ``2B``: the image of each row of the views concatenated).
    """

    options: TwoViewOptions

    def make_host(self, images: Images, generator: torch.Generator | None) -> HostBatch:
        opt = self.options
        specs = opt.view_augments()
        sizes = images.sizes()
        boxes = [random_resized_crop_boxes(sizes, generator, opt.crop_scale, opt.crop_ratio)
                 for _ in specs]
        crops, scale = crop_views(images.images, boxes, opt.size)
        pixels, meta = {}, {}
        for v, (x, spec) in enumerate(zip(crops, specs), 1):
            pixels[f"view{v}"] = x
            meta[f"view{v}_boxes"] = boxes[v - 1]
            params = sample_view(len(x), spec, generator)
            meta.update({f"view{v}_{k}": p for k, p in params.items()})
        meta["decode_scale"] = scale
        return HostBatch(pixels, images.labels, meta)

    def make_device(self, host: HostBatch) -> Batch:
        opt = self.options
        views = []
        for v, spec in enumerate(opt.view_augments(), 1):
            prefix = f"view{v}_"
            params = {k[len(prefix):]: p for k, p in host.meta.items() if k.startswith(prefix)}
            views.append(apply_view(host.pixels[f"view{v}"], spec, params, opt.mean, opt.std))
        device = views[0].device
        meta = meta_on(host.meta, device)
        # the image of each row of the backbone's batch (the views concatenated: view-major)
        meta["source"] = torch.arange(len(views[0]), device=device).repeat(len(views))
        return Batch(tuple(views), None, labels_on(host, device), meta)


class TwoViewModel(nn.Module):
    """Backbone + projector applied to both views in one forward pass.

    ``forward((x1, x2))`` with float ``B x 3 x H x W`` views returns ``(z1, z2)``, each
    ``B x D``. Concatenating the views keeps batch-norm statistics over all ``2B`` views.
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
            raise ValueError(
                f"inputs must be a tuple of two views (batch.inputs). Got {type(inputs).__name__}"
            )
        n = inputs[0].shape[0]
        z = self.projector(self.backbone(torch.cat(list(inputs))))
        return z[:n], z[n:]


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

    def loss(self, outputs: tuple[torch.Tensor, torch.Tensor], batch: Batch) -> torch.Tensor:
        return nt_xent(outputs[0], outputs[1], self.options.temperature, self.options.gather)

    def metrics(self, outputs: tuple[torch.Tensor, torch.Tensor], batch: Batch
                ) -> dict[str, torch.Tensor]:
        z = F.normalize(torch.cat(outputs).detach().float(), dim=1)
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
    """``sslpipe show`` rows of a two-view batch: the views of the same images, one row each."""
    rows = []
    views = batch.inputs if isinstance(batch.inputs, tuple) else (batch.inputs,)
    for v, x in enumerate(views, 1):
        rows.append((f"view {v}", denormalize(x[:max_images].float().cpu(), options.mean,
                                              options.std)))
    return rows
