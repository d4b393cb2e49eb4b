"""The entries of a study's tables: which cells make one, and their results pooled.

An entry is one method (``label``: the task, or ``task@arch`` in a study of several
architectures) under one evaluation, downstream dataset, pretraining set and label budget
(:func:`entry_cells`: one cell per pretraining seed; the random and scratch baselines match
any pretraining set, and the scratch baseline every evaluation). Its results pool the cells'
probe seeds and pretraining seeds into ``(layer, top-1, top-5)`` intervals
(:func:`summarize`, :mod:`sslpipe.eval.intervals`), or read ``"failed"`` (``FAILED``) when a
cell failed and None while one has not run. Accuracies are percentages in [0, 100].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sslpipe.eval.intervals import Interval, interval, run_values

if TYPE_CHECKING:
    from sslpipe.study.grid import EvalCell, Grid

FAILED = "failed"

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


def eval_methods(grid: Grid) -> list[str]:
    """The method labels of the grid's evaluation cells, in grid order (a table's rows)."""
    return list(dict.fromkeys(c.label for c in grid.evals))


def entry_cells(grid: Grid, label: str, ev: str, ds: str, pre: str, budget: str | None,
                arch: str | None = None) -> list[EvalCell]:
    """The cells (one per pretraining seed) of one table entry. The scratch baseline has one
    evaluation of its own and sits in every evaluation's table; baselines match any set."""
    return [c for c in grid.evals
            if c.label == label and c.downstream.name == ds and c.budget == budget
            and (c.evaluation.name == ev or c.method == "scratch")
            and (c.pretrain == pre or c.train is None) and (arch is None or c.arch == arch)]


def entry_summary(grid: Grid, numbers: dict[str, Any], layer: str, *where: Any
                  ) -> Summary | str | None:
    """:func:`summarize` of the cells of one entry (``where``: :func:`entry_cells`' arguments
    after ``grid``), given ``numbers`` (cell id -> results, ``FAILED`` or None): ``FAILED``
    when a cell failed, None while one has not run."""
    cells = entry_cells(grid, *where)
    values = [numbers.get(c.id) for c in cells]
    if any(v == FAILED for v in values):
        return FAILED
    done = [v for v in values if isinstance(v, dict)]
    if not done or len(done) < len(values):
        return None
    return summarize(done, layer)


def summary_text(value: Summary | str | None) -> str:
    """An entry as a table cell: ``top-1 [± std] / top-5 [(runs)]``, ``failed``, or ``-``."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    top1, top5 = value[1], value[2]
    text = f"{top1.mean:.2f}" + (f" ± {top1.std:.2f}" if top1.std is not None else "")
    text += "" if top5 is None else f" / {top5.mean:.2f}"
    return text + (f" ({top1.n})" if top1.n > 1 else "")


def budget_title(budget: str | None) -> str:
    """``", 1% labels"`` for a title; ``""`` for every label."""
    return "" if budget is None else f", {budget} labels"


def budget_file(budget: str | None) -> str:
    """``"_1pct"`` for a file name (:attr:`~sslpipe.eval.labels.LabelBudget.tag`); ``""`` for
    every label."""
    if budget is None:
        return ""
    from sslpipe.eval.labels import parse_budget

    return "_" + parse_budget(budget).tag


def dash(value: float | None) -> str:
    """A number with 2 decimals, ``-`` for None."""
    return "-" if value is None else f"{value:.2f}"
