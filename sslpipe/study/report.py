"""A study's report: ``sslpipe report``'s tables and charts, plus what only a study knows.

:func:`write_study_report` first runs :func:`sslpipe.eval.report.write_tables` over the result
files of the study's finished evaluation cells (method x layer, method x dataset, method x
pretraining images; bar charts per dataset and per layer), then appends to ``report.md``:

* **pretraining-set size**: per evaluation, downstream dataset and label budget, method x
  pretraining set with top-1 / top-5 (of ``[report] layer``: the best layer of each cell, or a
  named one) as ``mean ± sample std (runs)`` over the cell's probe seeds and pretraining
  seeds, ``study_subsets.csv`` and a bar chart with error bars
  ``study_subsets_{eval}_{data}[_{budget}].png``; the ``scratch`` baseline is a row of every
  evaluation's table;
* **sensitivity to pretraining-set size**: per method, evaluation and budget, the population
  standard deviation of its mean downstream ``[report] metric`` across pretraining sets,
  averaged over the downstream datasets (datasets with fewer than two finished sizes are left
  out), beside the seeds' own spread (the mean sample std of the runs within a set) and the
  mean accuracy (``study_sensitivity.csv``): a sensitivity below the seeds' spread is noise;
* **per layer and architecture** (studies of several architectures, e.g. RotNet's 3, 4 and 5
  blocks): per task, evaluation, dataset, budget and pretraining set, rows the architecture,
  columns the layers (``stage1`` = block 1 ...), the shape of the RotNet paper's per-block
  table (``study_layers.csv``, a table figure ``study_layers_{task}_{eval}_{data}_...png``;
  :mod:`sslpipe.study.layer_table`);
* **cells**: every cell's status; failed ones with their error (``study_cells.csv``).

The random-init and scratch baselines do not depend on pretraining data: their rows repeat
one number. The generic tables before these sections (``sslpipe report``'s) carry the label
budget tables and the verdicts in words (clear only when the ``mean ± std`` intervals do not
overlap). Which cells make a table entry, and how their results pool, is
:mod:`sslpipe.study.entries`.
"""

from __future__ import annotations

import json
import os
import statistics
from typing import TYPE_CHECKING, Any

from sslpipe.atomic import atomic_write_text
from sslpipe.eval.formats import bar_chart, markdown_table, num_text, safe_name, write_csv
from sslpipe.eval.results import load_results
from sslpipe.study.entries import (
    FAILED,
    Summary,
    budget_file,
    budget_title,
    dash,
    entry_cells,
    entry_summary,
    eval_methods,
    summarize,
    summary_text,
)
from sslpipe.study.layer_table import layers_section

if TYPE_CHECKING:
    from sslpipe.study.grid import Grid
    from sslpipe.study.spec import Study

# summarize and FAILED (sslpipe.study.entries) are re-exported: they were this module's
__all__ = ["FAILED", "Summary", "sensitivity", "summarize", "write_study_report"]


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
    numbers = {c.id: _numbers(records.get(c.id)) for c in grid.evals}
    rows = _subset_section(study, grid, numbers, out_dir, md, paths)
    paths["study_subsets_csv"] = write_csv(os.path.join(out_dir, "study_subsets.csv"),
                                      ["eval", "dataset", "labels", "method", "pretrain",
                                       "layer", "top1", "top1_std", "top5", "n"], rows)
    rows = _sensitivity_section(study, grid, numbers, md)
    paths["study_sensitivity_csv"] = write_csv(os.path.join(out_dir, "study_sensitivity.csv"),
                                          ["eval", "labels", "method", "metric", "std",
                                           "seed_std", "mean", "datasets"], rows)
    if len(study.archs) > 1:
        rows = layers_section(study, grid, numbers, out_dir, md, paths)
        paths["study_layers_csv"] = write_csv(os.path.join(out_dir, "study_layers.csv"),
                                         ["task", "eval", "dataset", "labels", "pretrain",
                                          "arch", "layer", "top1", "top1_std", "n"], rows)
    rows = _cells_section(grid, records, md)
    paths["study_cells_csv"] = write_csv(os.path.join(out_dir, "study_cells.csv"),
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


def _numbers(record: dict[str, Any] | None) -> dict[str, Any] | str | None:
    """The results (``{layer: numbers}``) of a finished evaluation cell, ``"failed"`` or None."""
    if record is None or record.get("status") == "running":
        return None
    if record.get("status") != "ok":
        return FAILED
    with open(os.path.join(record["folder"], record["result"]["path"]), encoding="utf-8") as f:
        return dict(json.load(f)["results"])


def _subset_section(study: Study, grid: Grid, numbers: dict[str, Any], out_dir: str,
                    md: list[str], paths: dict[str, str]) -> list[list[Any]]:
    sizes = [p.name for p in study.pretrain]
    csv_rows: list[list[Any]] = []
    md += ["## Pretraining-set size", "",
           f"`top-1 / top-5` in % ({_layer_words(study.layer)}) per pretraining set, "
           "`mean ± sample std (runs)` where a cell ran several seeds; `failed` marks a "
           "failed cell, `-` one that has not run.", ""]
    for ev in study.evaluations:
        for ds in study.downstream:
            for budget in study.label_budgets or (None,):
                table, chart, errors = [], {}, {}
                for label in eval_methods(grid):
                    row, ys, es = [label], [], []
                    if not any(entry_cells(grid, label, ev.name, ds.name, size, budget)
                               for size in sizes):
                        continue
                    for size in sizes:
                        value = entry_summary(grid, numbers, study.layer, label, ev.name,
                                              ds.name, size, budget)
                        row.append(summary_text(value))
                        ys.append(value[1].mean if isinstance(value, tuple) else None)
                        es.append(value[1].std if isinstance(value, tuple) else None)
                        if isinstance(value, tuple):
                            name, top1, top5 = value
                            csv_rows.append([ev.name, ds.name, budget or "all", label, size,
                                             name, num_text(top1.mean), num_text(top1.std),
                                             num_text(top5.mean if top5 else None), top1.n])
                    table.append(row)
                    chart[label], errors[label] = ys, es
                md += [f"### {ev.name} on {ds.name}{budget_title(budget)}", ""]
                md += markdown_table(["method", *sizes], table)
                name = (f"study_subsets_{safe_name(ev.name)}_{safe_name(ds.name)}"
                        f"{budget_file(budget)}")
                paths[f"png:{name}"] = bar_chart(
                    os.path.join(out_dir, name + ".png"), sizes, chart,
                    f"{ev.name} on {ds.name}{budget_title(budget)}: top-1 per pretraining set",
                    errors)
                md += ["", f"![{name}]({name}.png)", ""]
    return csv_rows


def _sensitivity_section(study: Study, grid: Grid, numbers: dict[str, Any],
                         md: list[str]) -> list[list[Any]]:
    metric_index = 1 if study.metric == "top1" else 2
    md += ["## Sensitivity to pretraining-set size", "",
           f"Population standard deviation of the mean downstream {study.metric} (in points) "
           "across pretraining sets, averaged over downstream datasets; `seed std` is the "
           "spread of the runs within one set (mean sample std over the sets), the noise a "
           f"sensitivity must exceed to mean anything; `mean` is the average {study.metric}. "
           "Lower: the task needs less pretraining data to do what it does.", ""]
    table, csv_rows = [], []
    for ev in study.evaluations:
        for budget in study.label_budgets or (None,):
            for label in eval_methods(grid):
                by_ds: dict[str, list[float]] = {}
                seed_stds: list[float] = []
                for ds in study.downstream:
                    cells = [entry_cells(grid, label, ev.name, ds.name, p.name, budget)
                             for p in study.pretrain]
                    if any(c.train is None for group in cells for c in group):
                        by_ds = {}
                        break  # a baseline: no pretraining data, nothing to be sensitive to
                    found = [entry_summary(grid, numbers, study.layer, label, ev.name, ds.name,
                                           p.name, budget) for p in study.pretrain]
                    spreads = [v[1] if metric_index == 1 else v[2] for v in found
                               if isinstance(v, tuple)]
                    by_ds[ds.name] = [x.mean for x in spreads if x is not None]
                    seed_stds += [x.std for x in spreads if x is not None and x.std is not None]
                if not any(entry_cells(grid, label, ev.name, ds.name, p.name, budget)
                           for ds in study.downstream for p in study.pretrain):
                    continue
                std, used = sensitivity(by_ds)
                values = [x for v in by_ds.values() for x in v]
                mean = round(sum(values) / len(values), 2) if values else None
                seed_std = round(statistics.fmean(seed_stds), 2) if seed_stds else None
                table.append([ev.name, budget or "all", label, dash(std), dash(seed_std),
                              dash(mean), str(used)])
                if std is not None:
                    csv_rows.append([ev.name, budget or "all", label, study.metric, std,
                                     seed_std, mean, used])
    md += markdown_table(["eval", "labels", "method", "std", "seed std", "mean", "datasets"],
                    table) + [""]
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
        md += markdown_table(["cell", "error"], failed) + [""]
    return rows


def _layer_words(layer: str) -> str:
    return "best layer of each cell" if layer == "best" else f"layer {layer}"


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split()).replace("|", "\\|")
    return line if len(line) <= limit else line[:limit - 3] + "..."
