"""Result files: one JSON per evaluation, holding what is needed to reproduce it.

A record (``format: "sslpipe-eval"``, version 1)::

    {"format", "version", "protocol": "linear"|"knn"|"finetune", "method", "arch",
     "dataset", "checkpoint": {"spec", "path", "sha256", "small_input", "pretrain"},
     "data": {"train": {... "manifest_sha256"}, "test": {...}},
     "seed", "seeds": [...], "labels": {...} | null, "config": {...},
     "results": {layer: {"top1", "top5", "top1_std", "top5_std", "n", "runs", ...}},
     "seconds", "versions": {"sslpipe", "torch", "timm"}, "command": "sslpipe eval ..."}

Accuracies are percentages in [0, 100] with 2 decimals; ``sslpipe report`` prints these
numbers as they are. With ``--seeds K`` a layer's ``top1`` / ``top5`` are the means over the
``K`` runs, ``top1_std`` / ``top5_std`` their sample standard deviations (None for one run),
``n`` is ``K`` and ``runs`` lists every seed's numbers. ``labels`` (few-label runs) holds the
budget and, per seed, the number of labels, the images per class and the chosen keys' sha256.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any

from sslpipe.atomic import atomic_write_text

FORMAT = "sslpipe-eval"
VERSION = 1
PREFIX = "eval_"


def make_record(
    protocol: str,
    method: str,
    arch: str,
    dataset: str,
    results: dict[str, dict[str, Any]],
    checkpoint: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    seed: int | None = None,
    config: dict[str, Any] | None = None,
    seconds: float | None = None,
    command: str | None = None,
    seeds: list[int] | None = None,
    labels: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a result record (see the module docstring); validates ``results``."""
    for layer, numbers in results.items():
        if not isinstance(numbers, dict) or "top1" not in numbers:
            raise ValueError(f"results[{layer!r}] must be a dict with 'top1'. Got {numbers!r}")
    import timm
    import torch

    from sslpipe import __version__

    return {
        "format": FORMAT, "version": VERSION, "protocol": protocol, "method": method,
        "arch": arch, "dataset": dataset, "checkpoint": checkpoint or {}, "data": data or {},
        "seed": seed, "seeds": seeds if seeds is not None else [seed],
        "labels": labels, "config": config or {}, "results": results,
        "seconds": None if seconds is None else round(seconds, 1),
        "versions": {"sslpipe": __version__, "torch": torch.__version__,
                     "timm": timm.__version__},
        "command": command,
    }


def result_filename(record: dict[str, Any]) -> str:
    """``eval_{protocol}_{dataset}_{method}.json`` with unsafe characters replaced; a few-label
    result adds its budget (``..._rotation_1pct.json``, ``..._10-per-class.json``)."""
    parts = [record["protocol"], record["dataset"], record["method"]]
    budget = budget_name(record)
    if budget is not None:
        from sslpipe.eval.labels import parse_budget

        parts.append(parse_budget(budget).tag)
    return PREFIX + "_".join(re.sub(r"[^A-Za-z0-9.+-]+", "-", str(p)) for p in parts) + ".json"


def budget_name(record: dict[str, Any]) -> str | None:
    """The label budget of a result (``"1%"``, ``"10/class"``), None when it used every label."""
    budget = (record.get("labels") or {}).get("budget")
    return str(budget["name"]) if isinstance(budget, dict) and budget.get("name") else None


def write_result(record: dict[str, Any], out_dir: str | os.PathLike[str]) -> str:
    """Write ``record`` into ``out_dir`` atomically; returns the file's path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(os.fspath(out_dir), result_filename(record))
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False) + "\n")
    return path


def load_results(paths: list[str]) -> list[dict[str, Any]]:
    """Every result record under ``paths`` (files, or directories searched recursively).

    Raises:
        ValueError: a path does not exist, a file is not a result record, or nothing is found.
    """
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(glob.glob(os.path.join(path, "**", PREFIX + "*.json"), recursive=True))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise ValueError(f"RUN_DIR {path!r} does not exist")
    records = []
    for file in dict.fromkeys(files):
        try:
            with open(file, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{file!r} is not a readable JSON result: {err}") from err
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ValueError(f"{file!r} is not an sslpipe eval result (format {FORMAT!r})")
        record["_file"] = file
        records.append(record)
    if not records:
        raise ValueError(f"no {PREFIX}*.json result found under {paths}; run `sslpipe eval` first")
    return records


