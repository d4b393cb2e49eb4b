"""sslpipe: batch-level, device-agnostic input pipelines for self-supervised pretraining.

The public names (``Batch``, ``create_collator``, ``create_task``, ``list_tasks``,
``register_task``) load on first use, so that ``import sslpipe`` and ``sslpipe --help`` do not
pay for torch and timm. ``alexnet_bn`` joins timm's registry as soon as timm is loaded (now,
or right after a later ``import timm``): ``timm.create_model("alexnet_bn")`` works after
``import sslpipe``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Batch", "create_collator", "create_task", "list_tasks", "register_task", "__version__"]

if TYPE_CHECKING:
    from sslpipe.batch import Batch
    from sslpipe.registry import create_collator, create_task, list_tasks, register_task

_LAZY = {"Batch": "sslpipe.batch", "create_collator": "sslpipe.registry",
         "create_task": "sslpipe.registry", "list_tasks": "sslpipe.registry",
         "register_task": "sslpipe.registry"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sslpipe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _ThenRegister(importlib.abc.Loader):
    """timm's own loader, then sslpipe's models registered into the fresh timm."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        importlib.import_module("sslpipe.models.alexnet")

    def __getattr__(self, name: str) -> Any:  # resources, source, ...: timm's loader's
        return getattr(self._loader, name)


class _AfterTimm(importlib.abc.MetaPathFinder):
    """Finds nothing itself: hands timm's spec on with :class:`_ThenRegister` as its loader."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegister(spec.loader)
        return spec


if "timm" in sys.modules:
    importlib.import_module("sslpipe.models.alexnet")
elif not any(isinstance(finder, _AfterTimm) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AfterTimm())
