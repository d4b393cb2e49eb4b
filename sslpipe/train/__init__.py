"""Pretraining: ``TrainConfig`` and ``train`` (the loop, DDP, checkpoints, export)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sslpipe._lazy import lazy_names

if TYPE_CHECKING:
    from sslpipe.train.config import TrainConfig, load_config, parse_task_options
    from sslpipe.train.export import export_run
    from sslpipe.train.memory import MemoryLoader
    from sslpipe.train.trainer import (
        Trainer,
        TrainingDiverged,
        TrainingInterrupted,
        TrainResult,
        train,
    )

__all__ = ["MemoryLoader", "TrainConfig", "TrainResult", "Trainer", "TrainingDiverged",
           "TrainingInterrupted", "export_run", "load_config", "parse_task_options", "train"]

__getattr__, __dir__ = lazy_names(__name__, {
    "MemoryLoader": "sslpipe.train.memory",
    "TrainConfig": "sslpipe.train.config",
    "TrainResult": "sslpipe.train.trainer",
    "Trainer": "sslpipe.train.trainer",
    "TrainingDiverged": "sslpipe.train.trainer",
    "TrainingInterrupted": "sslpipe.train.trainer",
    "export_run": "sslpipe.train.export",
    "load_config": "sslpipe.train.config",
    "parse_task_options": "sslpipe.train.config",
    "train": "sslpipe.train.trainer",
})
