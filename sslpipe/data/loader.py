"""``create_loader``: WebDataset shards in, :class:`~sslpipe.Batch` on the device out.

::

    loader = create_loader("shards/in60k", "rotation", batch_size=256, device="cuda")
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:          # len(loader) steps, the same on every rank
            loss = task.loss(model(batch.inputs), batch)

What the loader met on the way (bad samples and shards) is counted in ``loader.stats``, a
:class:`~sslpipe.data.events.LoaderStats` (re-exported here).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch

from sslpipe.batch import Batch
from sslpipe.data.backends import CpuBackend, DaliBackend, NvjpegBackend, select_backend
from sslpipe.data.events import LoaderStats
from sslpipe.data.prefetch import prefetch_to_device
from sslpipe.data.reading import ReadPlan, rank_quota, single_pass_steps, steps_per_epoch
from sslpipe.data.shard_source import ShardSource, peek_labeled, resolve_shards
from sslpipe.devices import default_workers
from sslpipe.options import check_choice, check_positive
from sslpipe.registry import create_task

log = logging.getLogger(__name__)


def create_loader(
    shards: Any,
    task_or_collator: Any,
    batch_size: int,
    *,
    device: str | torch.device = "cpu",
    backend: str = "auto",
    num_workers: int | None = None,
    seed: int = 0,
    shuffle_buffer: int = 1000,
    epoch_size: int | None = None,
    drop_last: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    resample: bool = False,
    on_error: str = "skip",
    damaged: str = "use",
    hw_decoder_load: float = 0.65,
    cpu_decode_share: float = 0.0,
    single_pass: bool = False,
    device_stage: str = "auto",
) -> Loader:
    """A loader of Batches from WebDataset shards, decoded by ``backend`` on ``device``.

    Args:
        shards: a shard directory (its manifest.json), a path/URL with brace ranges
            (``"in60k-{000000..000099}.tar"``, ``"pipe:cat d/a-{0..3}.tar"``,
            ``"https://host/a-{0..3}.tar"``), or a list of them.
        task_or_collator: a Task (its ``.collator`` is used), a collator, or a task name.
        batch_size: source images per batch (a task may make more inputs per image).
        device: where the Batches are delivered (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        backend: ``"cpu"``, ``"nvjpeg"`` (CUDA), ``"dali"`` or ``"auto"`` (the fastest
            available; the choice and the reason are logged). Every backend reads the shards
            the same way; they differ in where and by what the images are decoded.
        num_workers: DataLoader worker processes that read (every backend) and decode (cpu);
            default one per CPU, at most 8 (:func:`sslpipe.devices.default_workers`).
        seed: seeds the shard shuffle, the sample shuffle buffer and every random augmentation
            parameter; the same seed (and num_workers) gives the same batches, epoch by epoch.
        shuffle_buffer: samples held by each reader's shuffle buffer (0 or 1: no shuffle).
        epoch_size: samples per epoch over all ranks; default the manifest's sample count
            (required for shards without a manifest).
        drop_last: True: every batch full; False: the last batch of a rank may be partial.
        rank, world_size: this process' data-parallel rank; default from torch.distributed
            when it is initialised, else 0 and 1.
        resample: draw shards with replacement (serves more readers than there are shards).
        on_error: ``"skip"`` (bad samples and shards are skipped, counted in ``loader.stats``
            and logged at epoch end) or ``"raise"``.
        damaged: an image libjpeg-turbo reports damaged but that decodes past it ("Corrupt
            JPEG data", harmless extraneous bytes included) is ``"use"``-d or ``"skip"``-ped;
            either way it is counted and logged (``on_error="raise"`` raises). The same on
            every backend: the GPU decoders (nvJPEG, DALI's) pass damage over in silence, so
            the nvjpeg and dali backends' workers check each JPEG with libjpeg-turbo (about
            half a CPU decode) and decode a damaged one on the CPU, as the cpu backend does.
        hw_decoder_load: share of JPEG decoding on the GPU's hardware decoder (dali on CUDA).
        cpu_decode_share: share of each batch's JPEGs that the nvjpeg and dali backends' workers
            decode
            on the CPU (libjpeg-turbo) while nvJPEG decodes the rest on the GPU; raise it when
            the GPU decoder is the bottleneck and the workers' cores idle (``sslpipe bench``
            tells). PNG and other formats are always decoded in the workers.
        single_pass: read every sample exactly once, for evaluation and feature extraction:
            shards in their given order, no resampling and no fixed step count; each reader's
            last batch is partial (``drop_last`` and ``epoch_size`` do not apply), and
            ``len(loader)`` counts the batches when the shards' sizes are known. Pass
            ``shuffle_buffer=0`` for sample order too.
        device_stage: cpu backend: where a collator's device stage (the float work) runs:
            ``"device"`` (the workers send uint8, the device does the rest), ``"workers"``
            (the workers send finished float batches) or ``"auto"`` (``"device"`` on an
            accelerator, ``"workers"`` on the CPU). The Batches are the same either way.

    Returns:
        a :class:`Loader`: iterate it for Batches on ``device``; ``len(loader)`` is the number
        of steps per epoch (the same on every rank); call ``set_epoch`` before each epoch.

    Raises:
        ValueError: a bad argument, or fewer shards than ranks x workers without ``resample``.
    """
    check_positive("batch_size", batch_size)
    check_positive("shuffle_buffer", shuffle_buffer, allow_zero=True)
    check_choice("on_error", on_error, ("skip", "raise"))
    check_choice("device_stage", device_stage, ("auto", "device", "workers"))
    check_choice("damaged", damaged, ("use", "skip"))
    for name, share in (("hw_decoder_load", hw_decoder_load),
                        ("cpu_decode_share", cpu_decode_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be in [0, 1]. Got {share!r}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available; use device='cpu'")
    if device.type == "cuda" and device.index is None:
        # the caller's current device (a data-parallel rank's), which DALI and the
        # background decoding thread must be told explicitly
        device = torch.device("cuda", torch.cuda.current_device())
    rank, world_size = _distributed(rank, world_size)
    num_workers = default_workers() if num_workers is None else num_workers
    check_positive("num_workers", num_workers, allow_zero=True)
    source = peek_labeled(resolve_shards(shards))
    name, why = select_backend(backend, device, source)
    if single_pass:
        if resample or epoch_size is not None:
            raise ValueError("single_pass=True reads every sample once: it takes neither "
                             "resample=True nor epoch_size")
        plan = _single_pass_plan(source, batch_size, rank, world_size, num_workers, seed,
                                 shuffle_buffer)
    else:
        plan = _epoch_plan(source, batch_size, epoch_size, drop_last, rank, world_size, seed,
                           shuffle_buffer, resample)
        num_workers = fit_workers(len(source.urls), world_size, num_workers, resample)
        plan.check_readers(num_workers)
    collate = _collator(task_or_collator)
    impl: Any
    if name == "cpu":
        impl = CpuBackend(collate, device, num_workers, on_error, device_stage, damaged)
    elif name == "nvjpeg":
        impl = NvjpegBackend(collate, device, num_workers, on_error,
                             cpu_decode_share=cpu_decode_share, damaged=damaged)
    else:
        impl = DaliBackend(collate, device, num_workers, on_error, hw_decoder_load,
                           cpu_decode_share=cpu_decode_share, damaged=damaged)
    log.info("sslpipe loader: backend %r (%s); %s steps per epoch of %d on rank %d/%d",
             name, why, plan.steps, batch_size, rank, world_size)
    return Loader(impl, plan, device, why)


def fit_workers(shards: int, world_size: int, num_workers: int, resample: bool) -> int:
    """Fewer workers when there are too few shards for ``world_size x num_workers`` readers (a
    small dataset in one shard), said in one line; the count is kept when shards are drawn
    with replacement, or when not even every rank gets one (then the plan says what to do)."""
    readers = world_size * max(1, num_workers)
    if resample or shards >= readers or shards < world_size or num_workers <= 1:
        return num_workers
    fitted = max(1, shards // world_size)
    log.warning("sslpipe loader: %d shard(s) for %d rank(s): %d worker(s) per rank instead of "
                "%d (each reads whole shards; write more, smaller shards to use more)",
                shards, world_size, fitted, num_workers)
    return fitted


def _epoch_plan(source: ShardSource, batch_size: int, epoch_size: int | None, drop_last: bool,
                rank: int, world_size: int, seed: int, shuffle_buffer: int,
                resample: bool) -> ReadPlan:
    if epoch_size is None:
        epoch_size = source.num_samples
        if epoch_size is None:
            raise ValueError(
                "epoch_size is required: the shards have no manifest.json giving their sample "
                "count (pass epoch_size=the number of samples per epoch over all ranks)"
            )
    check_positive("epoch_size", epoch_size)
    return ReadPlan(
        source, batch_size, steps_per_epoch(epoch_size, batch_size, world_size, drop_last),
        rank_quota(epoch_size, world_size, drop_last), rank, world_size, seed,
        shuffle_buffer=shuffle_buffer, resample=resample,
    )


def _single_pass_plan(source: ShardSource, batch_size: int, rank: int, world_size: int,
                      num_workers: int, seed: int, shuffle_buffer: int) -> ReadPlan:
    steps = single_pass_steps(source, batch_size, rank, world_size, num_workers)
    return ReadPlan(source, batch_size, steps, 0, rank, world_size, seed,
                    shuffle_buffer=shuffle_buffer, single_pass=True)


class Loader:
    """Iterable of :class:`~sslpipe.Batch` on ``device``, made by :func:`create_loader`.

    Attributes:
        backend: the backend's name (``"cpu"``, ``"nvjpeg"``, ``"dali"``).
        reason: why that backend was chosen.
        num_workers: the DataLoader worker processes it runs (after fitting them to the
            shards: fewer when there are fewer shards than readers).
        device_stage: where the collator's device stage runs: ``"device"`` (in this process,
            on ``device``) or ``"workers"`` (the cpu backend's workers send float batches);
            what ``device_stage="auto"`` resolved to.
        stats: a :class:`LoaderStats`.
    """

    def __init__(self, impl: Any, plan: ReadPlan, device: torch.device, reason: str) -> None:
        self._impl = impl
        self._plan = plan
        self.device = device
        self.backend: str = impl.name
        self.reason = reason
        self.num_workers: int = impl.num_workers
        self.device_stage: str = "device" if impl.on_device else "workers"
        self.stats = LoaderStats()

    def __len__(self) -> int:
        if self._plan.steps is None:
            raise TypeError("this single-pass loader has no length: its shards' sample counts "
                            "are unknown (read a shard directory with a manifest.json)")
        return self._plan.steps

    @property
    def epoch(self) -> int:
        return self._plan.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: it seeds the shard order, the sample shuffle and augmentation."""
        check_positive("epoch", epoch, allow_zero=True)
        self._plan.epoch = int(epoch)

    def __iter__(self) -> Iterator[Batch]:
        before = len(self.stats.events)
        if self._impl.on_device:  # made on the device, ahead already (run_ahead)
            yield from self._counted()
        else:  # float batches that left the workers on the host: copy ahead
            yield from prefetch_to_device(self._counted(), self.device)
        met = self.stats.events[before:]
        if met:
            kinds = Counter(e[0] for e in met)
            used = kinds.pop("damaged-used", 0)
            what = []
            if kinds:
                what.append(f"skipped {sum(kinds.values())} bad input(s) ({dict(kinds)})")
            if used:
                what.append(f"used {used} image(s) a decoder reported damaged")
            log.warning("sslpipe loader: epoch %d %s; first: %s %s: %s", self._plan.epoch,
                        " and ".join(what), *met[0])

    def _counted(self) -> Iterator[Batch]:
        for batch, events in self._impl.batches(self._plan):
            self.stats.add(events)
            if batch is None:  # events met after a worker's last batch
                continue
            self.stats.batches += 1
            self.stats.samples += batch.batch_size
            yield batch

    def __repr__(self) -> str:
        return (f"Loader(backend={self.backend!r}, device={str(self.device)!r}, "
                f"steps={len(self)}, epoch={self.epoch})")


def _collator(task_or_collator: Any) -> Any:
    if isinstance(task_or_collator, str):
        return create_task(task_or_collator).collator
    collator = getattr(task_or_collator, "collator", task_or_collator)
    if not callable(collator):
        raise ValueError(
            "task_or_collator must be a Task, a collator or a task name. "
            f"Got {type(task_or_collator).__name__}"
        )
    return collator


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    dist = torch.distributed
    initialised = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    check_positive("world_size", world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}). Got {rank}")
    return rank, world_size
