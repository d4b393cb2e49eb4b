"""sslpipe: batch-level, device-agnostic input pipelines for self-supervised pretraining."""

from sslpipe.batch import Batch
from sslpipe.registry import create_collator, create_task, list_tasks, register_task

__version__ = "0.1.0"

__all__ = ["Batch", "create_collator", "create_task", "list_tasks", "register_task", "__version__"]
