"""Shared pieces of the study tests: a study dict and a backend that trains nothing."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest


def study_dict(**changes: Any) -> dict[str, Any]:
    """A small valid study (as parsed TOML): 2 pretraining sets, 2 tasks, knn + linear."""
    raw: dict[str, Any] = {
        "study": {"name": "unit", "archs": ["resnet18"], "tasks": ["rotation", "jigsaw"],
                  "baselines": ["random", "supervised"]},
        "train": {"epochs": 1, "batch_size": 8},
        "pretrain": [{"name": "small", "data": "sample:train"},
                     {"name": "large", "data": "sample:train"}],
        "eval": [{"kind": "knn", "k": 5}, {"kind": "linear", "layers": "all"}],
        "downstream": [{"name": "fm", "train": "sample:train", "test": "sample:test"}],
    }
    for key, value in changes.items():
        raw[key] = value
    return raw


class FakeBackend:
    """Counts calls; ``fail`` names tasks whose training raises; evaluations write a result
    file whose top-1 is given by ``score(cell)``."""

    def __init__(self, fail: tuple[str, ...] = (), score: Any = None) -> None:
        self.fail = fail
        self.score = score or (lambda cell: 50.0)
        self.trained: list[str] = []
        self.evaluated: list[tuple[str, str]] = []
        self.resumed: list[str] = []
        self.reports = 0

    def train(self, cell: Any, run_dir: str, resume: bool) -> dict[str, Any]:
        self.trained.append(cell.id)
        if resume:
            self.resumed.append(cell.id)
        if cell.task in self.fail:
            raise ValueError(f"task {cell.task!r}: unknown option(s) bogus")
        os.makedirs(run_dir, exist_ok=True)
        return {"run_dir": "run", "img_per_s": 100.0}

    def evaluate(self, cell: Any, checkpoint: str, out_dir: str) -> dict[str, Any]:
        self.evaluated.append((cell.id, checkpoint))
        top1 = float(self.score(cell))
        record = {"format": "sslpipe-eval", "version": 1, "protocol": cell.evaluation.kind,
                  "method": cell.label, "arch": cell.arch, "dataset": cell.downstream.name,
                  "checkpoint": {}, "results": {"pooled": {"top1": top1, "top5": 99.0},
                                                "stage1": {"top1": top1 - 10, "top5": 90.0}}}
        path = os.path.join(out_dir, "eval_result.json")
        with open(path, "w") as f:
            json.dump(record, f)
        return {"path": "eval_result.json"}

    def report(self, study: Any, grid: Any, records: Any, out_dir: str) -> dict[str, str]:
        self.reports += 1
        from sslpipe.study.report import write_study_report

        return write_study_report(study, grid, records, out_dir)


@pytest.fixture
def fake_backend() -> FakeBackend:
    return FakeBackend()
