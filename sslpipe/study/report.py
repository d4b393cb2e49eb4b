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
  table (``study_layers.csv``, a table figure ``study_layers_{task}_{eval}_{data}_...png``);
* **cells**: every cell's status; failed ones with their error (``study_cells.csv``).

The random-init and scratch baselines do not depend on pretraining data: their rows repeat
one number. The generic tables before these sections (``sslpipe report``'s) carry the label
budget tables and the verdicts in words (clear only when the ``mean ± std`` intervals do not
overlap).
"""

from __future__ import annotations

import json
import os
import re
import statistics
from typing import TYPE_CHECKING, Any

from sslpipe.atomic import atomic_write, atomic_write_text
from sslpipe.eval.intervals import Interval, interval, run_values
from sslpipe.eval.report import DPI, _bars, _csv, _markdown, _safe
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
    numbers = {c.id: _numbers(records.get(c.id)) for c in grid.evals}
    rows = _subset_section(study, grid, numbers, out_dir, md, paths)
    paths["study_subsets_csv"] = _csv(os.path.join(out_dir, "study_subsets.csv"),
                                      ["eval", "dataset", "labels", "method", "pretrain",
                                       "layer", "top1", "top1_std", "top5", "n"], rows)
    rows = _sensitivity_section(study, grid, numbers, md)
    paths["study_sensitivity_csv"] = _csv(os.path.join(out_dir, "study_sensitivity.csv"),
                                          ["eval", "labels", "method", "metric", "std",
                                           "seed_std", "mean", "datasets"], rows)
    if len(study.archs) > 1:
        rows = _layers_section(study, grid, numbers, out_dir, md, paths)
        paths["study_layers_csv"] = _csv(os.path.join(out_dir, "study_layers.csv"),
                                         ["task", "eval", "dataset", "labels", "pretrain",
                                          "arch", "layer", "top1", "top1_std", "n"], rows)
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


def _numbers(record: dict[str, Any] | None) -> dict[str, Any] | str | None:
    """The results (``{layer: numbers}``) of a finished evaluation cell, ``"failed"`` or None."""
    if record is None or record.get("status") == "running":
        return None
    if record.get("status") != "ok":
        return FAILED
    with open(os.path.join(record["folder"], record["result"]["path"]), encoding="utf-8") as f:
        return dict(json.load(f)["results"])


Summary = tuple[str, Interval, Interval | None]


def summarize(results: list[dict[str, Any]], layer: str) -> Summary | None:
    """``(layer, top-1, top-5)`` intervals of cells' results pooled (a cell's probe seeds and
    the cells of several pretraining seeds), at ``layer`` or the best layer by mean top-1."""
    layers = [name for name in results[0] if all(name in r for r in results)] if results else []
    if layer != "best":
        layers = [layer] if layer in layers else []
    best: Summary | None = None
    for name in layers:
        top1 = interval(v for r in results for v in run_values(r[name], "top1"))
        top5s = [v for r in results for v in run_values(r[name], "top5")]
        if best is None or top1.mean > best[1].mean:
            best = (name, top1, interval(top5s) if top5s else None)
    return best


def _methods(grid: Grid) -> list[str]:
    return list(dict.fromkeys(c.label for c in grid.evals))


def _cells(grid: Grid, label: str, ev: str, ds: str, pre: str, budget: str | None,
           arch: str | None = None) -> list[EvalCell]:
    """The cells (one per pretraining seed) of one table entry. The scratch baseline has one
    evaluation of its own and sits in every evaluation's table; baselines match any set."""
    return [c for c in grid.evals
            if c.label == label and c.downstream.name == ds and c.budget == budget
            and (c.evaluation.name == ev or c.method == "scratch")
            and (c.pretrain == pre or c.train is None) and (arch is None or c.arch == arch)]


def _entry(grid: Grid, numbers: dict[str, Any], layer: str, *where: Any
           ) -> Summary | str | None:
    cells = _cells(grid, *where)
    values = [numbers.get(c.id) for c in cells]
    if any(v == FAILED for v in values):
        return FAILED
    done = [v for v in values if isinstance(v, dict)]
    if not done or len(done) < len(values):
        return None
    return summarize(done, layer)


def _budget_title(budget: str | None) -> str:
    return "" if budget is None else f", {budget} labels"


def _budget_file(budget: str | None) -> str:
    if budget is None:
        return ""
    from sslpipe.eval.labels import parse_budget

    return "_" + parse_budget(budget).tag


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
                for label in _methods(grid):
                    row, ys, es = [label], [], []
                    if not any(_cells(grid, label, ev.name, ds.name, size, budget)
                               for size in sizes):
                        continue
                    for size in sizes:
                        value = _entry(grid, numbers, study.layer, label, ev.name, ds.name,
                                       size, budget)
                        row.append(_cell_text(value))
                        ys.append(value[1].mean if isinstance(value, tuple) else None)
                        es.append(value[1].std if isinstance(value, tuple) else None)
                        if isinstance(value, tuple):
                            name, top1, top5 = value
                            csv_rows.append([ev.name, ds.name, budget or "all", label, size,
                                             name, _num(top1.mean), _num(top1.std),
                                             _num(top5.mean if top5 else None), top1.n])
                    table.append(row)
                    chart[label], errors[label] = ys, es
                md += [f"### {ev.name} on {ds.name}{_budget_title(budget)}", ""]
                md += _markdown(["method", *sizes], table)
                name = f"study_subsets_{_safe(ev.name)}_{_safe(ds.name)}{_budget_file(budget)}"
                paths[f"png:{name}"] = _bars(
                    os.path.join(out_dir, name + ".png"), sizes, chart,
                    f"{ev.name} on {ds.name}{_budget_title(budget)}: top-1 per pretraining set",
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
            for label in _methods(grid):
                by_ds: dict[str, list[float]] = {}
                seed_stds: list[float] = []
                for ds in study.downstream:
                    cells = [_cells(grid, label, ev.name, ds.name, p.name, budget)
                             for p in study.pretrain]
                    if any(c.train is None for group in cells for c in group):
                        by_ds = {}
                        break  # a baseline: no pretraining data, nothing to be sensitive to
                    found = [_entry(grid, numbers, study.layer, label, ev.name, ds.name, p.name,
                                    budget) for p in study.pretrain]
                    spreads = [v[1] if metric_index == 1 else v[2] for v in found
                               if isinstance(v, tuple)]
                    by_ds[ds.name] = [x.mean for x in spreads if x is not None]
                    seed_stds += [x.std for x in spreads if x is not None and x.std is not None]
                if not any(_cells(grid, label, ev.name, ds.name, p.name, budget)
                           for ds in study.downstream for p in study.pretrain):
                    continue
                std, used = sensitivity(by_ds)
                values = [x for v in by_ds.values() for x in v]
                mean = round(sum(values) / len(values), 2) if values else None
                seed_std = round(statistics.fmean(seed_stds), 2) if seed_stds else None
                table.append([ev.name, budget or "all", label, _dash(std), _dash(seed_std),
                              _dash(mean), str(used)])
                if std is not None:
                    csv_rows.append([ev.name, budget or "all", label, study.metric, std,
                                     seed_std, mean, used])
    md += _markdown(["eval", "labels", "method", "std", "seed std", "mean", "datasets"],
                    table) + [""]
    return csv_rows


def _layers_section(study: Study, grid: Grid, numbers: dict[str, Any], out_dir: str,
                    md: list[str], paths: dict[str, str]) -> list[list[Any]]:
    """Rows the architectures, columns the layers: RotNet's per-block table."""
    csv_rows: list[list[Any]] = []
    md += ["## Per layer and architecture", "",
           "Top-1 in % of each layer's probe (`stageN` = the N-th block), `mean ± sample std "
           "(runs)`; a row per architecture, as the RotNet paper's table of 3, 4 and 5 conv "
           "blocks.", ""]
    tasks = list(dict.fromkeys(c.method for c in grid.evals))
    for task in tasks:
        for ev in study.evaluations:
            for ds in study.downstream:
                for budget in study.label_budgets or (None,):
                    for pre in ([RANDOM_NAME] if task in BASELINE_NAMES
                                else [p.name for p in study.pretrain]):
                        grid_rows: dict[str, dict[str, Interval]] = {}
                        for arch in study.archs:
                            cells = [c for c in _cells(grid, _label(study, task, arch), ev.name,
                                                       ds.name, pre, budget, arch)
                                     if c.method == task and c.evaluation.name == ev.name]
                            done = [numbers.get(c.id) for c in cells]
                            results = [d for d in done if isinstance(d, dict)]
                            if not results or len(results) < len(done):
                                continue
                            layers = [n for n in results[0] if all(n in r for r in results)]
                            grid_rows[arch] = {n: interval(v for r in results
                                                           for v in run_values(r[n]))
                                               for n in layers}
                        if not grid_rows:
                            continue
                        columns = _stage_columns(grid_rows)
                        title = (f"{task}, {ev.name} on {ds.name}{_budget_title(budget)}"
                                 + ("" if pre == RANDOM_NAME else f", pretrained on {pre}"))
                        md += [f"### {title}", ""]
                        md += _markdown(["arch", *columns], [
                            [arch] + [row[c].text() if c in row else "-" for c in columns]
                            for arch, row in grid_rows.items()])
                        for arch, row in grid_rows.items():
                            csv_rows += [[task, ev.name, ds.name, budget or "all", pre, arch,
                                          c, _num(row[c].mean), _num(row[c].std), row[c].n]
                                         for c in columns if c in row]
                        name = (f"study_layers_{_safe(task)}_{_safe(ev.name)}_{_safe(ds.name)}"
                                f"{_budget_file(budget)}_{_safe(pre)}")
                        paths[f"png:{name}"] = _table_figure(
                            os.path.join(out_dir, name + ".png"), grid_rows, columns, title)
                        md += ["", f"![{name}]({name}.png)", ""]
    return csv_rows


RANDOM_NAME = "none"
BASELINE_NAMES = ("random", "scratch")


def _label(study: Study, method: str, arch: str) -> str:
    return method if len(study.archs) == 1 else f"{method}@{arch}"


def _stage_columns(rows: dict[str, dict[str, Interval]]) -> list[str]:
    names = {n for row in rows.values() for n in row}

    def key(name: str) -> tuple[int, int, str]:
        match = re.fullmatch(r"stage(\d+)", name)
        return (0, int(match.group(1)), name) if match else (1, 0, name)

    return sorted(names, key=key)


def _table_figure(path: str, rows: dict[str, dict[str, Interval]], columns: list[str],
                  title: str) -> str:
    """The per-layer table as a figure: a cell per (architecture, layer), shaded by top-1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.full((len(rows), len(columns)), np.nan)
    for i, row in enumerate(rows.values()):
        for j, column in enumerate(columns):
            if column in row:
                values[i, j] = row[column].mean
    fig, ax = plt.subplots(figsize=(1.4 * len(columns) + 2.0, 0.6 * len(rows) + 1.6), dpi=DPI)
    ax.imshow(np.ma.masked_invalid(values), cmap="Greens", vmin=np.nanmin(values) - 5,
              vmax=np.nanmax(values), aspect="auto")
    for i, row in enumerate(rows.values()):
        for j, column in enumerate(columns):
            text = "-" if column not in row else (
                f"{row[column].mean:.1f}" + (f"\n± {row[column].std:.1f}"
                                             if row[column].std is not None else ""))
            ax.text(j, i, text, ha="center", va="center", fontsize="small")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_title(title, fontsize="small")
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    finally:
        plt.close(fig)
    return path


def _dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


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


def _cell_text(value: Summary | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    top1, top5 = value[1], value[2]
    text = f"{top1.mean:.2f}" + (f" ± {top1.std:.2f}" if top1.std is not None else "")
    text += "" if top5 is None else f" / {top5.mean:.2f}"
    return text + (f" ({top1.n})" if top1.n > 1 else "")


def _layer_words(layer: str) -> str:
    return "best layer of each cell" if layer == "best" else f"layer {layer}"


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split()).replace("|", "\\|")
    return line if len(line) <= limit else line[:limit - 3] + "..."
