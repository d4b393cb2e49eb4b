"""Will a training step fit in memory? Measured before the run starts, not found out by the OOM
killer.

``sslpipe train rotation --data fm1k`` (ResNet-50, small stem, 32 px, 256 images x 4
rotations per step) needs about 30 GB of activations on the CPU; on a 24 GiB machine the
kernel killed it without a word. :func:`measure` runs the task's forward pass and loss once on
two synthetic images, on a copy of the model on the CPU (under the run's autocast), and adds up
the bytes of every tensor autograd keeps for the backward pass (``saved_tensors_hooks``): the
activation memory per image, which a step multiplies by its batch. Parameters are left out
(they exist already); gradients and the optimizer's state are counted from the parameter
count; the backward pass's own temporaries are the measured 1.2-1.3x of the saved activations
(ResNet-18/50 at 32 px, peak resident memory of a real step), taken as 1.3x. On the CPU the
loader's float batches in flight (``prefetch_factor`` x workers) are added.

A momentum teacher (:class:`~sslpipe.tasks.teacher.MomentumPair`: BYOL, MoCo v3, DINO) keeps
nothing for the backward pass, and its weights exist already (they are in the model), but its
forward pass runs while the online network's activations are held: its largest layer's input
and output are alive together on top of them. That peak (twice the largest output of a layer
of the teacher, per image) is measured on the same forward pass and added; its parameters get
no gradients and no optimizer state, so ``state`` counts trainable parameters only.

:func:`fit_config` compares the two before a run: the batch fits, or a smaller one is taken
(``fit_batch``), or the run is refused with the numbers.

:func:`available_memory` is what the device can still give: ``torch.cuda.mem_get_info`` on
CUDA; on the CPU ``MemAvailable`` of ``/proc/meminfo``, capped by the cgroup's limit (a
container's ``--memory``), shared by the processes of the node.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslpipe.batch import nbytes
from sslpipe.ops.gather import local
from sslpipe.tasks.teacher import MomentumPair
from sslpipe.train.config import TrainConfig
from sslpipe.train.distributed import DistInfo, all_reduce_min
from sslpipe.train.logging import plural

__all__ = ["Footprint", "available_memory", "fit_config", "fitting_batch", "gigabytes", "measure"]

BACKWARD_FACTOR = 1.3  # peak of a step / activations kept for backward (measured 1.18-1.30)
USABLE = 0.9  # of the available memory: the allocator, the interpreter and the OS need some
WORKER_BYTES = 256 * 2**20  # a DataLoader worker's own memory beside the batches it holds
PREFETCH = 4  # batches each worker prepares ahead (sslpipe.data's DataLoader prefetch_factor)
PROBE_IMAGES = 2  # images of the measuring forward (BatchNorm1d heads need two)


@dataclass(frozen=True)
class Footprint:
    """What one process' training step holds, in bytes.

    Attributes:
        activations: kept for the backward pass, per source image of the batch.
        inputs: the float inputs a batch makes, per source image.
        state: gradients and optimizer state (momentum, Adam's moments) of the trainable
            parameters, whatever the batch.
        in_flight: batches held besides the one being trained (loader queues).
        workers: bytes of the loader's worker processes.
        teacher: the momentum teacher's forward peak per source image (0 without one).
    """

    activations: float
    inputs: float
    state: float
    in_flight: int = 0
    workers: float = 0.0
    teacher: float = 0.0

    def need(self, batch: int) -> float:
        """Bytes a step of ``batch`` images needs beyond what is allocated already."""
        return (BACKWARD_FACTOR * self.activations * batch + self.state
                + self.inputs * batch * self.in_flight + self.workers + self.teacher * batch)


def measure(task: Any, model: nn.Module, dtype: torch.dtype | None, optimizer: str,
            momentum: float) -> Footprint:
    """The :class:`Footprint` of ``task`` on ``model`` (run on a CPU copy: the model, the RNG
    and the task's random stream are left as they were)."""
    images = max(PROBE_IMAGES, int(getattr(task, "min_batch_size", 1)))
    side = _min_side(task.collator)
    pixels = torch.randint(0, 256, (images, 3, side, side), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    samples = [(image, i % 2) for i, image in enumerate(pixels)]  # labelled: every task takes it
    with torch.random.fork_rng(devices=[]):
        batch = task.collator(samples, generator=torch.Generator().manual_seed(0))
        probe = copy.deepcopy(model).cpu().train()
        owned = {t.untyped_storage().data_ptr() for t in
                 [*probe.parameters(), *probe.buffers()]}
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in owned:
                saved[storage.data_ptr()] = storage.nbytes()
            return t

        autocast: Any = (torch.autocast("cpu", dtype=dtype) if dtype is not None
                         else torch.autocast("cpu", enabled=False))
        teacher = _TeacherPeak(probe)
        # local(): no collective from this rank's private estimate (a CPU copy under NCCL)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast, local():
            loss = task.loss(probe(batch.inputs), batch)
        teacher.remove()
        del loss, probe
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    states = {"sgd": 1 if momentum else 0, "lars": 1, "adamw": 2}.get(optimizer, 2)
    return Footprint(activations=sum(saved.values()) / images,
                     inputs=nbytes(batch.inputs) / images,
                     state=float(trainable * (1 + states)), teacher=2 * teacher.largest / images)


class _TeacherPeak:
    """Forward hooks on the layers of every momentum teacher of ``model``: ``largest`` is the
    most bytes one of them output in a call."""

    def __init__(self, model: nn.Module) -> None:
        self.largest = 0
        self._handles = [m.register_forward_hook(self._hook)
                         for pair in model.modules() if isinstance(pair, MomentumPair)
                         for m in pair.target.modules() if not list(m.children())]

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        self.largest = max(self.largest, nbytes(output))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def fitting_batch(footprint: Footprint, batch: int, budget: float, smallest: int = 1) -> int:
    """The largest batch up to ``batch`` whose step fits in ``budget`` bytes: ``batch`` itself,
    else the largest power of two that fits (0 when not even ``smallest`` images fit)."""
    if footprint.need(batch) <= budget:
        return batch
    size = 1 << (max(1, batch - 1)).bit_length() - 1  # the largest power of two below batch
    while size >= max(1, smallest):
        if footprint.need(size) <= budget:
            return size
        size //= 2
    return 0


def fit_config(config: TrainConfig, fp: Footprint | None, info: DistInfo, injected: bool,
               min_batch_size: int, fit_batch: bool) -> TrainConfig:
    """The config whose step fits in the device's memory: this one, or with ``fit_batch`` one
    with a smaller batch (said in one line); else a ValueError naming the estimate, the memory
    available and what to change.

    Args:
        config: the run's config; ``fp``: its step's :func:`measure` (None: not checked).
        info: this process' rank, world and device; the ranks agree on the answer.
        injected: the run reads an injected loader (no worker batches in flight).
        min_batch_size: the task's fewest images per batch.
    """
    if fp is None:
        return config
    world = info.world_size
    on_cpu = info.device.type == "cpu"
    if injected:
        fp = dataclasses.replace(fp, in_flight=1)
    elif on_cpu:  # float batches wait in the workers' queues (shared memory)
        from sslpipe.devices import default_workers

        workers = config.num_workers if config.num_workers is not None else default_workers()
        fp = dataclasses.replace(fp, in_flight=PREFETCH * workers + 1,
                                 workers=workers * WORKER_BYTES)
    else:  # copied and augmented ahead on the device (run_ahead, prefetch_to_device)
        fp = dataclasses.replace(fp, in_flight=3)
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", world)) if on_cpu else 1
    available = available_memory(info.device, processes)
    per_rank = config.batch_size // world
    if available is None:
        return config
    budget = USABLE * available
    smallest = max(1, min_batch_size)
    fits = fitting_batch(fp, per_rank, budget, smallest)
    if info.distributed:  # every rank the same answer (each has its own memory)
        fits = int(all_reduce_min(torch.tensor([float(fits)], dtype=torch.float64,
                                               device=info.device)).item())
    if fits == per_rank:
        return config
    gb = gigabytes
    share = f" ({per_rank} per process)" if world > 1 else ""
    what = (f"a step of batch {config.batch_size}{share} ({config.task} on {config.arch}) "
            f"needs about {gb(fp.need(per_rank))} on {info.device.type} (activations "
            f"{gb(BACKWARD_FACTOR * fp.activations * per_rank)}, gradients and "
            f"optimizer state {gb(fp.state)}"
            + (f", loader {gb(fp.inputs * per_rank * fp.in_flight + fp.workers)}"
               if on_cpu and not injected else "")
            + f"); {gb(available)} available")
    if fits and fit_batch and not injected:
        if info.main:
            print(f"memory: {what}: training with batch {fits * world} instead (about "
                  f"{gb(fp.need(fits))}). --batch-size chooses the batch (one that does not "
                  "fit is refused); --no-memory-check skips this check", file=sys.stderr,
                  flush=True)
        return config.replace(batch_size=fits * world)
    hint = (f"{fits * world} fits: about {gb(fp.need(fits))}" if fits else
            f"not even {plural(smallest, 'image')} per process fit")
    raise ValueError(
        f"memory: {what}. Pass a smaller --batch-size ({hint}), a smaller --arch or -o "
        "size=...," + (" fewer --num-workers," if on_cpu and not injected else "")
        + " or --no-memory-check to try anyway")


def available_memory(device: torch.device, processes: int = 1) -> float | None:
    """Bytes one of ``processes`` processes of this node may still allocate on ``device``
    (None when it cannot be told)."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    room = [m for m in (_meminfo_available(), _cgroup_room()) if m is not None]
    return min(room) / max(1, processes) if room else None


def gigabytes(n: float) -> str:
    """``n`` bytes as ``"12.3 GB"``."""
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def _meminfo_available() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return None


def _cgroup_room() -> float | None:
    """The cgroup's memory limit less its usage (v2, then v1); None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit_text = Path(limit_file).read_text().strip()
            usage = float(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or float(limit_text) >= 2**60:
            return None
        return max(0.0, float(limit_text) - usage)
    return None


def _min_side(collator: Any) -> int:
    size = collator.min_input_size()
    side = max(size) if isinstance(size, tuple) else int(size)
    return max(32, side)


