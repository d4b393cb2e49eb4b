"""Options dataclasses: building them from keyword arguments and checking their values.

The lowest layer of sslpipe's option handling, importable from anywhere (it imports nothing of
sslpipe): tasks' options (``tasks/base.py`` re-exports these names), the loader's arguments
(``data/loader.py``), the run config (``train/config.py``) and the evaluation options all check
their values here, so that every wrong value reads the same: ``"{name} must be ... Got ..."``.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from typing import Any, Literal, Union

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
    hints = _type_hints(cls)
    for name, value in options.items():
        expected = hints.get(name)
        if expected is not None and not _matches(value, expected):
            hint = (f" (on the command line a sequence is written in brackets: "
                    f"-o {name}=[{value}])" if isinstance(value, str) and "," in value else "")
            raise ValueError(f"{owner}: option {name} must be {_describe(expected)}. "
                             f"Got {value!r}{hint}")
    return cls(**options)


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve here: no type checks
        return {}


def _matches(value: Any, tp: Any) -> bool:
    """Whether ``value`` fits the annotation ``tp`` (numbers loosely: an int is a float, a
    list a tuple; classes and generics this does not know pass)."""
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    if origin is not None:
        return isinstance(value, origin) if isinstance(origin, type) else True
    return isinstance(value, tp) if isinstance(tp, type) else True


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "None"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if tp in (int, float, bool, str):
        return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[tp]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a sequence of ({_describe(args[0])})"
        return f"a sequence of {len(args)} ({', '.join(_describe(a) for a in args)})"
    return getattr(tp, "__name__", str(tp))


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
