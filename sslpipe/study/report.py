"""A study's report: ``sslpipe report``'s tables and charts, plus what only a study knows.

:func:`write_study_report` first runs :func:`sslpipe.eval.report.write_tables` over the result
files of the study's finished evaluation cells (method x layer, method x dataset, method x
pretraining images; bar charts per dataset and per layer), then appends to ``report.md``:

* **pretraining-set size**: per evaluation and downstream dataset, method x pretraining set
  with top-1 / top-5 (of ``[report] layer``: the best layer of each cell, or a named one),
  ``subsets.csv``-like ``study_subsets.csv`` and a bar chart ``study_subsets_{eval}_{data}.png``;
* **sensitivity to pretraining-set size**: per method and evaluation, the population standard
  deviation of its downstream ``[report] metric`` across pretraining sets, averaged over the
  downstream datasets (datasets with fewer than two finished sizes are left out), with the
  mean accuracy beside it (``study_sensitivity.csv``);
* **cells**: every cell's status; failed ones with their error (``study_cells.csv``).

The random-init baseline does not depend on pretraining data: its row repeats one number.
"""

from __future__ import annotations

import json
import os
import statistics
from typing import TYPE_CHECKING, Any

from sslpipe.atomic import atomic_write_text
from sslpipe.eval.report import _bars, _csv, _markdown
from sslpipe.eval.results import load_results

if TYPE_CHECKING:
    from sslpipe.study.grid import EvalCell, Grid
    from sslpipe.study.spec import Study

FAILED = "failed"


def write_study_report(study: Study, grid: Grid, records: dict[str, dict[str, Any]],
                       out_dir: str) -> dict[str, str]:
    """Write the report of a study into ``out_dir``.

    Args:
        study, grid: the study and its cells.
        records: cell id -> cell record (see :mod:`sslpipe.study.runner`), each with a
            ``folder`` key (the cell's directory); cells without a record have not run.
        out_dir: output directory (created).

    Returns:
        paths written: ``markdown``, the CSV tables and one ``png:{name}`` per chart.
    """
    os.makedirs(out_dir, exist_ok=True)
    files = [os.path.join(r["folder"], r["result"]["path"]) for r in records.values()
             if r.get("status") == "ok" and r.get("kind") == "eval"]
    paths: dict[str, str] = {}
    md: list[str] = [f"# Study `{study.name}`", ""]
    if files:
        paths.update(_tables(files, out_dir, md))
    else:
        md += ["No evaluation finished, so there is no result table yet.", ""]
    numbers = {c.id: _numbers(records.get(c.id), study.layer) for c in grid.evals}
    rows = _subset_section(study, grid, numbers, out_dir, md, paths)
    paths["study_subsets_csv"] = _csv(os.path.join(out_dir, "study_subsets.csv"),
                                      ["eval", "dataset", "method", "pretrain", "layer",
                                       "top1", "top5"], rows)
    rows = _sensitivity_section(study, grid, numbers, md)
    paths["study_sensitivity_csv"] = _csv(os.path.join(out_dir, "study_sensitivity.csv"),
                                          ["eval", "method", "metric", "std", "mean",
                                           "datasets"], rows)
    rows = _cells_section(grid, records, md)
    paths["study_cells_csv"] = _csv(os.path.join(out_dir, "study_cells.csv"),
                                    ["cell", "status", "seconds", "error"], rows)
    paths["markdown"] = os.path.join(out_dir, "report.md")
    atomic_write_text(paths["markdown"], "\n".join(md) + "\n")
    return paths


def sensitivity(values_by_dataset: dict[str, list[float]]) -> tuple[float | None, int]:
    """Mean over datasets of the population std of each dataset's values across sizes.

    ``{"cifar10": [40.0, 44.0], "svhn": [70.0, 70.0, 76.0]}`` -> ``((2.0 + 2.83) / 2, 2)``.
    Datasets with fewer than two values are left out; returns ``(None, 0)`` if none is left.
    """
    stds = [statistics.pstdev(v) for v in values_by_dataset.values() if len(v) >= 2]
    return (round(sum(stds) / len(stds), 2), len(stds)) if stds else (None, 0)


def _tables(files: list[str], out_dir: str, md: list[str]) -> dict[str, str]:
    from sslpipe.eval.report import write_tables

    paths = write_tables(load_results(files), out_dir)
    with open(paths["markdown"], encoding="utf-8") as f:
        body = f.read().splitlines()
    # their title line gives way to the study's; the rest is kept as written
    body = body[1:] if body and body[0].startswith("# ") else body
    while body and not body[0].strip():
        body = body[1:]
    md += body + [""]
    return paths


def _numbers(record: dict[str, Any] | None, layer: str) -> tuple[str, float, float] | str | None:
    """``(layer, top1, top5)`` of a finished evaluation cell, ``"failed"`` or None."""
    if record is None or record.get("status") == "running":
        return None
    if record.get("status") != "ok":
        return FAILED
    with open(os.path.join(record["folder"], record["result"]["path"]), encoding="utf-8") as f:
        results = json.load(f)["results"]
    if layer != "best":
        if layer not in results:
            return None
        return layer, results[layer]["top1"], results[layer].get("top5", float("nan"))
    name = max(results, key=lambda k: results[k]["top1"])
    return name, results[name]["top1"], results[name].get("top5", float("nan"))


def _methods(grid: Grid) -> list[str]:
    return list(dict.fromkeys(c.label for c in grid.evals))


def _lookup(grid: Grid, label: str, ev: str, ds: str, pre: str) -> EvalCell | None:
    for c in grid.evals:
        if (c.label == label and c.evaluation.name == ev and c.downstream.name == ds
                and (c.pretrain == pre or c.train is None)):
            return c
    return None


def _subset_section(study: Study, grid: Grid, numbers: dict[str, Any], out_dir: str,
                    md: list[str], paths: dict[str, str]) -> list[list[Any]]:
    sizes = [p.name for p in study.pretrain]
    csv_rows: list[list[Any]] = []
    md += ["## Pretraining-set size", "",
           f"`top-1 / top-5` in % ({_layer_words(study.layer)}) per pretraining set; "
           "`failed` marks a failed cell, `-` one that has not run.", ""]
    for ev in study.evaluations:
        for ds in study.downstream:
            table, chart = [], {}
            for label in _methods(grid):
                row, ys = [label], []
                for size in sizes:
                    cell = _lookup(grid, label, ev.name, ds.name, size)
                    value = numbers.get(cell.id) if cell else None
                    row.append(_cell_text(value))
                    ys.append(value[1] if isinstance(value, tuple) else None)
                    if isinstance(value, tuple):
                        csv_rows.append([ev.name, ds.name, label, size, *value])
                table.append(row)
                chart[label] = ys
            md += [f"### {ev.name} on {ds.name}", ""] + _markdown(["method", *sizes], table)
            name = f"study_subsets_{ev.name}_{ds.name}"
            paths[f"png:{name}"] = _bars(os.path.join(out_dir, name + ".png"), sizes, chart,
                                         f"{ev.name} on {ds.name}: top-1 per pretraining set")
            md += ["", f"![{name}]({name}.png)", ""]
    return csv_rows


def _sensitivity_section(study: Study, grid: Grid, numbers: dict[str, Any],
                         md: list[str]) -> list[list[Any]]:
    metric_index = 1 if study.metric == "top1" else 2
    md += ["## Sensitivity to pretraining-set size", "",
           f"Population standard deviation of the downstream {study.metric} (in points) across "
           "pretraining sets, averaged over downstream datasets; `mean` is the average "
           f"{study.metric}. Lower: the task needs less pretraining data to do what it does.",
           ""]
    table, csv_rows = [], []
    for ev in study.evaluations:
        for label in _methods(grid):
            by_ds: dict[str, list[float]] = {}
            for ds in study.downstream:
                cells = [_lookup(grid, label, ev.name, ds.name, p.name) for p in study.pretrain]
                if any(c is not None and c.train is None for c in cells):
                    break  # random init: no pretraining data, nothing to be sensitive to
                by_ds[ds.name] = [v[metric_index] for c in cells if c is not None
                                  for v in [numbers.get(c.id)] if isinstance(v, tuple)]
            std, used = sensitivity(by_ds)
            values = [x for v in by_ds.values() for x in v]
            mean = round(sum(values) / len(values), 2) if values else None
            table.append([ev.name, label, "-" if std is None else f"{std:.2f}",
                          "-" if mean is None else f"{mean:.2f}", str(used)])
            if std is not None:
                csv_rows.append([ev.name, label, study.metric, std, mean, used])
    md += _markdown(["eval", "method", "std", "mean", "datasets"], table) + [""]
    return csv_rows


def _cells_section(grid: Grid, records: dict[str, dict[str, Any]],
                   md: list[str]) -> list[list[Any]]:
    rows, failed = [], []
    for cell in grid.cells():
        record = records.get(cell.id) or {}
        status = record.get("status", "not run")
        error = record.get("error") or ""
        rows.append([cell.id, status, record.get("seconds", ""), error])
        if status == FAILED:
            failed.append([f"`{cell.id}`", _one_line(error)])
    done = sum(1 for r in rows if r[1] == "ok")
    md += ["## Cells", "", f"{done} of {len(rows)} cells finished, {len(failed)} failed, "
           f"{sum(1 for r in rows if r[1] not in ('ok', FAILED))} not run.", ""]
    if failed:
        md += ["Failed cells (their numbers are missing from every table above):", ""]
        md += _markdown(["cell", "error"], failed) + [""]
    return rows


def _cell_text(value: tuple[str, float, float] | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value[1]:.2f} / {value[2]:.2f}"


def _layer_words(layer: str) -> str:
    return "best layer of each cell" if layer == "best" else f"layer {layer}"


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split()).replace("|", "\\|")
    return line if len(line) <= limit else line[:limit - 3] + "..."
