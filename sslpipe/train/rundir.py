"""A run directory's life: refuse to mix two runs, clear one on request, tidy after a kill.

A run directory holds one run: ``config.json``/``.yaml``, ``metrics.jsonl``, ``checkpoints/``,
``tensorboard/``, ``backbone.safetensors``, ``final.json`` and what ``sslpipe eval`` adds
(``eval/``). Training into a directory that already holds a run is refused unless the run is
resumed (``--resume``) or replaced (``--overwrite``), so two runs' metrics and an old ``eval/``
never end up beside new weights. A process killed at any instant leaves at most half-written
temporaries (``.*.tmp``) and a partial last line of ``metrics.jsonl``; :func:`tidy_for_resume`
removes them, and drops the metric lines of steps the resumed run will log again.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sslpipe.atomic import atomic_write_text

__all__ = ["RUN_FILES", "TrainResult", "holds_run", "prepare_run_dir", "read_result",
           "tidy_for_resume"]

RUN_FILES = ("config.json", "config.yaml", "metrics.jsonl", "final.json", "backbone.safetensors",
             "checkpoints", "tensorboard", "eval")


def holds_run(run_dir: str | os.PathLike[str]) -> bool:
    """True when ``run_dir`` holds any file of a training run."""
    folder = Path(run_dir)
    return any((folder / name).exists() for name in RUN_FILES)


def prepare_run_dir(run_dir: str | os.PathLike[str], resume: bool, overwrite: bool) -> None:
    """Check (and with ``overwrite`` clear) ``run_dir`` before a run starts.

    Raises:
        ValueError: it holds a run, and neither ``resume`` nor ``overwrite`` was given.
    """
    folder = Path(run_dir)
    if resume or not holds_run(folder):
        return
    if not overwrite:
        found = sorted(name for name in RUN_FILES if (folder / name).exists())
        raise ValueError(
            f"out: {str(folder)!r} already holds a run ({', '.join(found)}): pass --resume to "
            "continue it, --overwrite to delete it and start anew, or choose another --out"
        )
    for name in RUN_FILES:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def tidy_for_resume(run_dir: str | os.PathLike[str], step: int) -> None:
    """After a kill: remove half-written temporaries, and keep only ``metrics.jsonl``'s whole
    lines of steps up to ``step`` (the checkpoint resumed from; later ones are logged again)."""
    folder = Path(run_dir)
    for tmp in [*folder.glob(".*.tmp"), *(folder / "checkpoints").glob(".*.tmp")]:
        tmp.unlink(missing_ok=True)
    metrics = folder / "metrics.jsonl"
    if not metrics.is_file():
        return
    kept = []
    for line in metrics.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # the partial line a kill left
        try:
            record = json.loads(line)
        except ValueError:
            break
        if record.get("step", 0) <= step:
            kept.append(line)
    atomic_write_text(metrics, "".join(kept))


@dataclass
class TrainResult:
    """What :func:`train` returns: the run directory, the final metrics and the step count."""

    run_dir: str
    metrics: dict[str, float]
    steps: int
    backbone: str


def read_result(run_dir: str) -> TrainResult:
    # the directory as it is now: final.json's paths are where the run was written (it may
    # have been moved or reached by another path since)
    final = json.loads((Path(run_dir) / "final.json").read_text())
    return TrainResult(str(run_dir), final["metrics"], final["steps"],
                       str(Path(run_dir) / "backbone.safetensors"))
