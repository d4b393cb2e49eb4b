"""``STUDY.toml``: one file that describes a whole pretext-task comparison study.

A study file has these tables (only ``[study]``, ``[[pretrain]]``, ``[[eval]]`` and
``[[downstream]]`` are required)::

    [study]
    name = "fashion_mnist_pretext"
    archs = ["resnet18"]                    # timm names (alexnet_bn included)
    tasks = ["rotation", "jigsaw", "rotation+jigsaw"]
    baselines = ["random", "supervised", "scratch"]   # optional, default none
    seed = 0
    label_budgets = ["1%", "10%", "100%"]   # optional: few-label sweep ("P%", N or "N/class")
    probe_seeds = 3                         # optional: probe seeds per evaluation (default 1)
    pretrain_seeds = 1                      # optional: pretraining runs per cell (default 1)

    [train]                                 # TrainConfig fields shared by every run
    epochs = 5
    batch_size = 128

    [task_options.jigsaw]                   # create_task options of one task
    grid = 3

    [[pretrain]]                            # pretraining data: shard directories
    name = "10k"                            # its label in tables (the subset size)
    data = "shards/fmnist-10k"              # or "sample:train" (the embedded sample)

    [[eval]]
    kind = "linear"                         # linear | knn | finetune
    layers = "all"

    [[downstream]]
    name = "fashion_mnist"
    train = "shards/fmnist-train"
    test = "shards/fmnist-test"

    [scratch]                               # the scratch baseline's fine-tune options
    steps = 300                             # (those of an eval of kind finetune, no freeze)

    [report]
    metric = "top1"                         # the number the sensitivity table uses
    layer = "best"                          # best layer of each cell, or a layer name

Seeds: ``seed`` is the first seed of everything. ``pretrain_seeds = P`` trains every training
cell ``P`` times, with seeds ``seed .. seed+P-1`` (cell ids end in ``/seed{s}``);
``probe_seeds = K`` runs every evaluation with ``sslpipe eval --seeds K`` (the probe seed: the
labelled subset drawn, the probe's initialisation, and the random and scratch backbones'
weights). Tables pool the ``P x K`` runs of a cell into ``mean ± sample std (runs)``.

Label budgets: each evaluation cell runs once per budget (``--label-fraction`` for ``"P%"``,
``--labels-per-class`` for ``N``), ids ending in ``/labels-{budget}``. The ``scratch`` baseline
(one fine-tune from random init per arch, downstream dataset and budget, options from
``[scratch]``) is the supervised-from-scratch row beside the probes; ``random`` is the frozen
random-init row.

Relative paths are relative to the study file's directory. :func:`load_study` parses and
checks the file into a frozen :class:`Study`; every error is a ValueError naming the key, what
was expected and what was given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

SAMPLE_PREFIX = "sample:"
BASELINES = ("random", "supervised", "scratch")
EVAL_KINDS = ("linear", "knn", "finetune")
# options of each evaluation kind (the names of `sslpipe eval KIND` flags, in snake case)
_COMMON = ("size", "batch_size", "workers", "device")
EVAL_OPTIONS: dict[str, tuple[str, ...]] = {
    "linear": ("layers", "pool", "epochs", "lr", "weight_decays", *_COMMON),
    "knn": ("layers", "pool", "k", "temperature", *_COMMON),
    "finetune": ("freeze", "epochs", "steps", "lr", "weight_decay", *_COMMON),
}
SCRATCH_OPTIONS = ("epochs", "steps", "lr", "weight_decay", *_COMMON)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_TOP_KEYS = ("study", "train", "task_options", "pretrain", "eval", "downstream", "scratch",
             "report")


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


@dataclass(frozen=True)
class Study:
    """A parsed, checked study file (see the module docstring for the keys).

    Attributes:
        name: the study's name (report titles).
        archs, tasks, baselines: the grid's architecture and task axes; baselines are
            ``random`` (one untrained backbone per architecture) and ``supervised`` (a
            ``supervised`` training run per pretraining set and architecture).
        seed: the first seed of every training run and evaluation.
        label_budgets: few-label budgets (``"1%"``, ``"10/class"``); empty: every label.
        probe_seeds: evaluation repeats per cell (``sslpipe eval --seeds``).
        pretrain_seeds: training repeats per training cell (seeds ``seed ..``).
        scratch: fine-tune options of the ``scratch`` baseline.
        train: TrainConfig fields applied to every training run.
        task_options: ``{task name: create_task options}``.
        pretrain, evaluations, downstream: the data and evaluation axes.
        metric, layer: what the sensitivity table measures (``top1``/``top5``; ``best`` or
            a layer name).
        path: the study file (None when built from a dict).
    """

    name: str
    archs: tuple[str, ...]
    tasks: tuple[str, ...]
    pretrain: tuple[Pretrain, ...]
    evaluations: tuple[Evaluation, ...]
    downstream: tuple[Downstream, ...]
    baselines: tuple[str, ...] = ()
    seed: int = 0
    train: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric: str = "top1"
    layer: str = "best"
    path: str | None = None
    label_budgets: tuple[str, ...] = ()
    probe_seeds: int = 1
    pretrain_seeds: int = 1
    scratch: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def digest(self) -> str:
        """sha256 of the study's content (the file path left out)."""
        data = self.to_dict()
        data.pop("path")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def load_study(path: str | os.PathLike[str]) -> Study:
    """Read and check a ``STUDY.toml`` file.

    Raises:
        ValueError: the file is missing or not TOML, or a key is missing, unknown or of the
            wrong type; the message names the key.
    """
    import tomllib

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"study file not found: expected a STUDY.toml file. Got {path!r}")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"study file {path!r} is not valid TOML: {err}") from err
    return parse_study(raw, base_dir=os.path.dirname(os.path.abspath(path)), path=path)


def parse_study(raw: dict[str, Any], base_dir: str = ".", path: str | None = None) -> Study:
    """Check a study given as a dict (the parsed TOML); relative paths join ``base_dir``."""
    _keys("the study file", raw, required=("study", "pretrain", "eval", "downstream"),
          allowed=_TOP_KEYS)
    head = _table("study", raw["study"])
    _keys("[study]", head, required=("name", "archs", "tasks"),
          allowed=("name", "archs", "tasks", "baselines", "seed", "label_budgets",
                   "probe_seeds", "pretrain_seeds"))
    name = _name("study.name", head["name"])
    archs = _names("study.archs", head["archs"])
    tasks = _names("study.tasks", head["tasks"], allow_empty="baselines" in head)
    baselines = _names("study.baselines", head.get("baselines", []), allow_empty=True)
    for base in baselines:
        if base not in BASELINES:
            raise ValueError(f"study.baselines: each must be one of {', '.join(BASELINES)}. "
                             f"Got {base!r}")
    seed = head.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"study.seed must be an integer >= 0. Got {seed!r}")
    repeats = {}
    for key in ("probe_seeds", "pretrain_seeds"):
        value = head.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"study.{key} must be an integer >= 1. Got {value!r}")
        repeats[key] = value
    budgets = _budgets(head.get("label_budgets", []))
    scratch = dict(_table("scratch", raw.get("scratch", {})))
    _keys("[scratch]", scratch, required=(), allowed=SCRATCH_OPTIONS)
    if scratch and "scratch" not in baselines:
        raise ValueError("[scratch] sets the scratch baseline's options, but study.baselines "
                         "does not list 'scratch'")

    train = dict(_table("train", raw.get("train", {})))
    for key in ("task", "data", "arch", "out", "resume", "seed", "task_options"):
        if key in train:
            raise ValueError(f"train.{key} is set by the study grid, not in [train] "
                             f"(use [study] or [task_options]). Got {train[key]!r}")
    _check_train_keys(train)
    options = _table("task_options", raw.get("task_options", {}))
    task_options = {}
    for task, opts in options.items():
        if task not in tasks and not (task == "supervised" and "supervised" in baselines):
            raise ValueError(f"task_options.{task}: {task!r} is not in study.tasks "
                             f"({', '.join(tasks) or 'none'})")
        task_options[task] = dict(_table(f"task_options.{task}", opts))

    pretrain = tuple(_pretrain(i, t, base_dir) for i, t in
                     enumerate(_array("pretrain", raw["pretrain"])))
    evaluations = tuple(_evaluation(i, t) for i, t in enumerate(_array("eval", raw["eval"])))
    downstream = tuple(_downstream(i, t, base_dir) for i, t in
                       enumerate(_array("downstream", raw["downstream"])))
    for key, items in (("pretrain", pretrain), ("eval", evaluations),
                       ("downstream", downstream)):
        names = [item.name for item in items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"[[{key}]] names must be unique. Got {', '.join(dupes)} twice")

    report = _table("report", raw.get("report", {}))
    _keys("[report]", report, required=(), allowed=("metric", "layer"))
    metric = report.get("metric", "top1")
    if metric not in ("top1", "top5"):
        raise ValueError(f"report.metric must be 'top1' or 'top5'. Got {metric!r}")
    layer = _name("report.layer", report.get("layer", "best"))
    return Study(name=name, archs=archs, tasks=tasks, pretrain=pretrain,
                 evaluations=evaluations, downstream=downstream, baselines=baselines,
                 seed=seed, train=train, task_options=task_options, metric=metric,
                 layer=layer, path=path, label_budgets=budgets, scratch=scratch, **repeats)


def resolve_data(value: str) -> str:
    """A data directory as given in a study: ``sample:train`` / ``sample:test`` become the
    embedded sample's directories, anything else is returned as it is."""
    if value.startswith(SAMPLE_PREFIX):
        from sslpipe.data import sample_path

        return sample_path(value[len(SAMPLE_PREFIX):])
    return value


def _budgets(value: Any) -> tuple[str, ...]:
    from sslpipe.eval.labels import parse_budget

    if not isinstance(value, list):
        raise ValueError(f"study.label_budgets must be a list like ['1%', '10%', '100%'] or "
                         f"[10, 100]. Got {value!r}")
    names = []
    for i, item in enumerate(value):
        try:
            names.append(parse_budget(item).name)
        except ValueError as err:
            raise ValueError(f"study.label_budgets[{i}]: {err}") from err
    if len(set(names)) != len(names):
        raise ValueError(f"study.label_budgets must not repeat a budget. Got {names}")
    return tuple(names)


def _check_train_keys(train: dict[str, Any]) -> None:
    from sslpipe.train.config import TrainConfig

    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(train) - valid)
    if unknown:
        raise ValueError(f"[train]: unknown key(s) {', '.join(unknown)}. Valid keys: "
                         f"{', '.join(sorted(valid))}")


def _pretrain(index: int, table: Any, base_dir: str) -> Pretrain:
    where = f"pretrain[{index}]"
    table = _table(where, table)
    _keys(where, table, required=("name", "data"), allowed=("name", "data"))
    return Pretrain(_name(f"{where}.name", table["name"]),
                    _path(f"{where}.data", table["data"], base_dir))


def _evaluation(index: int, table: Any) -> Evaluation:
    where = f"eval[{index}]"
    table = dict(_table(where, table))
    kind = table.pop("kind", None)
    if kind not in EVAL_KINDS:
        raise ValueError(f"{where}.kind must be one of {', '.join(EVAL_KINDS)}. Got {kind!r}")
    name = _name(f"{where}.name", table.pop("name", kind))
    _keys(where, table, required=(), allowed=EVAL_OPTIONS[kind])
    return Evaluation(name, kind, table)


def _downstream(index: int, table: Any, base_dir: str) -> Downstream:
    where = f"downstream[{index}]"
    table = _table(where, table)
    _keys(where, table, required=("name", "train", "test"), allowed=("name", "train", "test"))
    return Downstream(_name(f"{where}.name", table["name"]),
                      _path(f"{where}.train", table["train"], base_dir),
                      _path(f"{where}.test", table["test"], base_dir))


def _keys(where: str, table: dict[str, Any], required: tuple[str, ...],
          allowed: tuple[str, ...]) -> None:
    missing = [k for k in required if k not in table]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}. Expected "
                         f"{', '.join(required)}")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}. Valid keys: "
                         f"{', '.join(allowed)}")


def _table(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a table of keys and values. Got "
                         f"{type(value).__name__} {value!r}")
    return value


def _array(key: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{key} must be one or more [[{key}]] tables. Got {value!r}")
    return value


def _name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"{key} must be a name of letters, digits and _ . + - . Got {value!r}")
    return value


def _names(key: str, value: Any, allow_empty: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise ValueError(f"{key} must be a list of one or more names. Got {value!r}")
    names = tuple(_name(f"{key}[{i}]", v) for i, v in enumerate(value))
    if len(set(names)) != len(names):
        raise ValueError(f"{key} must not repeat a name. Got {list(names)}")
    return names


def _path(key: str, value: Any, base_dir: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a directory path or 'sample:train'/'sample:test'. "
                         f"Got {value!r}")
    if value.startswith(SAMPLE_PREFIX) or os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(base_dir, value))
