"""Run a study's grid: every cell once, finished cells skipped, failures recorded.

Output directory::

    OUT/study.json                       the parsed study, its hash and the grid's cell ids
    OUT/train/{arch}/{data}/{task}/cell.json   a training run's record
    OUT/train/{arch}/{data}/{task}/run/        its run directory (``sslpipe train --out``)
    OUT/eval/{arch}/{data}/{method}/{eval}/{dataset}/cell.json   an evaluation's record
    OUT/eval/.../eval_*.json                   its result file (``sslpipe eval`` format)
    OUT/report/                          report.md, CSV tables, bar charts

A cell record is ``{"id", "kind", "spec_hash", "status": "running"|"ok"|"failed", "error",
"traceback", "started", "finished", "seconds", "result"}``. A cell is done when its record
says ``ok`` with the spec hash of the current grid (and, for an evaluation, its result file
exists): ``--resume`` skips it. A failed cell keeps its error and the study goes on; its
evaluations are recorded as failed too (their backbone does not exist). A training run that
was interrupted (record ``running``, same hash, a checkpoint on disk) continues from its last
checkpoint.

The work itself goes through a :class:`~sslpipe.study.backend.Backend` (default
:class:`~sslpipe.study.backend.SslpipeBackend`: the code of ``sslpipe train`` and ``sslpipe
eval``); tests inject their own.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sslpipe.atomic import atomic_write_text
from sslpipe.study.backend import Backend, SslpipeBackend
from sslpipe.study.grid import EvalCell, Grid, TrainCell, build_grid, cell_hash
from sslpipe.study.spec import Study

RECORD = "cell.json"
RUN_SUBDIR = "run"


@dataclass
class StudyResult:
    """What :func:`run_study` did.

    Attributes:
        out: the study's output directory.
        ran, skipped, failed: cell ids run successfully now, skipped as already done, failed.
        report: the report's files (``{"markdown": path, ...}``), empty if no cell succeeded.
    """

    out: str
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    report: dict[str, str] = field(default_factory=dict)


def run_study(study: Study, out: str, resume: bool = False, backend: Backend | None = None,
              log: Callable[[str], None] = print) -> StudyResult:
    """Run every cell of ``study`` into ``out``, then write the report.

    Args:
        study: a parsed study (:func:`~sslpipe.study.spec.load_study`).
        out: output directory (see the module docstring).
        resume: continue a study in ``out``: finished cells are skipped. Without it, ``out``
            must not hold cell records yet.
        backend: does the training, evaluation and report (default: sslpipe's own).
        log: receives one line per cell.

    Raises:
        ValueError: ``out`` holds a study and ``resume`` is False.
    """
    backend = backend or SslpipeBackend()
    grid = build_grid(study)
    if not resume and _has_records(out):
        raise ValueError(f"--out {out!r} already holds study results: pass --resume to continue "
                         "it (finished cells are skipped) or choose another --out")
    os.makedirs(out, exist_ok=True)
    _write_json(os.path.join(out, "study.json"), {
        "study": study.to_dict(), "study_hash": study.digest(),
        "cells": [c.id for c in grid.train] + [c.id for c in grid.evals]})
    result = StudyResult(out)
    hashes = {c.id: cell_hash(c) for c in grid.cells()}
    total, count = len(grid), 0
    for train in (None, *grid.train):
        parent_error = None
        if train is not None:
            count += 1
            parent_error = _run_cell(train, out, hashes[train.id], backend, result,
                                     f"[{count}/{total}]", log)
        for cell in grid.evals_of(train):
            count += 1
            _run_cell(cell, out, hashes[cell.id], backend, result, f"[{count}/{total}]", log,
                      parent_error=parent_error)
    result.report = write_study_report(study, grid, out, hashes, backend)
    log(f"study {study.name}: {len(result.ran)} ran, {len(result.skipped)} skipped (done), "
        f"{len(result.failed)} failed; report: {result.report.get('markdown', 'none')}")
    return result


def write_study_report(study: Study, grid: Grid, out: str, hashes: dict[str, str],
                       backend: Backend) -> dict[str, str]:
    """Report over the current grid's cells in ``out`` (stale records are left out)."""
    records: dict[str, dict[str, Any]] = {}
    for cell in grid.cells():
        record = read_record(out, cell.id)
        if record and record.get("spec_hash") == hashes[cell.id]:
            records[cell.id] = {**record, "folder": os.path.join(out, cell.id)}
    return backend.report(study, grid, records, os.path.join(out, "report"))


def read_record(out: str, cell_id: str) -> dict[str, Any] | None:
    """The record of cell ``cell_id`` in study directory ``out``, or None."""
    path = os.path.join(out, cell_id, RECORD)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None  # a torn or foreign file: the cell is simply not done
    return data if isinstance(data, dict) else None


def is_done(out: str, cell: TrainCell | EvalCell, spec_hash: str) -> bool:
    """Whether ``cell`` finished with this spec hash (and its result file still exists)."""
    record = read_record(out, cell.id)
    if not record or record.get("status") != "ok" or record.get("spec_hash") != spec_hash:
        return False
    path = (record.get("result") or {}).get("path")
    return path is None or os.path.exists(os.path.join(out, cell.id, path))


def _run_cell(cell: TrainCell | EvalCell, out: str, spec_hash: str, backend: Backend,
              result: StudyResult, counter: str, log: Callable[[str], None],
              parent_error: str | None = None) -> str | None:
    """Run one cell unless done; returns its error (None when it succeeded)."""
    if is_done(out, cell, spec_hash):
        result.skipped.append(cell.id)
        log(f"{counter} {cell.id}: done, skipped")
        return None
    folder = os.path.join(out, cell.id)
    previous = read_record(out, cell.id)
    resume = _prepare(folder, cell, previous, spec_hash)
    record: dict[str, Any] = {"id": cell.id, "kind": cell.spec()["kind"], "spec_hash": spec_hash,
                              "status": "running", "error": None, "traceback": None,
                              "started": _now(), "finished": None, "seconds": None,
                              "result": None}
    _write_json(os.path.join(folder, RECORD), record)
    start = time.perf_counter()
    if parent_error is not None:
        error, trace, outcome = f"not run: its training run failed ({parent_error})", None, None
    else:
        log(f"{counter} {cell.id}: running" + (" (resuming)" if resume else ""))
        try:
            if isinstance(cell, TrainCell):
                outcome = backend.train(cell, os.path.join(folder, RUN_SUBDIR), resume)
            else:
                checkpoint = _checkpoint_of(cell, out)
                outcome = backend.evaluate(cell, checkpoint, folder)
            error, trace = None, None
        except Exception as err:  # a failed cell is recorded and the study goes on
            error, trace, outcome = f"{type(err).__name__}: {err}", traceback.format_exc(), None
    record.update(status="failed" if error else "ok", error=error, traceback=trace,
                  finished=_now(), seconds=round(time.perf_counter() - start, 2),
                  result=outcome)
    _write_json(os.path.join(folder, RECORD), record)
    (result.failed if error else result.ran).append(cell.id)
    if error:
        log(f"{counter} {cell.id}: FAILED: {error}")
    return error


def _prepare(folder: str, cell: TrainCell | EvalCell, previous: dict[str, Any] | None,
             spec_hash: str) -> bool:
    """Clear what a stale attempt left in ``folder``; True when training can resume."""
    run_dir = os.path.join(folder, RUN_SUBDIR)
    if (isinstance(cell, TrainCell) and previous and previous.get("spec_hash") == spec_hash
            and previous.get("status") == "running" and _has_checkpoint(run_dir)):
        return True
    if os.path.isdir(folder):
        # results of another spec (or a failed attempt) must not mix with the new ones;
        # only this cell's own folder inside the study directory is removed
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if os.path.isdir(path) and not os.path.isfile(os.path.join(path, RECORD)):
                shutil.rmtree(path)
            elif os.path.isfile(path):
                os.remove(path)
    return False


def _checkpoint_of(cell: EvalCell, out: str) -> str:
    """``--checkpoint`` of an evaluation: ``random``, ``scratch``, ``supervised:RUN_DIR`` or
    ``RUN_DIR``."""
    if cell.train is None:
        return "scratch" if cell.method == "scratch" else "random"
    run_dir = os.path.join(out, cell.train.id, RUN_SUBDIR)
    return f"supervised:{run_dir}" if cell.method == "supervised" else run_dir


def _has_checkpoint(run_dir: str) -> bool:
    from sslpipe.train.checkpoint import latest_checkpoint

    return os.path.isdir(run_dir) and latest_checkpoint(run_dir) is not None


def _has_records(out: str) -> bool:
    if not os.path.isdir(out):
        return False
    return any(RECORD in files for _, _, files in os.walk(out))


def _write_json(path: str, data: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
