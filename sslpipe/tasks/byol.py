"""BYOL (Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised
Learning", NeurIPS 2020).

Two views per image with the paper's asymmetric augmentations (blur always on view 1 and with
probability 0.1 on view 2, solarisation only on view 2 with probability 0.2); an online
network (backbone, projector, predictor) regresses the target network's projection of the
other view; the target network is an exponential moving average of the online one
(:class:`~sslpipe.tasks.teacher.MomentumPair`), its momentum rising from 0.996 to 1 on a
cosine schedule over training. No negatives: the loss is the normalised MSE
``2 - 2 cos(q, z')``, symmetrised over the two views.

The collator is SimCLR's two-view collator (:class:`sslpipe.tasks.simclr.TwoViewCollator`)
with the asymmetric policy of :class:`AsymmetricViewOptions`, which MoCo v3 shares.
:class:`MomentumTwoViewModel` (online encoder + predictor, target encoder) serves both.
Official code: deepmind/deepmind-research ``byol/`` (``byol_experiment.py``,
``utils/augmentations.py``, ``utils/schedules.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.batch import Batch
from sslpipe.ops.augment import ViewAugment
from sslpipe.registry import register_task
from sslpipe.tasks.base import StepInfo, Task, check_positive, check_probability
from sslpipe.tasks.heads import feature_dim, mlp
from sslpipe.tasks.multicrop import accept_any_size, crop_pairs
from sslpipe.tasks.simclr import TwoViewCollator, TwoViewOptions, check_blur, view_rows, wide_float
from sslpipe.tasks.teacher import MomentumPair, cosine_momentum, update_momentum_pairs


@dataclass(frozen=True)
class AsymmetricViewOptions(TwoViewOptions):
    """BYOL's two view policies (its Table 6), shared by MoCo v3 (whose code uses BYOL's) and
    VICReg (whose paper uses BYOL's).

    Attributes:
        flip: probability of a horizontal flip per view.
        jitter: ``(brightness, contrast, saturation, hue)`` strengths.
        jitter_p: probability of the colour jitter per view.
        grayscale: probability of grayscale per view.
        blur: blur probability of ``(view 1, view 2)``.
        blur_sigma: blur sigma range in pixels.
        blur_kernel: blur taps (odd); None means 10% of ``size`` (23 at 224 px).
        solarize: solarisation probability of ``(view 1, view 2)``.
    """

    flip: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    grayscale: float = 0.2
    blur: tuple[float, float] = (1.0, 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int | None = None
    solarize: tuple[float, float] = (0.0, 0.2)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("flip", "jitter_p", "grayscale"):
            check_probability(name, getattr(self, name))
        for name in ("blur", "solarize"):
            pair = getattr(self, name)
            if len(pair) != 2:
                raise ValueError(f"{name} must be a pair (view 1, view 2). Got {pair!r}")
            for p in pair:
                check_probability(name, p)
        if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5:
            raise ValueError(
                "jitter must be (brightness, contrast, saturation, hue) >= 0 with hue <= 0.5. "
                f"Got {self.jitter!r}")
        check_blur(self.blur_sigma, self.blur_kernel)

    def view_augments(self) -> tuple[ViewAugment, ...]:
        kernel = self.blur_kernel or self.default_blur_kernel()
        return tuple(
            ViewAugment(flip=self.flip, jitter=self.jitter, jitter_p=self.jitter_p,
                        grayscale=self.grayscale, blur=blur, blur_sigma=self.blur_sigma,
                        blur_kernel=kernel, solarize=solarize)
            for blur, solarize in zip(self.blur, self.solarize))


@dataclass(frozen=True)
class BYOLOptions(AsymmetricViewOptions):
    """Options of the BYOL task (defaults: the paper's ImageNet settings).

    Attributes:
        hidden_dim, projection_dim: projector ``Linear-BN-ReLU-Linear`` widths (4096, 256).
        predictor_dim: the predictor's hidden width (4096; its output is ``projection_dim``).
        base_momentum: the target's EMA momentum at step 0 (0.996); it rises to
            ``final_momentum`` (1.0) on a cosine schedule over the run's steps.
    """

    hidden_dim: int = 4096
    projection_dim: int = 256
    predictor_dim: int = 4096
    base_momentum: float = 0.996
    final_momentum: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("hidden_dim", "projection_dim", "predictor_dim"):
            check_positive(name, getattr(self, name))
        check_momentum(self.base_momentum, self.final_momentum)


def check_momentum(base: float, final: float) -> None:
    """Validate an EMA schedule: ``0 <= base <= final <= 1``."""
    if not 0.0 <= base <= final <= 1.0:
        raise ValueError("base_momentum and final_momentum must satisfy 0 <= base_momentum <= "
                         f"final_momentum <= 1. Got {base!r} and {final!r}")


class ViewOutputs(NamedTuple):
    """What :class:`MomentumTwoViewModel` returns: float ``B x D`` each.

    ``q1, q2``: the online network's predictions of views 1 and 2 (with gradients);
    ``k1, k2``: the target network's projections of views 1 and 2 (no gradients);
    ``q_local``: with BYOL's ``multi_crop``, the online predictions of the local crops
    (``N*B x D``, crop-major), else None.
    """

    q1: torch.Tensor
    q2: torch.Tensor
    k1: torch.Tensor
    k2: torch.Tensor
    q_local: torch.Tensor | None = None


class Encoder(nn.Module):
    """``projector(backbone(x))``: the network a momentum pair averages."""

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))


class MomentumTwoViewModel(nn.Module):
    """Online encoder + predictor and its momentum target encoder, on two views.

    ``forward((x1, x2))`` with float ``B x 3 x H x W`` views returns :class:`ViewOutputs`.
    Each view goes through each network on its own (batch-norm statistics per view), as in
    the official BYOL and MoCo v3 code; the target runs under ``torch.no_grad()`` in the
    model's mode (its BatchNorm running statistics follow its own forward passes).
    State-dict keys: ``encoders.online.backbone.*``, ``encoders.target.backbone.*``,
    ``encoders.{online,target}.projector.*``, ``predictor.*``.
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module, predictor: nn.Module,
                 local_crops: bool = False) -> None:
        super().__init__()
        # a ViT takes the views at the task's size and the local crops at theirs
        self.encoders = MomentumPair(Encoder(accept_any_size(backbone), projector))
        self.predictor = predictor
        self.local_crops = local_crops  # a third input: local crops, online network only

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> ViewOutputs:
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2 + self.local_crops:
            local = " and the local crops" if self.local_crops else ""
            raise ValueError(f"inputs must be a tuple of two views{local} (batch.inputs). "
                             f"Got {type(inputs).__name__}")
        x1, x2 = inputs[:2]
        q1 = self.predictor(self.encoders.online(x1))
        q2 = self.predictor(self.encoders.online(x2))
        with torch.no_grad():
            k1, k2 = self.encoders.target(x1), self.encoders.target(x2)
        q_local = self.predictor(self.encoders.online(inputs[2])) if self.local_crops else None
        return ViewOutputs(q1, q2, k1, k2, q_local)


@register_task("byol", "predict a momentum target's projection of the other view, "
               "normalised MSE (Grill et al. 2020)")
class BYOL(Task):
    """BYOL: online network with projector and predictor, EMA target, normalised MSE."""

    Options = BYOLOptions
    Collator = TwoViewCollator
    min_batch_size = 2  # the projector's and predictor's BatchNorm need two rows
    sync_bn = True  # the official code's cross-replica batch norm
    options: BYOLOptions

    def build(self, backbone: nn.Module) -> nn.Module:
        o = self.options
        projector = mlp(feature_dim(backbone), o.hidden_dim, o.projection_dim, num_layers=2)
        predictor = mlp(o.projection_dim, o.predictor_dim, o.projection_dim, num_layers=2)
        return MomentumTwoViewModel(backbone, projector, predictor, o.multi_crop > 0)

    def loss(self, outputs: ViewOutputs, batch: Batch) -> torch.Tensor:
        """:func:`byol_loss`; with ``multi_crop``, each crop's prediction regressed on the
        target of each other view, summed over the two views as ``byol_loss`` and averaged
        over the crops (:func:`~sslpipe.tasks.multicrop.crop_pairs`, as solo-learn's BYOL)."""
        if outputs.q_local is None:
            return byol_loss(outputs.q1, outputs.q2, outputs.k1, outputs.k2)
        qs = [outputs.q1, outputs.q2, *outputs.q_local.split(outputs.q1.shape[0])]
        pairs = crop_pairs(len(qs), symmetric=False)
        terms = [_regression(qs[c], (outputs.k1, outputs.k2)[g]) for g, c, _ in pairs]
        return 2 * torch.stack(terms).mean()

    def end_step(self, model: nn.Module, info: StepInfo) -> None:
        o = self.options
        update_momentum_pairs(model, cosine_momentum(o.base_momentum, info.progress,
                                                     o.final_momentum))

    def metrics(self, outputs: ViewOutputs, batch: Batch) -> dict[str, torch.Tensor]:
        # how far the online prediction is from the target (1 = identical directions)
        cos = F.cosine_similarity(outputs.q1.detach().float(), outputs.k2.float(), dim=1)
        return {"target_cosine": cos.mean()}

    def visualize(self, batch: Batch, max_images: int = 8) -> list[tuple[str, torch.Tensor]]:
        return view_rows(batch, self.options, max_images)


def byol_loss(q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor
              ) -> torch.Tensor:
    """BYOL's symmetrised normalised MSE (the paper's eq. 2 and its symmetric term).

    With ``n(x) = x / ||x||`` over each row,
    ``L = mean_i ||n(q1_i) - n(k2_i)||^2 + mean_i ||n(q2_i) - n(k1_i)||^2``
    ``  = mean_i (2 - 2 cos(q1_i, k2_i)) + mean_i (2 - 2 cos(q2_i, k1_i))``, in [0, 8].

    The targets get no gradient (they are detached here, whatever their origin), as BYOL's
    stop-gradient. Like the official code (``byol_experiment.py``: the two views' regression
    losses added, then averaged over the batch), the two terms are summed.

    Args:
        q1, q2: float ``B x D`` online predictions of views 1 and 2.
        k1, k2: float ``B x D`` target projections of views 1 and 2.
    Raises:
        ValueError: shapes that differ or are not ``B x D``.
    """
    for name, x in (("q2", q2), ("k1", k1), ("k2", k2)):
        if q1.ndim != 2 or x.shape != q1.shape:
            raise ValueError(f"q1, q2, k1 and k2 must all be B x D with the same shape. Got "
                             f"q1 {tuple(q1.shape)} and {name} {tuple(x.shape)}")
    return _regression(q1, k2) + _regression(q2, k1)


def _regression(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    q = F.normalize(wide_float(q), dim=1)
    k = F.normalize(wide_float(k.detach()), dim=1)
    return (2 - 2 * (q * k).sum(1)).mean()
