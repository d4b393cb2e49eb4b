"""A study's grid: the training runs and the evaluation cells that follow from a :class:`Study`.

Training runs are ``pretraining data x task x arch x pretraining seed`` (plus a ``supervised``
run per data set, arch and seed when that baseline is asked for). Evaluation cells are
``training run x evaluation x downstream dataset x label budget``, plus, for the ``random``
baseline, ``arch x evaluation x downstream x budget`` (an untrained backbone does not depend
on pretraining data), and for the ``scratch`` baseline ``arch x downstream x budget`` (one
fine-tune from random init, with the study's ``[scratch]`` options).

Each cell has a stable id (its path under the study's output directory) and a spec hash over
everything that determines its result, including the content hash of the data manifests and,
for an evaluation, the hash of the training run it evaluates: change the training settings and
the evaluations of that run are stale too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sslpipe.study.spec import Downstream, Evaluation, Pretrain, Study, resolve_data

RANDOM_PRETRAIN = "none"
SCRATCH = "scratch"


@dataclass(frozen=True)
class TrainCell:
    """One pretraining run.

    Attributes:
        id: ``train/{arch}/{pretrain}/{task}`` (also its directory under the study's output).
        task: registered task name (``rotation+jigsaw`` for a multi-task, ``supervised``).
        arch: timm architecture.
        pretrain: the pretraining data.
        config: TrainConfig values other than ``out`` and ``resume``.
        seed: the pretraining seed (``config["seed"]``).
    """

    id: str
    task: str
    arch: str
    pretrain: Pretrain
    config: dict[str, Any]
    seed: int = 0

    def spec(self) -> dict[str, Any]:
        """What determines the run's result (JSON-able)."""
        return {"kind": "train", "id": self.id, "config": self.config}


@dataclass(frozen=True)
class EvalCell:
    """One evaluation of one backbone on one downstream dataset.

    Attributes:
        id: ``eval/{arch}/{pretrain}/{method}/{evaluation}/{downstream}``.
        method: the row name in tables: the task, ``random`` or ``supervised``.
        arch: timm architecture.
        pretrain: the pretraining data's name (``none`` for ``random``).
        evaluation, downstream: the protocol and the dataset.
        train: the training run it evaluates (None for ``random``).
        seed: seeds the probe / fine-tuning and the random backbone.
        small_input: the backbone's small-input stem (as the training runs use it).
        label: the method's name in tables (``method@arch`` when a study has several archs).
        budget: the label budget (``"1%"``, ``"10/class"``), None for every label.
        num_seeds: probe seeds (``sslpipe eval --seeds``), from ``seed`` on.
    """

    id: str
    method: str
    arch: str
    pretrain: str
    evaluation: Evaluation
    downstream: Downstream
    train: TrainCell | None
    seed: int
    small_input: bool
    label: str
    budget: str | None = None
    num_seeds: int = 1

    def spec(self) -> dict[str, Any]:
        """What determines the result, apart from the training run's own hash (JSON-able)."""
        spec = {"kind": "eval", "id": self.id, "method": self.method, "arch": self.arch,
                "eval_kind": self.evaluation.kind, "options": self.evaluation.options,
                "train_data": self.downstream.train, "test_data": self.downstream.test,
                "seed": self.seed, "small_input": self.small_input, "label": self.label}
        if self.budget is not None or self.num_seeds != 1:
            # only new fields that are set join the hash: older studies stay done
            spec.update(budget=self.budget, num_seeds=self.num_seeds)
        return spec


@dataclass(frozen=True)
class Grid:
    """The cells of a study, in the order they run: each training run before its evaluations."""

    train: tuple[TrainCell, ...]
    evals: tuple[EvalCell, ...]

    def evals_of(self, train: TrainCell | None) -> list[EvalCell]:
        """The evaluation cells of one training run (``None``: the random baselines)."""
        return [c for c in self.evals if c.train == train]

    def cells(self) -> list[TrainCell | EvalCell]:
        """Every cell: the training runs, then the evaluations."""
        return [*self.train, *self.evals]

    def __len__(self) -> int:
        return len(self.train) + len(self.evals)


def build_grid(study: Study) -> Grid:
    """Expand ``study`` into its training runs and evaluation cells."""
    methods = list(study.tasks) + (["supervised"] if "supervised" in study.baselines else [])
    small_input = bool(study.train.get("small_input", False))
    train_cells = []
    for arch in study.archs:
        for pre in study.pretrain:
            for task in methods:
                for i in range(study.pretrain_seeds):
                    seed = study.seed + i
                    config = {**study.train, "task": task, "arch": arch, "data": pre.data,
                              "seed": seed, "task_options": study.task_options.get(task, {})}
                    suffix = f"/seed{seed}" if study.pretrain_seeds > 1 else ""
                    train_cells.append(TrainCell(f"train/{arch}/{pre.name}/{task}{suffix}",
                                                 task, arch, pre, config, seed))
    evals = []
    for arch in study.archs:
        if "random" in study.baselines:
            evals += _evals(study, None, "random", arch, RANDOM_PRETRAIN, small_input)
        if "scratch" in study.baselines:
            scratch = Evaluation(SCRATCH, "finetune", dict(study.scratch))
            evals += _evals(study, None, SCRATCH, arch, RANDOM_PRETRAIN, small_input,
                            (scratch,))
    for cell in train_cells:
        evals += _evals(study, cell, cell.task, cell.arch, cell.pretrain.name, small_input)
    return Grid(tuple(train_cells), tuple(evals))


def cell_hash(cell: TrainCell | EvalCell,
              fingerprint: Callable[[str], str] | None = None) -> str:
    """sha256 over the cell's spec and the fingerprints of the data it reads.

    ``fingerprint(path)`` identifies a data directory's content (default: the sha256 of its
    ``manifest.json``, which lists every shard's sha256).
    """
    fingerprint = fingerprint or data_fingerprint
    spec = cell.spec()
    if isinstance(cell, TrainCell):
        spec["data_fingerprint"] = fingerprint(cell.pretrain.data)
    else:
        spec["data_fingerprint"] = [fingerprint(cell.downstream.train),
                                    fingerprint(cell.downstream.test)]
        spec["train_hash"] = cell_hash(cell.train, fingerprint) if cell.train else None
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def data_fingerprint(path: str) -> str:
    """sha256 of ``path/manifest.json`` (``sample:`` paths resolved); ``missing:PATH`` when
    there is none, so a cell over missing data fails when it runs rather than here."""
    try:
        directory = resolve_data(path)
    except ValueError:
        return f"missing:{path}"
    manifest = os.path.join(directory, "manifest.json")
    if not os.path.isfile(manifest):
        return f"missing:{path}"
    with open(manifest, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def describe_grid(grid: Grid) -> list[str]:
    """One line per cell, for ``--dry-run``."""
    lines = [f"{c.id}  (task {c.task}, data {c.pretrain.data})" for c in grid.train]
    lines += [f"{c.id}  ({c.evaluation.kind} on {c.downstream.name}"
              + (f", {c.budget} labels" if c.budget else "")
              + (f", {c.num_seeds} probe seeds" if c.num_seeds > 1 else "") + ")"
              for c in grid.evals]
    return lines


def _evals(study: Study, train: TrainCell | None, method: str, arch: str, pretrain: str,
           small_input: bool, evaluations: tuple[Evaluation, ...] | None = None
           ) -> list[EvalCell]:
    from sslpipe.eval.labels import parse_budget

    label = method if len(study.archs) == 1 else f"{method}@{arch}"
    seed_part = f"/seed{train.seed}" if train is not None and study.pretrain_seeds > 1 else ""
    budgets: tuple[str | None, ...] = study.label_budgets or (None,)
    cells = []
    for ev in evaluations or study.evaluations:
        for ds in study.downstream:
            for budget in budgets:
                tail = "" if budget is None else f"/labels-{parse_budget(budget).tag}"
                cells.append(EvalCell(
                    f"eval/{arch}/{pretrain}/{method}{seed_part}/{ev.name}/{ds.name}{tail}",
                    method, arch, pretrain, ev, ds, train, study.seed, small_input, label,
                    budget, study.probe_seeds))
    return cells
