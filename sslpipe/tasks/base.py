"""Base classes of the task contract (docs/design.md, "Contracts").

A task is declared in one file of ``sslpipe/tasks/``::

    @dataclass(frozen=True)
    class RotationOptions(CollatorOptions):
        size: int = 224                 # every option has its default here, once

    class RotationCollator(Collator):
        def make_host(self, images: Images, generator) -> HostBatch: ...  # decode, crop: uint8
        def make_device(self, host: HostBatch) -> Batch: ...  # float work, pseudo-labels

    @register_task("rotation")
    class Rotation(Task):
        Options = RotationOptions
        Collator = RotationCollator
        def build(self, backbone) -> nn.Module: ...
        def loss(self, outputs, batch) -> Tensor: ...

``Task(**options)`` validates the options against the dataclass (an unknown name is a
ValueError listing the valid ones) and builds ``self.collator`` from them. The option helpers
(``make_options``, ``check_positive``, ...) live in :mod:`sslpipe.options` and are re-exported
here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sslpipe.batch import Batch, HostBatch
from sslpipe.ops.color import IMAGENET_MEAN, IMAGENET_STD
from sslpipe.ops.images import DEFAULT_MAX_PIXELS, Images, collect
from sslpipe.options import (
    check_choice,
    check_positive,
    check_probability,
    make_options,
    option_docs,
)
from sslpipe.tasks.seeding import SeededStream

# the option helpers live in sslpipe.options (below the tasks, so that the loader and the
# configs can use them); re-exported here for the task modules that import them from here
__all__ = ["Collator", "CollatorOptions", "SeededStream", "StepInfo", "Task", "check_choice",
           "check_positive", "check_probability", "labels_on", "make_options", "meta_on",
           "option_docs"]


@dataclass(frozen=True)
class CollatorOptions:
    """Options every collator takes.

    Attributes:
        seed: makes the collator reproducible: the same seed and input give the same Batch.
            In DataLoader workers the worker id is mixed in, so workers draw different (but
            still reproducible) parameters. None uses torch's global RNG.
        generator: a CPU ``torch.Generator`` to draw every random parameter from (overrides
            ``seed``). Parameters are drawn on the CPU and moved to the images' device, so a
            seed gives the same batch on every device.
        mean, std: per-channel normalisation of the float output (RGB in [0, 1]).
        dct_scaling: decode JPEG bytes at the largest DCT reduction (1/2, 1/4, 1/8) that keeps
            the task's crops at least their output size (``ops.geometry.crop_views``): the
            decode is the largest per-image cost, and most crops are resized down anyway.
        max_pixels: the largest encoded image (H x W) decoded; a larger one is refused from
            its header (a ValueError naming the sample, which a loader skips and counts).
            Default: PIL's decompression-bomb limit, 178,956,970 (13,377 x 13,377).
    """

    seed: int | None = None
    generator: torch.Generator | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    dct_scaling: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS


class Collator(ABC):
    """Batch-level pretext-task work: samples in, :class:`~sslpipe.Batch` out, in two stages.

    The host stage (:meth:`host_stage`) ends in uint8 at the output sizes with every random
    parameter drawn; the device stage (:meth:`device_stage`) does the float work wherever its
    input is. A loader runs the first in DataLoader workers and the second on the GPU, so only
    uint8 crosses to the device. Subclasses implement :meth:`make_host` and :meth:`make_device`
    and may override :meth:`min_input_size` and ``min_batch_size`` (the fewest images a batch
    may hold: a loader drops, and reports, a shorter last batch).
    """

    min_batch_size: ClassVar[int] = 1

    def __init__(self, options: CollatorOptions) -> None:
        self.options = options
        gen = options.generator
        if gen is not None and (not isinstance(gen, torch.Generator) or gen.device.type != "cpu"):
            raise ValueError(
                f"generator must be a CPU torch.Generator (parameters are drawn on the CPU). "
                f"Got {gen!r}"
            )
        self._stream = SeededStream(options.seed) if options.seed is not None else None

    def __call__(self, samples: Any, generator: torch.Generator | None = None) -> Batch:
        """Make a Batch from a list of samples or a uint8 ``B x C x H x W`` tensor: the host
        stage then the device stage, on the device of the input images."""
        return self.device_stage(self.host_stage(samples, generator))

    def host_stage(self, samples: Any, generator: torch.Generator | None = None) -> HostBatch:
        """Decode, crop and resize to the output sizes in uint8, and draw every random
        parameter (on the CPU generator): what needs the encoded bytes or makes
        data-dependent shapes. Runs where the images are (DataLoader workers for encoded
        bytes, the GPU for images decoded there)."""
        images = collect(samples, min_size=self.min_input_size(),
                         decode=not self.options.dct_scaling, max_pixels=self.options.max_pixels)
        return self.sized_host(images, generator if generator is not None else self.generator())

    def device_stage(self, host: HostBatch) -> Batch:
        """The rest, as tensor math on the device of ``host.pixels``: float conversion, colour,
        blur, normalisation and the pseudo-labels. ``collator(samples)`` equals
        ``device_stage(host_stage(samples))`` exactly, for the same generator."""
        return self.sized_device(host)

    def make(self, images: Images, generator: torch.Generator | None) -> Batch:
        """Both stages on collected images (what a multi-task collator calls per member)."""
        return self.sized_device(self.sized_host(images, generator))

    def sized_host(self, images: Images, generator: torch.Generator | None) -> HostBatch:
        """:meth:`make_host`, with the HostBatch's ``size`` set to the number of images."""
        host = self.make_host(images, generator)
        if host.size is None:
            host.size = len(images)
        return host

    def sized_device(self, host: HostBatch) -> Batch:
        """:meth:`make_device`, with the Batch's ``size`` carried over from ``host``."""
        batch = self.make_device(host)
        if batch.size is None:
            batch.size = host.size
        return batch

    @abstractmethod
    def make_host(self, images: Images, generator: torch.Generator | None) -> HostBatch:
        """The host stage on collected uint8 images (override in each task).

        With ``dct_scaling`` the list may hold :class:`~sslpipe.ops.images.EncodedImage`
        entries: pass ``images.images`` to ``ops.geometry.resized_crop`` / ``crop_views``
        (which decode them) before any other pixel work. Every random draw happens here, in a
        fixed order, and goes into ``meta``.
        """

    @abstractmethod
    def make_device(self, host: HostBatch) -> Batch:
        """The device stage (override in each task): no random draws, no data-dependent
        shapes; parameters are read from ``host.meta`` (on the CPU)."""

    def min_input_size(self) -> int | tuple[int, int]:
        """Smallest ``(H, W)`` the task accepts; smaller images raise ValueError."""
        return 1

    def generator(self) -> torch.Generator | None:
        """The generator to draw this call's parameters from (None: torch's global RNG)."""
        if self.options.generator is not None:
            return self.options.generator
        return self._stream() if self._stream is not None else None


def meta_on(meta: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A device stage's ``meta`` for the Batch: every parameter copied to ``device`` without
    waiting (the copies queue on the current stream)."""
    return {key: value.to(device, non_blocking=True) for key, value in meta.items()}


def labels_on(host: HostBatch, device: torch.device) -> torch.Tensor | None:
    """The host batch's labels on ``device`` (None for unlabeled data)."""
    return None if host.labels is None else host.labels.to(device, non_blocking=True)


@dataclass(frozen=True)
class StepInfo:
    """Where a training step stands, as the trainer hands it to :meth:`Task.begin_step` and
    :meth:`Task.end_step`.

    Attributes:
        step: optimizer steps done before this one (0 on the first step).
        total_steps: optimizer steps the run will do in all (>= 1).
        steps_per_epoch: optimizer steps per epoch (>= 1).
    """

    step: int
    total_steps: int
    steps_per_epoch: int

    @property
    def progress(self) -> float:
        """``step / total_steps``, clamped to [0, 1]: the fraction of training done."""
        return min(max(self.step / max(self.total_steps, 1), 0.0), 1.0)

    @property
    def epoch(self) -> float:
        """``step / steps_per_epoch``: epochs done, as a float (1.5 halfway through the
        second epoch)."""
        return self.step / max(self.steps_per_epoch, 1)


class Task(ABC):
    """A pretext task: its collator, the model wiring (``build``) and the loss.

    The trainer only ever does ``task.loss(model(batch.inputs), batch)``, with two hooks
    around each step: :meth:`begin_step` before the forward pass and :meth:`end_step` after
    the optimizer step (where momentum teachers follow their online network, see
    :mod:`sslpipe.tasks.teacher`).
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = CollatorOptions
    Collator: ClassVar[type[Collator]]
    # the fewest images a batch needs for the loss (VICReg's variance needs 2); the trainer
    # passes over a shorter (last) batch and says so
    min_batch_size: ClassVar[int] = 1
    # SyncBatchNorm under DDP by default (TrainConfig.sync_bn=None): for losses that compare
    # the samples of the batch, whose authors normalise over the global batch
    sync_bn: ClassVar[bool] = False
    # which network a run's backbone.safetensors holds: "online" (the one trained by
    # gradient descent) or "teacher" (the momentum network of a MomentumPair: DINO's users
    # evaluate the teacher)
    eval_network: ClassVar[str] = "online"

    def __init__(self, **options: Any) -> None:
        self.options = make_options(self.Options, options, owner=f"task {self.name!r}")
        self.collator = self.Collator(self.options)

    @abstractmethod
    def build(self, backbone: nn.Module) -> nn.Module:
        """Wire a timm backbone (``num_classes=0``) to this task's head(s)."""

    @abstractmethod
    def loss(self, outputs: Any, batch: Batch) -> torch.Tensor:
        """The pretext loss of ``outputs = model(batch.inputs)`` (a pure function)."""

    def begin_step(self, info: StepInfo) -> None:
        """Called by the trainer before each step's forward pass; does nothing by default.

        Tasks with schedules (DINO's teacher temperature) set them here. It must be a pure
        function of ``info`` (no state carried from step to step), so that a resumed run
        gives the same values as an uninterrupted one.
        """
        return None

    def end_step(self, model: nn.Module, info: StepInfo) -> None:
        """Called by the trainer after each optimizer step with the unwrapped model (not the
        DDP wrapper) and the same ``info`` as :meth:`begin_step`; does nothing by default.
        Momentum teachers follow their online network here (:mod:`sslpipe.tasks.teacher`);
        it must depend only on ``info`` and the model, so resume is exact."""
        return None

    def metrics(self, outputs: Any, batch: Batch) -> dict[str, torch.Tensor]:
        """Extra per-step numbers for the log (e.g. pretext accuracy): 0-dim float tensors on
        the outputs' device, which the trainer sums there and reads only when it logs (a
        float would wait for the step to finish); none by default."""
        return {}

    def probe_views(self, outputs: Any, batch: Batch) -> list[Batch]:
        """Where an online probe looks for the labels of the backbone's features: the Batches
        whose ``labels`` (one per image) and ``meta["source"]`` (the image of each row the
        backbone saw) may match them, in the order the backbone ran on them. One task: the
        batch itself; a multi-task: each member's own batch (see ``MultiTask``)."""
        return [batch]

    def visualize(self, batch: Batch, max_images: int = 8) -> list[tuple[str, torch.Tensor]]:
        """Pictures for ``sslpipe show``: rows of ``(caption, N x 3 x H x W float in [0, 1])``.

        The default shows the first inputs with their targets; tasks override it to draw
        what their pseudo-labels mean (tiles in shuffled order, patch pairs, L and ab, ...).
        """
        from sslpipe.ops.color import denormalize

        x = batch.inputs[0] if isinstance(batch.inputs, tuple) else batch.inputs
        x = x[:max_images]
        caption = "inputs"
        if isinstance(batch.targets, torch.Tensor) and batch.targets.ndim == 1:
            caption += (
                " (targets " + " ".join(str(int(t)) for t in batch.targets[:max_images]) + ")"
            )
        return [(caption, denormalize(x.float().cpu(), self.options.mean, self.options.std))]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options})"
