"""Checkpoints of a run: atomic writes, the last K kept, exact resume.

A checkpoint holds everything a resumed run needs to continue as if never stopped: the task
model (backbone and heads), the online probe, the optimizers, the GradScaler, the schedule
position (the optimizer step: the schedule is a function of it), the RNG states (torch CPU and
CUDA, Python, NumPy) and the loader position (epoch and batches consumed in it), plus the
resolved config to check that a resumption runs the same experiment.

Layout: ``RUN_DIR/checkpoints/step-00000042.pt``.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslpipe.atomic import atomic_write
from sslpipe.train.config import RESUME_FREE_FIELDS

__all__ = ["save_checkpoint", "latest_checkpoint", "load_checkpoint", "check_resume_config",
           "saved_config", "rng_state", "set_rng_state"]

_NAME = re.compile(r"^step-(\d+)\.pt$")


def save_checkpoint(run_dir: str | os.PathLike[str], state: dict[str, Any], step: int,
                    keep: int) -> str:
    """Write ``state`` as ``checkpoints/step-{step}.pt`` atomically; keep the last ``keep``."""
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    for old in _checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return str(path)


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> str | None:
    """Path of the newest checkpoint of ``run_dir`` (None when there is none)."""
    found = _checkpoints(Path(run_dir) / "checkpoints")
    return str(found[-1]) if found else None


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=False)


def saved_config(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The config a run in ``run_dir`` was started with: its ``config.json``, else its newest
    checkpoint's (None when it has neither: killed before it wrote anything)."""
    saved_file = Path(run_dir) / "config.json"
    if saved_file.is_file():
        return dict(json.loads(saved_file.read_text()))
    last = latest_checkpoint(run_dir)
    return dict(load_checkpoint(last)["config"]) if last is not None else None


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Raise ValueError listing the fields where ``current`` differs from the run's config."""
    diffs = [
        f"{key}: run has {saved.get(key)!r}, now {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if key not in RESUME_FREE_FIELDS and saved.get(key) != current.get(key)
    ]
    if diffs:
        raise ValueError(
            f"resume: the config differs from the one of {where}: " + "; ".join(diffs)
            + ". Resume with the same settings, or start a new run directory"
        )


def rng_state() -> dict[str, Any]:
    """Every RNG state a training step may draw from."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(), "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]
