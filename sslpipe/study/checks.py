"""The checks of a study file's TOML tables: keys, tables, arrays, names and paths.

Each takes the key's place in the file (``"pretrain[0].data"``) and the value found, and
returns the value when it is what the study file expects; otherwise it raises a ValueError
that names the key, what was expected and what was given (``"study.name must be a name of
letters, digits and _ . + - . Got 'a b'"``).
"""

from __future__ import annotations

import os
import re
from typing import Any

SAMPLE_PREFIX = "sample:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def check_keys(where: str, table: dict[str, Any], required: tuple[str, ...],
               allowed: tuple[str, ...]) -> None:
    """Raise unless ``table`` has every ``required`` key and no key outside ``allowed``."""
    missing = [k for k in required if k not in table]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}. Expected "
                         f"{', '.join(required)}")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}. Valid keys: "
                         f"{', '.join(allowed)}")


def as_table(key: str, value: Any) -> dict[str, Any]:
    """``value`` if it is a TOML table (a dict)."""
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a table of keys and values. Got "
                         f"{type(value).__name__} {value!r}")
    return value


def as_array(key: str, value: Any) -> list[Any]:
    """``value`` if it is a non-empty array of tables (``[[key]]``)."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{key} must be one or more [[{key}]] tables. Got {value!r}")
    return value


def as_name(key: str, value: Any) -> str:
    """``value`` if it is a name: a letter or digit, then letters, digits and ``_ . + -``."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"{key} must be a name of letters, digits and _ . + - . Got {value!r}")
    return value


def as_names(key: str, value: Any, allow_empty: bool = False) -> tuple[str, ...]:
    """``value`` as a tuple if it is a list of distinct names (empty only with ``allow_empty``)."""
    if not isinstance(value, list) or (not value and not allow_empty):
        raise ValueError(f"{key} must be a list of one or more names. Got {value!r}")
    names = tuple(as_name(f"{key}[{i}]", v) for i, v in enumerate(value))
    if len(set(names)) != len(names):
        raise ValueError(f"{key} must not repeat a name. Got {list(names)}")
    return names


def as_path(key: str, value: Any, base_dir: str) -> str:
    """``value`` joined to ``base_dir`` when relative; ``sample:...`` and absolute paths kept."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a directory path or 'sample:train'/'sample:test'. "
                         f"Got {value!r}")
    if value.startswith(SAMPLE_PREFIX) or os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(base_dir, value))
