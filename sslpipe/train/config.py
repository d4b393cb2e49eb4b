"""``TrainConfig``: every training default, declared once. The CLI and config files fill it.

``load_config(path)`` reads YAML or TOML; ``merge`` overlays explicit values (the CLI's) on a
config; ``parse_task_options(["size=32", "mode=random"])`` turns ``--task-option`` strings into
typed values with YAML scalar rules (ints, floats, booleans, lists such as ``[0.2, 1.0]``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from sslpipe.options import check_choice, check_positive

__all__ = ["TrainConfig", "load_config", "merge", "parse_task_options", "RESUME_FREE_FIELDS"]

# Fields that may differ between a run and its resumption: they do not change the result.
RESUME_FREE_FIELDS = frozenset({
    "resume", "overwrite", "out", "progress", "num_workers", "log_every", "checkpoint_every",
    "checkpoint_minutes",
    "keep_checkpoints", "max_steps", "backend", "compile", "tensorboard", "hw_decoder_load",
    "cpu_decode_share", "memory_check",
})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. ``batch_size`` is the GLOBAL batch (all processes).

    Attributes:
        task: registered task name, or several joined with ``+`` (``rotation+jigsaw``).
        data: shard directory with a ``manifest.json``, or the URL of such a manifest (None
            when a loader is injected).
        val: optional validation shard directory (the online probe is evaluated on it).
        arch: timm architecture (``alexnet_bn`` included).
        small_input: 3x3 stride-1 stem without max-pool, for 32 px data.
        freeze_until: freeze the backbone up to this stage (``conv3``, ``layer2``, ``stage2``).
        epochs, batch_size: length of the run and the global batch.
        drop_last: every step takes a full batch (the last partial one of an epoch is left
            out); with False the last step of an epoch may be partial. Data holding fewer
            samples than one batch per process is trained in partial batches either way.
        max_steps: stop (with a checkpoint) after this many optimizer steps in total.
        optimizer: ``sgd``, ``lars`` or ``adamw``; ``lr``, ``momentum``, ``weight_decay``.
        scale_lr: multiply ``lr`` by ``batch_size / 256`` (the linear scaling rule).
        warmup_epochs: linear warm-up from 0; then ``schedule`` ``cosine`` (to ``min_lr``),
            ``step`` (times ``step_gamma`` at each of ``step_epochs``) or ``constant``.
        precision: ``auto`` (bf16 on CUDA, fp32 on CPU), ``bf16``, ``fp16`` (with a
            GradScaler) or ``fp32``.
        channels_last, compile: memory format and ``torch.compile`` of the model.
        backend, num_workers: decode backend and loader workers of ``create_loader`` (None:
            one per CPU, at most 8).
        hw_decoder_load, cpu_decode_share: how ``create_loader`` splits JPEG decoding: the
            hardware decoder's share (dali on CUDA), the CPU workers' share (nvjpeg).
        gpus: processes on this node, one per GPU (NCCL). ``procs``: CPU processes (gloo).
        sync_bn: convert BatchNorm layers to SyncBatchNorm under DDP (CUDA only); None (the
            default): on GPUs, for tasks whose loss compares the samples of the batch (SimCLR,
            VICReg: their authors normalise over the global batch; ``Task.sync_bn``), off for
            the others and on CPU processes.
        out: run directory. It must not hold a run already unless ``resume`` (continue from
            its latest checkpoint; from the start when none was written yet) or ``overwrite``
            (delete that run's files first).
        seed: seeds the model initialisation, the data order and the augmentations.
        task_options: keyword options of ``create_task``.
        checkpoint_every: also checkpoint every N steps (0: off).
        checkpoint_minutes: also checkpoint when this many minutes have passed since the
            last checkpoint (checked at log steps; 0: off), so that a fault late in a long
            epoch loses minutes, not the epoch.
        keep_checkpoints: how many checkpoints to keep.
        log_every: steps between metric lines.
        probe: train an online linear probe on the dataset labels when batches carry them.
        num_classes: classes of the probe (0: from the manifest's ``classes``).
        probe_lr: learning rate of the probe's own SGD.
        progress, tensorboard: tqdm bar; TensorBoard events when tensorboard is installed.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        memory_check: before training, estimate a step's memory (activations measured on two
            images, gradients, optimizer state, the loader's batches in flight) and refuse a
            batch that would not fit in the device's available memory
            (:mod:`sslpipe.train.footprint`).
    """

    task: str = "rotation"
    data: str | None = None
    val: str | None = None
    arch: str = "resnet50"
    small_input: bool = False
    freeze_until: str | None = None
    epochs: int = 100
    batch_size: int = 256
    drop_last: bool = True
    max_steps: int = 0
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scale_lr: bool = False
    warmup_epochs: float = 0.0
    schedule: str = "cosine"
    min_lr: float = 0.0
    step_epochs: tuple[float, ...] = ()
    step_gamma: float = 0.1
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    backend: str = "auto"
    num_workers: int | None = None
    hw_decoder_load: float = 0.65
    cpu_decode_share: float = 0.0
    gpus: int = 0
    procs: int = 1
    sync_bn: bool | None = None
    out: str = "runs/train"
    resume: bool = False
    overwrite: bool = False
    seed: int = 0
    task_options: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = 0
    checkpoint_minutes: float = 5.0
    keep_checkpoints: int = 3
    log_every: int = 10
    probe: bool = True
    num_classes: int = 0
    probe_lr: float = 0.1
    progress: bool = True
    tensorboard: bool = True
    device: str = "auto"
    memory_check: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "lr", "procs", "keep_checkpoints", "log_every"):
            check_positive(name, getattr(self, name))
        for name in ("max_steps", "weight_decay", "warmup_epochs", "gpus", "num_workers",
                     "checkpoint_every", "checkpoint_minutes", "num_classes", "min_lr"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name), allow_zero=True)
        check_choice("optimizer", self.optimizer, ("sgd", "lars", "adamw"))
        check_choice("schedule", self.schedule, ("cosine", "step", "constant"))
        check_choice("precision", self.precision, ("auto", "bf16", "fp16", "fp32"))
        check_choice("backend", self.backend, ("auto", "dali", "nvjpeg", "cpu"))
        for name in ("hw_decoder_load", "cpu_decode_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]. Got {getattr(self, name)!r}")
        check_choice("device", self.device, ("auto", "cpu", "cuda"))
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run in "
                             f"{self.out!r} or delete it, not both")
        if self.gpus and self.procs > 1:
            raise ValueError(f"use either gpus or procs. Got gpus={self.gpus}, procs={self.procs}")
        if self.batch_size % self.world_size:
            raise ValueError(
                f"batch_size must be divisible by the number of processes ({self.world_size}). "
                f"Got {self.batch_size}"
            )
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs must be <= epochs ({self.epochs}). "
                             f"Got {self.warmup_epochs}")

    @property
    def world_size(self) -> int:
        """Processes launched on this node (``torchrun`` may add nodes: see distributed.py)."""
        return self.gpus if self.gpus else self.procs

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated again)."""
        return merge(self, changes)


def merge(config: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """``config`` with ``values`` overlaid; unknown keys are a ValueError listing valid ones.

    ``task_options`` are merged key by key, so a config file and ``--task-option`` combine.
    """
    valid = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"config: unknown key(s) {', '.join(unknown)}. Valid keys: "
                         f"{', '.join(sorted(valid))}")
    values = dict(values)
    if "task_options" in values:
        values["task_options"] = {**config.task_options, **(values["task_options"] or {})}
    if "step_epochs" in values:
        values["step_epochs"] = tuple(float(v) for v in values["step_epochs"] or ())
    return dataclasses.replace(config, **values)


def load_config(path: str | os.PathLike[str], base: TrainConfig | None = None) -> TrainConfig:
    """Read a YAML (``.yaml``/``.yml``/``.json``) or TOML (``.toml``) file over ``base``."""
    return merge(base or TrainConfig(), read_config_file(path))


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping a YAML/JSON or TOML config file holds (only the keys it sets)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"config: file not found. Got {path!r}")
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".toml"):
        import tomllib

        values = tomllib.loads(raw.decode())
    else:
        values = yaml.safe_load(raw) or {}
    if not isinstance(values, dict):
        raise ValueError(f"config: {path!r} must hold a mapping of keys to values. "
                         f"Got {type(values).__name__}")
    return values


def parse_task_options(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["size=32", "crop_scale=[0.2, 1.0]", "head=mlp"]`` -> typed dict.

    Values follow YAML scalar rules; a list becomes a tuple (options dataclasses use tuples).
    Options for one member of a multi-task go as ``jigsaw.grid=3``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"task option must look like key=value. Got {item!r}")
        value = yaml.safe_load(text) if text.strip() else ""
        if isinstance(value, list):
            value = tuple(value)
        member, dot, name = key.partition(".")
        if dot:
            out.setdefault(member, {})[name] = value
        else:
            out[key] = value
    return out
