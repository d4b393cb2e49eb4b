"""DINO (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021).

Self-distillation with no labels: a student network is trained to match, on every crop of an
image, the output distribution of a teacher network on the other global crops of that image.
The teacher is an exponential moving average of the student (momentum 0.996 rising to 1 on a
cosine, :mod:`sslpipe.tasks.teacher`) and sees the two global crops only; the student sees
every crop. Collapse is avoided by *centering* the teacher's outputs (a running mean ``c``,
momentum 0.9, over the global batch) and *sharpening* them with a low temperature
(``tau_t`` warmed up from 0.04 to 0.07 over 30 epochs; the student's ``tau_s = 0.1``):

    P_t(x) = softmax((g_t(x) - c) / tau_t),   P_s(x) = softmax(g_s(x) / tau_s)
    loss = mean over pairs (global crop x, crop x' != x) of  - sum_k P_t(x)_k log P_s(x')_k

Multi-crop (default two global crops of 224 px, area 0.4-1, and six local ones of 96 px,
area 0.05-0.4) is made for the whole batch by :mod:`sslpipe.ops.multicrop`; the colour policy
is the official ``DataAugmentationDINO``: flip, jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale
0.2, blur p 1.0 / 0.1 / 0.5 (global 1 / global 2 / local), solarisation p 0.2 on global 2.

The projection head (:class:`DINOHead`) is the official ``DINOHead``: a 3-layer MLP (2048
hidden, GELU) to a 256-d bottleneck, L2-normalised, then a weight-normalised linear layer to
``out_dim = 65536`` whose norm ``g`` is fixed at 1 (``norm_last_layer=True``). The last layer
is frozen during the first epoch (``freeze_last_layer=1``). The teacher is the network DINO's
users evaluate (``eval_network = "teacher"``: the run's ``backbone.safetensors``).

Official code: facebookresearch/dino (``main_dino.py``: ``DataAugmentationDINO``, ``DINOLoss``,
``train_one_epoch``; ``vision_transformer.py``: ``DINOHead``; ``utils.py``:
``MultiCropWrapper``, ``cosine_scheduler``, ``cancel_gradients_last_layer``).

Size: the issue asks for one file per method holding its collator, head and loss; DINO's
options (crops, colour, head, teacher, temperatures), its model and hooks, head and loss are
read together. The shared multi-crop machinery lives in :mod:`sslpipe.ops.multicrop` and
:mod:`sslpipe.tasks.multicrop`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from sslpipe.batch import Batch
from sslpipe.ops.augment import ViewAugment
from sslpipe.ops.multicrop import CropSet, local_size_for
from sslpipe.registry import register_task
from sslpipe.tasks.base import (
    CollatorOptions,
    StepInfo,
    Task,
    check_positive,
    check_probability,
)
from sslpipe.tasks.heads import feature_dim
from sslpipe.tasks.multicrop import (
    CropSetCollator,
    MultiCropNet,
    accept_any_size,
    check_scale,
    crop_rows,
)
from sslpipe.tasks.teacher import MomentumPair, cosine_momentum, update_momentum_pairs

__all__ = ["DINO", "DINOCollator", "DINOHead", "DINOModel", "DINOOptions", "DINOOutputs",
           "dino_loss", "teacher_temperature"]

GLOBAL_CROPS = 2  # the teacher's crops: two in the paper and the official code


@dataclass(frozen=True)
class DINOOptions(CollatorOptions):
    """Options of the DINO task (defaults: the paper's; faithfulness.md lists the code's).

    Attributes:
        size: side of the two global crops (224).
        local_crops: local crops per image (6 in the paper; 0 turns multi-crop off).
        local_size: side of the local crops; None: ``96 / 224`` of ``size`` (96 at 224).
        global_scale, local_scale: area ranges of the global (0.4, 1) and local (0.05, 0.4)
            crops, as fractions of the image; ``crop_ratio`` their aspect range.
        flip, jitter, jitter_p, grayscale: ``DataAugmentationDINO``'s flip and colour jitter
            ``(brightness, contrast, saturation, hue)``, on every crop.
        blur: blur probability of (global 1, global 2); ``local_blur`` the local crops'.
        blur_sigma: sigma range in pixels (the kernel spans 3 sigma, as PIL's blur).
        solarize: solarisation probability of (global 1, global 2); local crops: none.
        out_dim, hidden_dim, bottleneck_dim, head_layers, head_bn, norm_last_layer: the head
            (:class:`DINOHead`).
        freeze_last_layer: epochs during which the head's last layer gets no update.
        momentum: the teacher's base EMA momentum, raised to 1 on a cosine over training.
        teacher_temp, warmup_teacher_temp, warmup_teacher_temp_epochs: the teacher's
            temperature, linear from ``warmup_teacher_temp`` to ``teacher_temp`` over the
            first epochs (:func:`teacher_temperature`); ``student_temp`` the student's.
        center_momentum: momentum ``m`` of the centre ``c <- m c + (1 - m) mean(teacher)``.
    """

    size: int = 224
    local_crops: int = 6
    local_size: int | None = None
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    grayscale: float = 0.2
    blur: tuple[float, float] = (1.0, 0.1)
    local_blur: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize: tuple[float, float] = (0.0, 0.2)
    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_layers: int = 3
    head_bn: bool = False
    norm_last_layer: bool = True
    freeze_last_layer: int = 1
    momentum: float = 0.996
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 30
    student_temp: float = 0.1
    center_momentum: float = 0.9

    def __post_init__(self) -> None:
        for name in ("size", "out_dim", "hidden_dim", "bottleneck_dim", "head_layers",
                     "teacher_temp", "warmup_teacher_temp", "student_temp"):
            check_positive(name, getattr(self, name))
        for name in ("local_crops", "freeze_last_layer", "warmup_teacher_temp_epochs"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if self.local_size is not None:
            check_positive("local_size", self.local_size)
        check_scale("global_scale", self.global_scale)
        check_scale("local_scale", self.local_scale)
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must be (lo, hi) with 0 < lo <= hi. Got "
                             f"{self.crop_ratio}")
        for name in ("flip", "jitter_p", "grayscale", "local_blur", "momentum",
                     "center_momentum"):
            check_probability(name, getattr(self, name))
        for name in ("blur", "solarize"):
            pair = getattr(self, name)
            if len(pair) != 2:
                raise ValueError(f"{name} must be a pair (global 1, global 2). Got {pair!r}")
            for p in pair:
                check_probability(name, p)
        if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5:
            raise ValueError("jitter must be (brightness, contrast, saturation, hue) >= 0 with "
                             f"hue <= 0.5. Got {self.jitter!r}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must be (lo, hi) with 0 < lo <= hi. Got "
                             f"{self.blur_sigma}")

    def crop_sets(self) -> tuple[CropSet, ...]:
        """``global`` (two crops at ``size``) and, with ``local_crops``, ``local``."""
        kernel = 2 * math.ceil(3 * self.blur_sigma[1]) + 1  # the whole Gaussian, as PIL's

        def view(blur: float, solarize: float) -> ViewAugment:
            return ViewAugment(flip=self.flip, jitter=self.jitter, jitter_p=self.jitter_p,
                               grayscale=self.grayscale, blur=blur, blur_sigma=self.blur_sigma,
                               blur_kernel=kernel, solarize=solarize)

        sets = [CropSet("global", self.size, self.global_scale,
                        tuple(view(b, s) for b, s in zip(self.blur, self.solarize)),
                        self.crop_ratio)]
        if self.local_crops:
            side = self.local_size or local_size_for(self.size)
            sets.append(CropSet("local", side, self.local_scale,
                                (view(self.local_blur, 0.0),) * self.local_crops, self.crop_ratio))
        return tuple(sets)


class DINOCollator(CropSetCollator):
    """DINO's multi-crop: two global and ``local_crops`` local crops of every image.

    Returns a Batch with ``inputs`` a tuple of per-size tensors: the global crops, float
    ``2B x 3 x size x size``, and (with ``local_crops = N > 0``) the local crops,
    ``N*B x 3 x s x s``, both normalised and crop-major (row ``k * B + i`` is crop ``k`` of
    image ``i``); ``targets`` None; ``labels`` int64 ``B`` or None; ``meta``:
    ``global_boxes`` (float ``2B x 4``, ``(x0, y0, x1, y1)`` in source pixels) and
    ``local_boxes`` (``N*B x 4``), every colour parameter per crop as ``global_*`` /
    ``local_*`` (``flip``, ``jitter``, ``brightness``, ``contrast``, ``saturation``, ``hue``,
    ``jitter_order``, ``grayscale``, ``blur_sigma``, ``solarize``), ``decode_scale`` (int64
    ``B``) and ``source`` (int64 ``2B``: the image of each global crop, the backbone's first
    batch).
    """

    options: DINOOptions


class DINOOutputs(NamedTuple):
    """What :class:`DINOModel` returns: ``student`` float ``V*B x out_dim`` (every crop,
    crop-major, global crops first), ``teacher`` ``2B x out_dim`` (the global crops) and
    ``center`` ``1 x out_dim``, the centre as it was before this forward pass updated it."""

    student: torch.Tensor
    teacher: torch.Tensor
    center: torch.Tensor


class DINOModel(nn.Module):
    """Student and teacher (a :class:`~sslpipe.tasks.teacher.MomentumPair` of
    :class:`~sslpipe.tasks.multicrop.MultiCropNet`: backbone and :class:`DINOHead`) and the
    centre.

    ``forward((global, local))`` runs the student on every crop (one backbone batch per crop
    size, as the official ``MultiCropWrapper``) and the teacher, without gradients, on the
    global crops; in training mode it then updates the centre buffer (float32 ``1 x out_dim``,
    in the state dict, so checkpoints carry it) with the teacher outputs' batch mean, over
    every rank's batch under data parallelism: ``c <- m c + (1 - m) mean(teacher)``.
    """

    pair: MomentumPair
    center: torch.Tensor

    def __init__(self, backbone: nn.Module, head: DINOHead, center_momentum: float) -> None:
        super().__init__()
        self.pair = MomentumPair(MultiCropNet(accept_any_size(backbone), head))
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, head.out_dim))

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> DINOOutputs:
        if not isinstance(inputs, (tuple, list)) or len(inputs) not in (1, 2):
            raise ValueError("inputs must be (global crops,) or (global crops, local crops) "
                             f"(batch.inputs). Got {type(inputs).__name__}")
        student = self.pair.online(inputs)
        with torch.no_grad():
            teacher = self.pair.target(inputs[:1])
        center = self.center.clone()
        if self.training:
            self.update_center(teacher)
        return DINOOutputs(student, teacher, center)

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """``c <- m c + (1 - m) * sum(teacher) / rows``, the sum and the rows over every
        rank (one all-reduce; none outside data parallelism or in ``ops.gather.local()``)."""
        from sslpipe.ops.gather import world

        total = teacher.float().sum(0, keepdim=True)
        rows = teacher.shape[0]
        if world()[1] > 1:
            dist.all_reduce(total)
            rows *= world()[1]
        self.center.mul_(self.center_momentum).add_(total / rows,
                                                    alpha=1 - self.center_momentum)

    def freeze_last_layer(self, frozen: bool) -> None:
        """Give the student head's last layer zero gradients (frozen) or its own."""
        head = self.pair.online.head
        if isinstance(head, DINOHead):
            head.last_layer_grad.fill_(0.0 if frozen else 1.0)


@register_task("dino", "match an EMA teacher's centred, sharpened outputs on other crops "
               "(Caron et al. 2021)")
class DINO(Task):
    """DINO: multi-crop, EMA teacher, centering and sharpening, cross-entropy."""

    Options = DINOOptions
    Collator = DINOCollator
    options: DINOOptions
    sync_bn = True  # the official code converts BatchNorm models to SyncBatchNorm
    eval_network = "teacher"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.epoch = 0  # set by begin_step; the teacher temperature is a function of it

    def build(self, backbone: nn.Module) -> nn.Module:
        o = self.options
        patch = getattr(getattr(backbone, "patch_embed", None), "patch_size", None)
        sides = [s.size for s in o.crop_sets()]
        if isinstance(patch, tuple) and any(side % patch[0] for side in sides):
            raise ValueError(f"size and local_size must be multiples of the ViT's patch size "
                             f"{patch[0]} (pass -o size=... -o local_size=...). Got {sides}")
        head = DINOHead(feature_dim(backbone), o.out_dim, o.hidden_dim, o.bottleneck_dim,
                        o.head_layers, o.head_bn, o.norm_last_layer)
        model = DINOModel(backbone, head, o.center_momentum)
        model.freeze_last_layer(o.freeze_last_layer > 0)  # the first step is in epoch 0
        return model

    @property
    def teacher_temp(self) -> float:
        """The teacher temperature of the current epoch (:func:`teacher_temperature`)."""
        o = self.options
        return teacher_temperature(self.epoch, o.warmup_teacher_temp, o.teacher_temp,
                                   o.warmup_teacher_temp_epochs)

    def begin_step(self, info: StepInfo) -> None:
        self.epoch = int(info.epoch)  # the official schedule is per whole epoch

    def end_step(self, model: nn.Module, info: StepInfo) -> None:
        """The teacher's EMA at ``cosine_momentum(momentum, progress)``, then the last layer
        frozen or not for the next step's epoch."""
        update_momentum_pairs(model, cosine_momentum(self.options.momentum, info.progress))
        next_epoch = (info.step + 1) // max(info.steps_per_epoch, 1)
        for module in model.modules():
            if isinstance(module, DINOModel):
                module.freeze_last_layer(next_epoch < self.options.freeze_last_layer)

    def loss(self, outputs: DINOOutputs, batch: Batch) -> torch.Tensor:
        return dino_loss(outputs.student, outputs.teacher, outputs.center, self.teacher_temp,
                         self.options.student_temp, GLOBAL_CROPS)

    def metrics(self, outputs: DINOOutputs, batch: Batch) -> dict[str, torch.Tensor]:
        """``teacher_entropy``: the mean entropy (nats) of the teacher's distributions, between
        0 (collapse to one dimension) and ``log(out_dim)`` (collapse to uniform)."""
        q = F.softmax((outputs.teacher.detach().float() - outputs.center) / self.teacher_temp,
                      -1)
        return {"teacher_entropy": -(q * torch.log(q.clamp_min(1e-12))).sum(-1).mean()}

    def visualize(self, batch: Batch, max_images: int = 8) -> list[tuple[str, torch.Tensor]]:
        views = [("global", batch.inputs[0], GLOBAL_CROPS)]
        if len(batch.inputs) > 1:
            views.append(("local", batch.inputs[1], self.options.local_crops))
        return crop_rows(views, self.options, max_images)

    def visualize_sources(self, batch: Batch, images: list[torch.Tensor], max_images: int = 8
                          ) -> list[tuple[str, torch.Tensor]]:
        """:meth:`visualize` after a row of the source images with every crop's box drawn
        in place (global crops red, local crops blue), for ``sslpipe show``."""
        from sslpipe.tasks.show import draw_boxes

        n = min(max_images, len(images))
        b = batch.inputs[0].shape[0] // GLOBAL_CROPS
        boxes = [(batch.meta["global_boxes"].view(GLOBAL_CROPS, b, 4), "red")]
        if "local_boxes" in batch.meta:
            boxes.append((batch.meta["local_boxes"].view(-1, b, 4), "blue"))
        pictures = draw_boxes(images[:n], [(bx[:, :n].cpu(), c) for bx, c in boxes])
        return [("crop boxes (global red, local blue)", pictures),
                *self.visualize(batch, max_images)]


class DINOHead(nn.Module):
    """The official ``DINOHead`` (``vision_transformer.py``).

    ``head_layers`` Linear layers (``hidden_dim`` wide, GELU between them, BatchNorm1d too with
    ``batch_norm``) to a ``bottleneck_dim`` vector, L2-normalised, then a weight-normalised
    linear layer without bias to ``out_dim``: ``W = g * V / ||V||`` per output row, with ``g``
    fixed at 1 when ``norm_last_layer`` (the official default; else ``g`` is trained, from 1).
    MLP weights are drawn from a normal of std 0.02 truncated at +-2 and biases are 0; ``V``
    has ``nn.Linear``'s default initialisation, as in the official code.

    ``forward``: float ``N x in_dim`` -> float ``N x out_dim`` (logits; the loss divides them
    by its temperatures). The buffer ``last_layer_grad`` (1 or 0) scales the gradient that
    reaches the last layer: 0 freezes it (``freeze_last_layer``) while every parameter still
    gets a gradient, which data parallelism needs; the official code sets the gradients to
    None instead. Weight decay then only shrinks ``V``, whose rows are normalised, so the
    layer's function is unchanged while frozen.
    """

    last_layer_grad: torch.Tensor

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, num_layers: int = 3, batch_norm: bool = False,
                 norm_last_layer: bool = True) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1. Got {num_layers}")
        self.out_dim = out_dim
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim))
            layers += [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
            layers.append(nn.GELU())
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        last = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.weight_v = nn.Parameter(last.weight.detach().clone())
        self.weight_g = None if norm_last_layer else nn.Parameter(torch.ones(out_dim, 1))
        self.register_buffer("last_layer_grad", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        scale = self.last_layer_grad
        weight = F.normalize(torch.lerp(self.weight_v.detach(), self.weight_v, scale), dim=1)
        if self.weight_g is not None:
            weight = weight * torch.lerp(self.weight_g.detach(), self.weight_g, scale)
        return F.linear(x, weight)


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor,
              teacher_temp: float, student_temp: float = 0.1,
              num_global: int = GLOBAL_CROPS) -> torch.Tensor:
    """DINO's loss (the official ``DINOLoss.forward``, without its centre update).

    With ``B`` images, ``V`` crops each (the first ``num_global`` the teacher's),
    ``P_t^g = softmax((t_g - c) / teacher_temp)`` (no gradient) and
    ``log P_s^v = log_softmax(s_v / student_temp)``:

        loss = 1 / (num_global (V - 1)) * sum_g sum_{v != g} mean_i ( - P_t^g[i] . log P_s^v[i] )

    Under data parallelism each rank's loss is over its own rows; DDP's mean of the gradients
    is then the gradient of the loss on the global batch (the centre is global already).

    Args:
        student: float ``V*B x K`` student logits, crop-major, global crops first.
        teacher: float ``num_global*B x K`` teacher logits of the global crops.
        center: float ``K`` or ``1 x K``, the centre ``c``.
        teacher_temp, student_temp: the temperatures (> 0).
        num_global: the teacher's crops per image (2).

    Raises:
        ValueError: shapes that do not fit, or ``V < 2``.
    """
    check_positive("teacher_temp", teacher_temp)
    check_positive("student_temp", student_temp)
    if teacher.ndim != 2 or student.ndim != 2 or teacher.shape[1] != student.shape[1]:
        raise ValueError(f"student and teacher must be N x K with one K. Got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    b, rem = divmod(teacher.shape[0], num_global)
    crops = student.shape[0] // max(b, 1)
    if rem or b == 0 or student.shape[0] != crops * b or crops < max(2, num_global):
        raise ValueError(f"teacher must have num_global*B rows and student V*B (V >= 2, "
                         f"V >= num_global). Got {teacher.shape[0]} and {student.shape[0]} "
                         f"with num_global={num_global}")
    log_p = F.log_softmax(_wide(student) / student_temp, dim=-1).split(b)
    q = F.softmax((_wide(teacher) - center.reshape(1, -1)) / teacher_temp, dim=-1).detach()
    every = torch.stack(log_p).sum(0)  # sum over all crops; each term drops its own crop
    total = torch.stack([(-(qg * (every - log_p[g])).sum(-1)).mean()
                         for g, qg in enumerate(q.split(b))]).sum()
    return total / (num_global * (crops - 1))


def teacher_temperature(epoch: int, warmup_temp: float = 0.04, final_temp: float = 0.07,
                        warmup_epochs: int = 30) -> float:
    """The teacher temperature of ``epoch`` (0-based, whole epochs): the official
    ``np.linspace(warmup_temp, final_temp, warmup_epochs)[epoch]`` during the warm-up, then
    ``final_temp``."""
    if epoch >= warmup_epochs:
        return final_temp
    if warmup_epochs == 1:
        return warmup_temp
    return warmup_temp + (final_temp - warmup_temp) * max(epoch, 0) / (warmup_epochs - 1)


def _wide(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
