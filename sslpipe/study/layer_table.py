"""A study's per-layer table: rows the architectures, columns the layers.

For studies of several architectures (RotNet's 3, 4 and 5 conv blocks): per task,
evaluation, downstream dataset, label budget and pretraining set, each architecture's
``mean ± sample std (runs)`` top-1 (in %) of every probed layer (``stage1`` = block 1 ...), the
shape of the RotNet paper's per-block table, as Markdown, CSV rows (``study_layers.csv``) and a
table figure shaded by top-1 (``study_layers_{task}_{eval}_{data}_...png``).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from sslpipe.atomic import atomic_write
from sslpipe.eval.formats import DPI, markdown_table, num_text, safe_name
from sslpipe.eval.intervals import Interval, interval, run_values
from sslpipe.study.entries import budget_file, budget_title, entry_cells

if TYPE_CHECKING:
    from sslpipe.study.grid import Grid
    from sslpipe.study.spec import Study

RANDOM_NAME = "none"
BASELINE_NAMES = ("random", "scratch")


def layers_section(study: Study, grid: Grid, numbers: dict[str, Any], out_dir: str,
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
                            cells = [c for c in entry_cells(grid, _label(study, task, arch),
                                                            ev.name, ds.name, pre, budget, arch)
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
                        title = (f"{task}, {ev.name} on {ds.name}{budget_title(budget)}"
                                 + ("" if pre == RANDOM_NAME else f", pretrained on {pre}"))
                        md += [f"### {title}", ""]
                        md += markdown_table(["arch", *columns], [
                            [arch] + [row[c].text() if c in row else "-" for c in columns]
                            for arch, row in grid_rows.items()])
                        for arch, row in grid_rows.items():
                            csv_rows += [[task, ev.name, ds.name, budget or "all", pre, arch,
                                          c, num_text(row[c].mean), num_text(row[c].std),
                                          row[c].n]
                                         for c in columns if c in row]
                        name = (f"study_layers_{safe_name(task)}_{safe_name(ev.name)}_"
                                f"{safe_name(ds.name)}{budget_file(budget)}_{safe_name(pre)}")
                        paths[f"png:{name}"] = _table_figure(
                            os.path.join(out_dir, name + ".png"), grid_rows, columns, title)
                        md += ["", f"![{name}]({name}.png)", ""]
    return csv_rows


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
