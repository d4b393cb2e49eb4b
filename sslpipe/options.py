"""Options dataclasses: building them from keyword arguments and checking their values.

The lowest layer of sslpipe's option handling, importable from anywhere (it imports nothing of
sslpipe): tasks' options (``tasks/base.py`` re-exports these names), the loader's arguments
(``data/loader.py``), the run config (``train/config.py``) and the evaluation options all check
their values here, so that every wrong value reads the same: ``"{name} must be ... Got ..."``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["check_choice", "check_positive", "check_probability", "make_options", "option_docs"]


def make_options(cls: type, options: dict[str, Any], owner: str) -> Any:
    """Instantiate the options dataclass ``cls``; unknown names give a ValueError listing
    the valid ones, and wrong values the dataclass' own ``__post_init__`` errors."""
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(
            f"{owner}: unknown option(s) {', '.join(unknown)}. Valid options: "
            f"{', '.join(sorted(valid))}"
        )
    return cls(**options)


def option_docs(cls: type) -> list[tuple[str, Any]]:
    """``(name, default)`` of every option of an options dataclass, for `sslpipe tasks`."""
    out = []
    for f in dataclasses.fields(cls):
        if f.name in ("generator",):
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append((f.name, default))
    return out


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}. Got {value!r}")


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise ValueError unless ``value`` > 0 (or >= 0)."""
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}. Got {value!r}")


def check_probability(name: str, value: float) -> None:
    """Raise ValueError unless 0 <= ``value`` <= 1."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1]. Got {value!r}")
