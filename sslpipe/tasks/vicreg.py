"""VICReg (Bardes, Ponce and LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022).

Two views per image with the paper's asymmetric augmentations (blur always on view 1 and with
probability 0.1 on view 2; solarisation only on view 2, probability 0.2), an expander MLP
(three layers of 8192 at full size), and a loss with no negatives: the embeddings of the two
views must agree (invariance), every dimension must keep a standard deviation of at least 1
over the batch (variance) and dimensions must be decorrelated (covariance).

The collator is the two-view collator of :mod:`sslpipe.tasks.multicrop`, so it has SimCLR's fast
CPU path (JPEG DCT scaling, uint8 crops, fused colour matrices) and its ``multi_crop`` option
(local crops compared with both views, :func:`~sslpipe.tasks.multicrop.multi_crop_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.batch import Batch
from sslpipe.registry import register_task
from sslpipe.tasks.base import Task, check_choice, check_positive
from sslpipe.tasks.byol import AsymmetricViewOptions
from sslpipe.tasks.heads import feature_dim, mlp
from sslpipe.tasks.multicrop import (
    TwoViewCollator,
    TwoViewModel,
    multi_crop_loss,
    split_crops,
)
from sslpipe.tasks.simclr import view_rows, wide_float


@dataclass(frozen=True)
class VICRegOptions(AsymmetricViewOptions):
    """Options of the VICReg task (defaults: the paper's ImageNet settings).

    The two views' policies are BYOL's, as the paper states, with the same
    defaults: :class:`~sslpipe.tasks.byol.AsymmetricViewOptions` (flip, jitter, jitter_p,
    grayscale, blur and solarize per view, blur_sigma, blur_kernel).

    Attributes:
        expander_dim: width of every expander layer (8192 in the paper).
        expander_layers: number of Linear layers (BN + ReLU between them).
        sim_coeff, std_coeff, cov_coeff: the loss weights lambda, mu, nu.
        variance_terms: ``"mean"`` averages the two branches' variance terms, as the authors'
            released code (facebookresearch/vicreg, ``main_vicreg.py``) that produced the
            published numbers; ``"sum"`` adds them, as the paper's equation (6).
        gather: under data parallelism, the loss is computed on every rank's embeddings (the
            global batch, as the authors' code); False: on each rank's own (see
            :func:`vicreg_loss`).
        multi_crop, local_size, local_scale: local crops besides the two views (not in the
            paper; :class:`~sslpipe.tasks.multicrop.TwoViewOptions`; none by default).
    """

    expander_dim: int = 8192
    expander_layers: int = 3
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    variance_terms: str = "mean"
    gather: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("expander_dim", self.expander_dim)
        check_positive("expander_layers", self.expander_layers)
        check_choice("variance_terms", self.variance_terms, ("mean", "sum"))
        for name in ("sim_coeff", "std_coeff", "cov_coeff"):
            check_positive(name, getattr(self, name), allow_zero=True)


@register_task("vicreg", "invariance + variance + covariance regularisation of two views "
               "(Bardes et al. 2022)")
class VICReg(Task):
    """VICReg: two asymmetric views, expander MLP, variance-invariance-covariance loss."""

    Options = VICRegOptions
    Collator = TwoViewCollator
    min_batch_size = 2  # the variance and covariance terms are over the batch
    sync_bn = True  # the authors' code converts to SyncBatchNorm
    options: VICRegOptions

    def build(self, backbone: nn.Module) -> nn.Module:
        o = self.options
        expander = mlp(feature_dim(backbone), o.expander_dim, o.expander_dim,
                       num_layers=o.expander_layers)
        return TwoViewModel(backbone, expander)

    def loss(self, outputs: tuple[torch.Tensor, ...], batch: Batch) -> torch.Tensor:
        """:func:`vicreg_loss` of the two views; with local crops, the mean over the crop pairs
        (:func:`~sslpipe.tasks.multicrop.multi_crop_loss`)."""
        o = self.options
        return multi_crop_loss(
            lambda a, b: vicreg_loss(a, b, o.sim_coeff, o.std_coeff, o.cov_coeff, o.gather,
                                     o.variance_terms),
            split_crops(outputs))

    def metrics(self, outputs: tuple[torch.Tensor, ...], batch: Batch
                ) -> dict[str, torch.Tensor]:
        z = outputs[0].detach().float()
        return {"embedding_std": z.std(0).mean()}

    def visualize(self, batch: Batch, max_images: int = 8) -> list[tuple[str, torch.Tensor]]:
        return view_rows(batch, self.options, max_images)


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gather: bool = True,
    variance_terms: str = "mean",
) -> torch.Tensor:
    """The VICReg loss (Bardes et al. 2022), as the authors' released code computes it.

    ``loss = lambda s(Z, Z') + mu [v(Z) + v(Z')] / 2 + nu [c(Z) + c(Z')]`` with

    * invariance ``s = mean((Z - Z')^2)`` over all ``B x D`` entries;
    * variance ``v(Z) = 1/D sum_j max(0, 1 - sqrt(Var(z_j) + 1e-4))`` (unbiased variance over
      the batch; the hinge target gamma is 1);
    * covariance ``c(Z) = 1/D sum_{i != j} C(Z)_ij^2`` with ``C(Z)`` the ``D x D`` covariance
      (``1 / (B - 1)``) of the centred embeddings.

    The paper's equation (6) sums the two branches' variance terms; the authors' released code
    (``main_vicreg.py``), which produced the published numbers, averages them (a factor 1/2 on
    ``mu``). ``variance_terms="mean"`` (the default) follows the code, ``"sum"`` the paper.

    Under data parallelism (an initialized process group of ``W > 1`` ranks) and ``gather``,
    every term is computed on the global batch, as the authors' code does: the embeddings of
    every rank are gathered (:func:`~sslpipe.ops.gather.gather_rows`), each rank computes the
    same loss on all ``W*B`` rows, and with DDP averaging the gradients are exactly those of
    the single-process loss on the whole batch. ``gather=False``: each rank's ``B`` rows alone.

    Args:
        z1, z2: float ``B x D`` embeddings of the two views, ``B >= 2``.
        sim_coeff, std_coeff, cov_coeff: lambda, mu, nu.
        gather: compute on every rank's rows (no effect in a single process).
        variance_terms: ``"mean"`` or ``"sum"`` of the two branches' variance terms.

    Raises:
        ValueError: shapes that differ or are not ``B x D``, ``B < 2``, or another
            ``variance_terms``.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be B x D with the same shape. Got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}"
        )
    if z1.shape[0] < 2:
        raise ValueError(f"vicreg_loss needs a batch of at least 2 (variance). Got {z1.shape[0]}")
    check_choice("variance_terms", variance_terms, ("mean", "sum"))
    z1, z2 = wide_float(z1), wide_float(z2)
    if gather:
        from sslpipe.ops.gather import gather_rows

        z1, z2 = gather_rows(z1), gather_rows(z2)
    invariance = F.mse_loss(z1, z2)
    variance = _variance(z1) + _variance(z2)
    if variance_terms == "mean":
        variance = variance / 2
    return (sim_coeff * invariance
            + std_coeff * variance
            + cov_coeff * (_covariance(z1) + _covariance(z2)))


def _variance(z: torch.Tensor) -> torch.Tensor:
    std = torch.sqrt(z.var(0) + 1e-4)
    return F.relu(1 - std).mean()


def _covariance(z: torch.Tensor) -> torch.Tensor:
    n, d = z.shape
    z = z - z.mean(0)
    cov = (z.T @ z) / (n - 1)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / d
