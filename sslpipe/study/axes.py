"""A study's data and evaluation axes: ``[[pretrain]]``, ``[[eval]]`` and ``[[downstream]]``.

:class:`Pretrain`, :class:`Evaluation` and :class:`Downstream` are frozen dataclasses, parsed
from one table each (``parse_*``: ``index`` is the table's place in its array, for messages;
relative paths join ``base_dir``). ``EVAL_OPTIONS`` lists the options of each evaluation kind
(the names of ``sslpipe eval KIND`` flags, in snake case), ``SCRATCH_OPTIONS`` those of the
scratch baseline's fine-tune. Every error is a ValueError naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sslpipe.study.checks import as_name, as_path, as_table, check_keys

EVAL_KINDS = ("linear", "knn", "finetune")
# options of each evaluation kind (the names of `sslpipe eval KIND` flags, in snake case)
_COMMON = ("size", "batch_size", "workers", "device")
EVAL_OPTIONS: dict[str, tuple[str, ...]] = {
    "linear": ("layers", "pool", "epochs", "lr", "weight_decays", *_COMMON),
    "knn": ("layers", "pool", "k", "temperature", *_COMMON),
    "finetune": ("freeze", "epochs", "steps", "min_steps", "max_steps", "lr", "weight_decay",
                 *_COMMON),
}
SCRATCH_OPTIONS = ("epochs", "steps", "min_steps", "max_steps", "lr", "weight_decay", *_COMMON)


@dataclass(frozen=True)
class Pretrain:
    """One pretraining data set: ``name`` (its label, e.g. ``30k``) and a shard ``data`` dir."""

    name: str
    data: str


@dataclass(frozen=True)
class Evaluation:
    """One evaluation protocol: ``kind`` (linear, knn, finetune), a unique ``name`` (default
    the kind) and its ``options`` (see ``EVAL_OPTIONS``)."""

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Downstream:
    """A labelled downstream dataset: ``name`` and ``train`` / ``test`` shard directories."""

    name: str
    train: str
    test: str


def parse_pretrain(index: int, table: Any, base_dir: str) -> Pretrain:
    where = f"pretrain[{index}]"
    table = as_table(where, table)
    check_keys(where, table, required=("name", "data"), allowed=("name", "data"))
    return Pretrain(as_name(f"{where}.name", table["name"]),
                    as_path(f"{where}.data", table["data"], base_dir))


def parse_evaluation(index: int, table: Any) -> Evaluation:
    where = f"eval[{index}]"
    table = dict(as_table(where, table))
    kind = table.pop("kind", None)
    if kind not in EVAL_KINDS:
        raise ValueError(f"{where}.kind must be one of {', '.join(EVAL_KINDS)}. Got {kind!r}")
    name = as_name(f"{where}.name", table.pop("name", kind))
    check_keys(where, table, required=(), allowed=EVAL_OPTIONS[kind])
    return Evaluation(name, kind, table)


def parse_downstream(index: int, table: Any, base_dir: str) -> Downstream:
    where = f"downstream[{index}]"
    table = as_table(where, table)
    check_keys(where, table, required=("name", "train", "test"), allowed=("name", "train", "test"))
    return Downstream(as_name(f"{where}.name", table["name"]),
                      as_path(f"{where}.train", table["train"], base_dir),
                      as_path(f"{where}.test", table["test"], base_dir))
