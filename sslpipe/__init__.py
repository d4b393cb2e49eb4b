"""sslpipe: batch-level, device-agnostic input pipelines for self-supervised pretraining."""

# sslpipe.models.alexnet registers alexnet_bn into timm: timm.create_model("alexnet_bn") works
# after `import sslpipe`.
import sslpipe.models.alexnet  # noqa: F401
from sslpipe.batch import Batch
from sslpipe.registry import create_collator, create_task, list_tasks, register_task

__version__ = "0.1.0"

__all__ = ["Batch", "create_collator", "create_task", "list_tasks", "register_task", "__version__"]
