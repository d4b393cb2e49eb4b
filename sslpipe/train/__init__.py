"""Pretraining: ``TrainConfig`` and ``train`` (the loop, DDP, checkpoints, export)."""

from sslpipe.train.config import TrainConfig, load_config, parse_task_options
from sslpipe.train.export import export_run
from sslpipe.train.memory import MemoryLoader
from sslpipe.train.trainer import Trainer, TrainingDiverged, TrainResult, train

__all__ = ["MemoryLoader", "TrainConfig", "TrainResult", "Trainer", "TrainingDiverged",
           "export_run", "load_config", "parse_task_options", "train"]
