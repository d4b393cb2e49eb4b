"""MoCo v3 (Chen, Xie and He, "An Empirical Study of Training Self-Supervised Vision
Transformers", ICCV 2021).

Two views per image with BYOL's asymmetric augmentations (the official code's
``moco/loader.py`` policy), an online network (backbone, projector, predictor) and a momentum
encoder (backbone and projector, an EMA of the online ones, momentum 0.99 rising to 1 on a
cosine schedule: ``--moco-m-cos``). Each view's prediction must pick out the momentum
encoder's key of the other view among the keys of the whole (global) batch: a symmetrised
InfoNCE, scaled by ``2 * tau`` as the official ``ctr_loss``. For ResNets and ViTs from timm;
for a ViT the patch embedding is frozen at its random initialisation by default
(``--stop-grad-conv1`` in every official ViT command).

Official code: facebookresearch/moco-v3 (``moco/builder.py``, ``main_moco.py``,
``moco/loader.py``, ``vits.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.batch import Batch
from sslpipe.registry import register_task
from sslpipe.tasks.base import StepInfo, Task, check_positive
from sslpipe.tasks.byol import (
    AsymmetricViewOptions,
    MomentumTwoViewModel,
    ViewOutputs,
    check_momentum,
)
from sslpipe.tasks.heads import feature_dim, mlp
from sslpipe.tasks.simclr import TwoViewCollator, view_rows, wide_float
from sslpipe.tasks.teacher import cosine_momentum, update_momentum_pairs


@dataclass(frozen=True)
class MoCoV3Options(AsymmetricViewOptions):
    """Options of the MoCo v3 task (defaults: the paper's and the official code's).

    Attributes:
        hidden_dim: width of the hidden layers of both MLPs (4096).
        projection_dim: output width of projector and predictor (256).
        projector_layers: Linear layers of the projector; None: as the official code, 3 for a
            ViT (a backbone with ``patch_embed``; the paper's 3 for every backbone) and 2 for
            others (``MoCo_ResNet``).
        predictor_layers: Linear layers of the predictor (2).
        predictor_last_norm: an affine-free BatchNorm after the predictor's last layer; None:
            as the official code, on for a ViT, off for others.
        temperature: tau of the InfoNCE (0.2, the official ViT commands' ``--moco-t``; the
            official default, used for ResNet-50, is 1.0).
        base_momentum, final_momentum: the momentum encoder's EMA momentum at step 0 (0.99)
            and at the end (1.0), cosine in between.
        freeze_patch_embed: keep a ViT's patch projection at its random initialisation
            (``--stop-grad-conv1``: the paper's fix for training instability); no effect on
            backbones without ``patch_embed``.
        gather: under data parallelism, every rank's keys are the negatives (the global batch,
            as the official code); False: each rank's own (see :func:`mocov3_loss`).
    """

    hidden_dim: int = 4096
    projection_dim: int = 256
    projector_layers: int | None = None
    predictor_layers: int = 2
    predictor_last_norm: bool | None = None
    temperature: float = 0.2
    base_momentum: float = 0.99
    final_momentum: float = 1.0
    freeze_patch_embed: bool = True
    gather: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("hidden_dim", "projection_dim", "predictor_layers"):
            check_positive(name, getattr(self, name))
        if self.projector_layers is not None:
            check_positive("projector_layers", self.projector_layers)
        check_positive("temperature", self.temperature)
        if self.multi_crop:
            raise ValueError("multi_crop: MoCo v3 compares the two views only (the paper uses no "
                             f"multi-crop). Got multi_crop={self.multi_crop}; use 0")
        check_momentum(self.base_momentum, self.final_momentum)


@register_task("mocov3", "pick the momentum encoder's key of the other view among the "
               "global batch, InfoNCE (Chen, Xie & He 2021)")
class MoCoV3(Task):
    """MoCo v3: online network with projector and predictor, momentum encoder, InfoNCE."""

    Options = MoCoV3Options
    Collator = TwoViewCollator
    min_batch_size = 2  # BatchNorm in both MLPs; one key alone is no contrast
    sync_bn = True  # the official code converts to SyncBatchNorm
    options: MoCoV3Options

    def build(self, backbone: nn.Module) -> nn.Module:
        o = self.options
        patch_embed = getattr(backbone, "patch_embed", None)
        vit = isinstance(patch_embed, nn.Module)  # MoCo_ViT's heads, else MoCo_ResNet's
        if o.freeze_patch_embed and patch_embed is not None:
            patch_embed.requires_grad_(False)
        # every layer with BN, the last one's affine-free (the official _build_mlp)
        projector = mlp(feature_dim(backbone), o.hidden_dim, o.projection_dim,
                        num_layers=o.projector_layers or (3 if vit else 2), last_norm=True)
        last_norm = o.predictor_last_norm if o.predictor_last_norm is not None else vit
        predictor = mlp(o.projection_dim, o.hidden_dim, o.projection_dim,
                        num_layers=o.predictor_layers, last_norm=last_norm)
        return MomentumTwoViewModel(backbone, projector, predictor)

    def loss(self, outputs: ViewOutputs, batch: Batch) -> torch.Tensor:
        o = self.options
        return mocov3_loss(outputs.q1, outputs.q2, outputs.k1, outputs.k2, o.temperature,
                           o.gather)

    def end_step(self, model: nn.Module, info: StepInfo) -> None:
        o = self.options
        update_momentum_pairs(model, cosine_momentum(o.base_momentum, info.progress,
                                                     o.final_momentum))

    def metrics(self, outputs: ViewOutputs, batch: Batch) -> dict[str, torch.Tensor]:
        # this rank's rows: does view 1's query pick view 2's key of the same image?
        q = F.normalize(outputs.q1.detach().float(), dim=1)
        k = F.normalize(outputs.k2.float(), dim=1)
        hits = (q @ k.T).argmax(1) == torch.arange(q.shape[0], device=q.device)
        return {"pretext_acc": hits.float().mean()}

    def visualize(self, batch: Batch, max_images: int = 8) -> list[tuple[str, torch.Tensor]]:
        return view_rows(batch, self.options, max_images)


def mocov3_loss(q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor,
                temperature: float = 0.2, gather: bool = True) -> torch.Tensor:
    """MoCo v3's symmetrised InfoNCE, as the official ``ctr_loss`` (``moco/builder.py``).

    With ``u = q / ||q||`` and ``v = k / ||k||``, for one direction
    ``ctr(q, k) = 2 tau * 1/B sum_i -log( exp(u_i . v_i / tau) / sum_j exp(u_i . v_j / tau) )``
    over the ``N`` keys ``j`` of the batch, and ``loss = ctr(q1, k2) + ctr(q2, k1)``. The
    factor ``2 tau`` is the official code's (it makes the gradient's scale independent of
    tau); the keys get no gradient (detached here).

    Under data parallelism (an initialized process group of ``W > 1`` ranks) and ``gather``,
    the keys are every rank's (:func:`~sslpipe.ops.gather.gather_rows`, ``N = W*B``) and each
    rank's queries are its own rows, the positive of query ``i`` of rank ``r`` being key
    ``r*B + i``, as the official code: the mean of the ranks' losses is the loss above on the
    whole batch, and with DDP averaging the gradients are exactly its. ``gather=False``: each
    rank's ``B`` keys alone.

    Args:
        q1, q2: float ``B x D`` online predictions of views 1 and 2.
        k1, k2: float ``B x D`` momentum-encoder projections of views 1 and 2.
        temperature: tau > 0.
        gather: use every rank's keys (no effect in a single process).
    Raises:
        ValueError: shapes that differ or are not ``B x D``, or ``temperature <= 0``.
    """
    for name, x in (("q2", q2), ("k1", k1), ("k2", k2)):
        if q1.ndim != 2 or x.shape != q1.shape:
            raise ValueError(f"q1, q2, k1 and k2 must all be B x D with the same shape. Got "
                             f"q1 {tuple(q1.shape)} and {name} {tuple(x.shape)}")
    check_positive("temperature", temperature)
    from sslpipe.ops.gather import gather_rows, world

    rank, size = world() if gather else (0, 1)
    keys = [F.normalize(wide_float(k.detach()), dim=1) for k in (k1, k2)]
    if size > 1:  # the keys carry no gradient: gather_rows' backward is never reached
        keys = [gather_rows(k) for k in keys]
    labels = torch.arange(rank * q1.shape[0], (rank + 1) * q1.shape[0], device=q1.device)

    def ctr(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        logits = F.normalize(wide_float(q), dim=1) @ k.T / temperature
        return F.cross_entropy(logits, labels) * (2 * temperature)

    return ctr(q1, keys[1]) + ctr(q2, keys[0])
