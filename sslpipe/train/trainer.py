"""The training loop: ``train(config)`` and the :class:`Trainer` behind it.

Per step the trainer does only ``task.loss(model(batch.inputs), batch)`` with
``model = task.build(backbone)``: everything task-specific lives in the task. Around it: mixed
precision, DDP, the learning-rate schedule, an online linear probe on the dataset labels,
NaN/inf detection, checkpoints and logging.

This module starts a run (:func:`train`, :func:`validate`, one process or one per rank); the
:class:`Trainer` itself is in :mod:`sslpipe.train.loop`, and what it uses without sharing its
state is beside it: :mod:`~sslpipe.train.signals` (SIGINT/SIGTERM),
:mod:`~sslpipe.train.stepstats` (a step's numbers on the device), :mod:`~sslpipe.train.validation`,
:mod:`~sslpipe.train.summary`, :func:`sslpipe.train.footprint.fit_config` (the memory check) and
:mod:`~sslpipe.train.loading` (:func:`default_loader`). ``Trainer``, ``TrainResult``,
``TrainingDiverged``, ``TrainingInterrupted`` and ``default_loader`` are re-exported here.

Run directory::

    RUN_DIR/config.json, config.yaml   the resolved TrainConfig
    RUN_DIR/metrics.jsonl              one JSON line per log step and per epoch
    RUN_DIR/checkpoints/step-*.pt      the last ``keep_checkpoints`` checkpoints
    RUN_DIR/backbone.safetensors       the final backbone (plain timm state dict)
    RUN_DIR/final.json                 last epoch's metrics, steps, paths
"""

from __future__ import annotations

from typing import Any

import torch

from sslpipe.train import checkpoint as ckpt
from sslpipe.train.config import TrainConfig
from sslpipe.train.distributed import DistInfo, launch, under_torchrun
from sslpipe.train.loading import MakeLoader, default_loader
from sslpipe.train.loop import Trainer, _channels_last  # noqa: F401 (benchmarks import it here)
from sslpipe.train.rundir import TrainResult, prepare_run_dir, read_result
from sslpipe.train.signals import TrainingInterrupted
from sslpipe.train.stepstats import TrainingDiverged

__all__ = ["TrainResult", "Trainer", "TrainingDiverged", "TrainingInterrupted", "train",
           "default_loader", "validate"]


def train(config: TrainConfig, loader: Any = None,
          make_loader: MakeLoader | None = None, *, fit_batch: bool = False) -> TrainResult:
    """Train ``config.task`` on ``config.arch``; returns a :class:`TrainResult`.

    Args:
        config: the run's settings.
        loader: an already built loader (one process only): an iterable of Batches with
            ``len()`` and ``set_epoch(epoch)``, optionally ``iter_from(start)`` for free resume.
        make_loader: ``make_loader(config, task, split, info)`` building each rank's loader
            (must be picklable for ``procs``/``gpus`` > 1); default :func:`default_loader`,
            which reads ``config.data`` with :func:`sslpipe.data.create_loader`.
        fit_batch: when a step of ``config.batch_size`` would not fit in memory
            (``config.memory_check``), train with the largest power of two that fits, and
            say so, instead of refusing (the CLI's choice when ``--batch-size`` is not given).

    Raises:
        ValueError: bad input, found before any work starts (unknown arch or task, a data
            directory without manifest, a batch size not divisible by the processes, a
            resume whose config differs from the run's, a step that would not fit in
            memory).
        TrainingDiverged: the loss became NaN or inf.
        TrainingInterrupted: SIGINT or SIGTERM stopped the run (after a checkpoint).
    """
    validate(config, loader is not None or make_loader is not None)
    if loader is not None and (config.world_size > 1 or under_torchrun()):
        raise ValueError("loader: an injected loader serves one process; pass make_loader for "
                         f"{config.world_size} processes")
    use_cuda = _use_cuda(config)
    if config.world_size > 1 or under_torchrun():
        launch(_run_rank, config.world_size, use_cuda, (config, make_loader, fit_batch))
        return read_result(config.out)
    device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    return Trainer(config, DistInfo(device=device), loader=loader, make_loader=make_loader,
                   fit_batch=fit_batch).fit()


def validate(config: TrainConfig, has_loader: bool) -> None:
    """Check what can be checked before any work starts (see :func:`train`)."""
    from sslpipe.models import check_arch
    from sslpipe.registry import create_task

    check_arch(config.arch)
    create_task(config.task, **config.task_options)
    if not has_loader:
        if config.data is None:
            raise ValueError("data: a shard directory is required (or inject a loader)")
        from sslpipe.data.shard_source import load_manifest

        for path in (config.data, config.val):
            if path is not None:
                load_manifest(path)
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' asked for but CUDA is not available")
    if config.gpus and not torch.cuda.is_available():
        raise ValueError(f"gpus: {config.gpus} asked for but CUDA is not available; on CPU use "
                         "procs")
    if config.resume:  # a run killed before its first checkpoint resumes from the start
        saved = ckpt.saved_config(config.out)
        if saved is not None:
            ckpt.check_resume_config(saved, config.to_dict(), config.out)
    elif not under_torchrun():  # under torchrun, rank 0 checks (Trainer)
        prepare_run_dir(config.out, config.resume, config.overwrite)


def _run_rank(info: DistInfo, config: TrainConfig, make_loader: MakeLoader | None,
              fit_batch: bool = False) -> None:
    Trainer(config, info, make_loader=make_loader, fit_batch=fit_batch).fit()


def _use_cuda(config: TrainConfig) -> bool:
    if config.device == "cpu" or config.procs > 1:
        return False
    return config.device == "cuda" or config.gpus > 0 or torch.cuda.is_available()
