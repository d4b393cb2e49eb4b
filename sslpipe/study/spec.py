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
was expected and what was given. The ``[[pretrain]]``, ``[[eval]]`` and ``[[downstream]]``
tables are parsed by :mod:`sslpipe.study.axes`, every value checked by
:mod:`sslpipe.study.checks`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from sslpipe.study.axes import (
    EVAL_KINDS,
    EVAL_OPTIONS,
    SCRATCH_OPTIONS,
    Downstream,
    Evaluation,
    Pretrain,
    parse_downstream,
    parse_evaluation,
    parse_pretrain,
)
from sslpipe.study.checks import SAMPLE_PREFIX, as_array, as_name, as_names, as_table, check_keys

# the axes' classes and option lists (sslpipe.study.axes) and SAMPLE_PREFIX
# (sslpipe.study.checks) are re-exported: they were this module's
__all__ = ["BASELINES", "EVAL_KINDS", "EVAL_OPTIONS", "SAMPLE_PREFIX", "SCRATCH_OPTIONS",
           "Downstream", "Evaluation", "Pretrain", "Study", "load_study", "parse_study",
           "resolve_data"]

BASELINES = ("random", "supervised", "scratch")
_TOP_KEYS = ("study", "train", "task_options", "pretrain", "eval", "downstream", "scratch",
             "report")


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
    check_keys("the study file", raw, required=("study", "pretrain", "eval", "downstream"),
               allowed=_TOP_KEYS)
    head = as_table("study", raw["study"])
    check_keys("[study]", head, required=("name", "archs", "tasks"),
               allowed=("name", "archs", "tasks", "baselines", "seed", "label_budgets",
                        "probe_seeds", "pretrain_seeds"))
    name = as_name("study.name", head["name"])
    archs = as_names("study.archs", head["archs"])
    tasks = as_names("study.tasks", head["tasks"], allow_empty="baselines" in head)
    baselines = as_names("study.baselines", head.get("baselines", []), allow_empty=True)
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
    scratch = dict(as_table("scratch", raw.get("scratch", {})))
    check_keys("[scratch]", scratch, required=(), allowed=SCRATCH_OPTIONS)
    if scratch and "scratch" not in baselines:
        raise ValueError("[scratch] sets the scratch baseline's options, but study.baselines "
                         "does not list 'scratch'")

    train = dict(as_table("train", raw.get("train", {})))
    for key in ("task", "data", "arch", "out", "resume", "seed", "task_options"):
        if key in train:
            raise ValueError(f"train.{key} is set by the study grid, not in [train] "
                             f"(use [study] or [task_options]). Got {train[key]!r}")
    _check_train_keys(train)
    options = as_table("task_options", raw.get("task_options", {}))
    task_options = {}
    for task, opts in options.items():
        if task not in tasks and not (task == "supervised" and "supervised" in baselines):
            raise ValueError(f"task_options.{task}: {task!r} is not in study.tasks "
                             f"({', '.join(tasks) or 'none'})")
        task_options[task] = dict(as_table(f"task_options.{task}", opts))

    pretrain = tuple(parse_pretrain(i, t, base_dir) for i, t in
                     enumerate(as_array("pretrain", raw["pretrain"])))
    evaluations = tuple(parse_evaluation(i, t) for i, t in enumerate(as_array("eval", raw["eval"])))
    downstream = tuple(parse_downstream(i, t, base_dir) for i, t in
                       enumerate(as_array("downstream", raw["downstream"])))
    for key, items in (("pretrain", pretrain), ("eval", evaluations),
                       ("downstream", downstream)):
        names = [item.name for item in items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"[[{key}]] names must be unique. Got {', '.join(dupes)} twice")

    report = as_table("report", raw.get("report", {}))
    check_keys("[report]", report, required=(), allowed=("metric", "layer"))
    metric = report.get("metric", "top1")
    if metric not in ("top1", "top5"):
        raise ValueError(f"report.metric must be 'top1' or 'top5'. Got {metric!r}")
    layer = as_name("report.layer", report.get("layer", "best"))
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
