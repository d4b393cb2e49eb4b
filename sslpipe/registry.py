"""Task registry: ``@register_task``, ``create_task``, ``create_collator``, ``list_tasks``.

As in timm's model registry: a duplicate name is an error, ``list_tasks("rot*")`` filters with
fnmatch, and an unknown name fails with the closest registered names. A name joined with ``+``
(``"rotation+jigsaw"``) builds a multi-task over one shared backbone.

The registry sits below the tasks and imports none of them: a task module registers itself
(``@register_task``), and ``tasks/multitask.py`` registers the factory of ``+`` names
(:func:`register_multitask`). The built-in task modules are loaded by name on first use
(``importlib``, as plugins), so that ``import sslpipe`` stays cheap.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from typing import Any, TypeVar

_TASKS: dict[str, type] = {}
_DESCRIPTIONS: dict[str, str] = {}
_BUILTIN_MODULES = (
    "rotation",
    "jigsaw",
    "relative_patch",
    "context_encoder",
    "colorization",
    "counting",
    "simclr",
    "vicreg",
    "byol",
    "mocov3",
    "dino",
    "mae",
    "supervised",
    "multitask",
)
_loaded = False
# builds a "+"-joined name: set by sslpipe.tasks.multitask (register_multitask)
_MULTITASK: list[Callable[..., Any]] = []

T = TypeVar("T", bound=type)


def register_task(name: str, description: str | None = None) -> Callable[[T], T]:
    """Class decorator that registers a Task under ``name``.

    ``description`` defaults to the first line of the class docstring. Registering a name
    twice raises ValueError.
    """
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"task name must be letters, digits and '_'. Got {name!r}")

    def wrap(cls: T) -> T:
        if name in _TASKS and _TASKS[name] is not cls:
            raise ValueError(
                f"task {name!r} is already registered by {_TASKS[name].__module__}."
                f"{_TASKS[name].__qualname__}"
            )
        _TASKS[name] = cls
        doc = (cls.__doc__ or "").strip().splitlines()
        _DESCRIPTIONS[name] = description or (doc[0] if doc else "")
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return wrap


def register_multitask(factory: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``factory(name, **options)``, which builds the Task of a ``+``-joined name.

    Used once, by ``sslpipe.tasks.multitask`` (``@register_multitask`` on ``MultiTask``);
    registering a second, different factory raises ValueError.
    """
    if _MULTITASK and _MULTITASK[0] is not factory:
        raise ValueError(
            f"the multi-task factory is already registered by {_MULTITASK[0].__module__}."
            f"{_MULTITASK[0].__qualname__}"
        )
    _MULTITASK[:] = [factory]
    return factory


def list_tasks(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered tasks, filtered by an fnmatch ``pattern`` if given."""
    _load_builtins()
    names = sorted(_TASKS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def describe_task(name: str) -> str:
    """One-line description of a registered task."""
    return _DESCRIPTIONS[_resolve(name)]


def task_class(name: str) -> Any:
    """The registered Task class for ``name`` (single task names only)."""
    return _TASKS[_resolve(name)]


def create_task(name: str, **options: Any) -> Any:
    """Create a Task by name, passing ``options`` to its constructor.

    ``name`` may join several tasks with ``+`` (``"rotation+jigsaw"``): the result is a
    MultiTask; options for one member go in a dict under its name
    (``create_task("rotation+jigsaw", jigsaw={"num_permutations": 100})``), the rest apply to
    every member that accepts them.
    """
    _load_builtins()
    if "+" in name:
        return _MULTITASK[0](name, **options)
    return _TASKS[_resolve(name)](**options)


def create_collator(name: str, **options: Any) -> Any:
    """The collator of task ``name``: ``create_task(name, **options).collator``."""
    return create_task(name, **options).collator


def _resolve(name: str) -> str:
    _load_builtins()
    if name in _TASKS:
        return name
    close = difflib.get_close_matches(name, list(_TASKS), n=3, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown task {name!r}.{hint} Registered tasks: {', '.join(sorted(_TASKS))}.")


def _load_builtins() -> None:
    # Load by name, on first use: `import sslpipe` stays cheap, and the registry imports no
    # task module (they import it, to register themselves).
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"sslpipe.tasks.{module}")
