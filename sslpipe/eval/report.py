"""``sslpipe report``: result records to Markdown and CSV tables and bar-chart PNGs.

Three tables, each the numbers of the JSON records as they are (percent, 2 decimals). The
Markdown shows them wide (a row per method); the CSV files are long (a row per number):

* method x layer, per (protocol, dataset): top-1 / top-5 of every layer
  (``layers.csv``, ``layers_{protocol}_{dataset}.png``);
* method x dataset, per protocol: the best layer's top-1 (``datasets.csv``,
  ``datasets_{protocol}.png``);
* method x pretraining-subset size, per (protocol, dataset): the best layer's top-1, for runs
  whose pretraining data is known (``subsets.csv``);
* method x label budget, per (protocol, dataset), for few-label runs (``--labels-per-class``,
  ``--label-fraction``): the best layer's top-1 as ``mean ± std (K)``, with the ``scratch``
  baseline (trained end to end on those labels) as a row of every protocol's table, a bar chart
  with error bars (``budgets_{protocol}_{dataset}.png``, ``budgets.csv``), and in words, for
  every method and budget, whether it is clearly better or worse than each baseline
  (``random``, ``scratch``) by the rule of :mod:`sslpipe.eval.intervals`: clear only when the
  ``mean ± std`` intervals do not overlap.

``report.md`` holds all of them. A dataset is named with the input size its results were
measured at and its label budget (``fashion-mnist (32 px, 1% labels)``): results at different
sizes or budgets never share a per-layer table. A result of ``--seeds K`` shows
``mean ± sample std (K)``; results that differ only in their pretraining seed (a study's
``pretrain_seeds``) are pooled, ``K`` counting every run. Charts are ``FIGSIZE`` inches at
``DPI`` (800 x 450 px).

This module holds the tables and what they say; how a record is named, pooled and grouped is
:mod:`sslpipe.eval.records`, and the Markdown, CSV and PNG writers are
:mod:`sslpipe.eval.formats`.
"""

from __future__ import annotations

import os
from typing import Any

from sslpipe.atomic import atomic_write_text
from sslpipe.eval.formats import (
    DPI,
    FIGSIZE,
    bar_chart,
    markdown_table,
    num_text,
    safe_name,
    unique_name,
    write_csv,
)
from sslpipe.eval.intervals import Interval, comparison_words
from sslpipe.eval.records import (
    best_interval,
    best_text,
    best_top1,
    budget_of,
    budget_or_all,
    group_by,
    is_scratch,
    largest_per_method,
    layer_cell,
    layer_interval,
    method_label,
    ordered_budgets,
    ordered_layers,
    pool_seeds,
    sized_dataset,
    subset_size,
)

# FIGSIZE and DPI (sslpipe.eval.formats) and layer_interval (sslpipe.eval.records) are
# re-exported: they were this module's
__all__ = ["DPI", "FIGSIZE", "layer_interval", "write_report", "write_tables"]

LAYER_COLUMNS = ["protocol", "dataset", "method", "layer", "top1", "top5"]
DATASET_COLUMNS = ["protocol", "method", "dataset", "best_layer", "top1"]
MAX_SERIES = 8  # bars per group in one chart before it stops being readable
SUBSET_COLUMNS = ["protocol", "dataset", "method", "pretrain_images", "best_layer", "top1"]
BUDGET_COLUMNS = ["protocol", "dataset", "method", "labels", "best_layer", "top1", "top1_std",
                  "n"]
BASELINE_METHODS = ("random", "scratch")


def write_report(results_by_method: dict[str, dict[str, dict[str, float]]],
                 out_dir: str | os.PathLike[str], protocol: str = "linear",
                 dataset: str = "data") -> dict[str, str]:
    """Tables and a bar chart for a few methods evaluated on one dataset.

    Args:
        results_by_method: ``{method: {layer: {"top1": %, "top5": %}}}`` as
            :func:`~sslpipe.eval.linear_probe` returns per method.
        out_dir: output directory (created).
        protocol, dataset: labels of the tables.

    Returns:
        ``{"markdown", "layers_csv", "layers_png", ...}``: paths of the files written.
    """
    records = [{"protocol": protocol, "dataset": dataset, "method": method, "results": results,
                "checkpoint": {}} for method, results in results_by_method.items()]
    return write_tables(records, out_dir)


def write_tables(records: list[dict[str, Any]], out_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Write ``report.md``, the CSV tables and the PNG charts of result ``records``.

    Returns the paths written, keyed ``markdown``, ``layers_csv``, ``datasets_csv``,
    ``subsets_csv`` (when any run has a known pretraining size) and one ``png:{name}`` per chart.
    """
    if not records:
        raise ValueError("records: expected at least one result. Got none")
    # the input size belongs to what was evaluated: results at 32 px and at 64 px are
    # different tables, and each says its size
    budgeted = any(budget_of(r) is not None for r in records)
    records = pool_seeds([{**r, "dataset_base": sized_dataset(r, budget=False),
                           "dataset": sized_dataset(r)} for r in records])
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    paths: dict[str, str] = {}
    md = ["# sslpipe evaluation report", "",
          "Accuracies in %, as in the result JSON files. `top-1 / top-5` per layer; the dataset "
          "and subset tables give the best layer's top-1 (layer in parentheses). A result of "
          "several runs (seeds) reads `mean ± sample std` with the number of runs in "
          "parentheses.", ""]
    rows = _layer_section(records, out, md, paths)
    paths["layers_csv"] = write_csv(os.path.join(out, "layers.csv"), LAYER_COLUMNS, rows)
    rows = _dataset_section(records, out, md, paths)
    paths["datasets_csv"] = write_csv(os.path.join(out, "datasets.csv"), DATASET_COLUMNS, rows)
    sized = [r for r in records if subset_size(r) is not None]
    if sized:
        rows = _subset_section(sized, md)
        paths["subsets_csv"] = write_csv(os.path.join(out, "subsets.csv"), SUBSET_COLUMNS, rows)
    if budgeted:
        rows = _budget_section(records, out, md, paths)
        paths["budgets_csv"] = write_csv(os.path.join(out, "budgets.csv"), BUDGET_COLUMNS, rows)
    paths["markdown"] = os.path.join(out, "report.md")
    atomic_write_text(paths["markdown"], "\n".join(md))
    return paths


def _layer_section(records: list[dict[str, Any]], out: str, md: list[str],
                   paths: dict[str, str]) -> list[list[Any]]:
    csv_rows: list[list[Any]] = []
    for (protocol, dataset), group in group_by(records, ("protocol", "dataset")).items():
        layers = ordered_layers(group)
        md += [f"## {protocol} on {dataset}: method x layer", ""]
        table = [[method_label(r, group)]
                 + [layer_cell(r["results"].get(layer)) for layer in layers] for r in group]
        md += markdown_table(["method"] + layers, table) + [""]
        for r in group:
            for layer in layers:
                if layer in r["results"]:
                    n = r["results"][layer]
                    csv_rows.append([protocol, dataset, method_label(r, group), layer,
                                     num_text(n["top1"]), num_text(n.get("top5"))])
        name = unique_name(f"layers_{safe_name(protocol)}_{safe_name(dataset)}", paths)
        charted, title = group, f"{protocol} top-1 on {dataset}"
        if len(group) > MAX_SERIES:
            # a bar per (method, subset) is unreadable: chart each method's largest run
            charted = largest_per_method(group)
            title += " (largest pretraining set of each method)"
        paths[f"png:{name}"] = bar_chart(
            os.path.join(out, name + ".png"), layers,
            {method_label(r, group): [r["results"].get(layer, {}).get("top1") for layer in layers]
             for r in charted}, title)
        md += [f"![{name}]({name}.png)", ""]
    return csv_rows


def _dataset_section(records: list[dict[str, Any]], out: str, md: list[str],
                     paths: dict[str, str]) -> list[list[Any]]:
    csv_rows: list[list[Any]] = []
    for (protocol,), group in group_by(records, ("protocol",)).items():
        datasets = sorted({str(r["dataset"]) for r in group})
        md += [f"## {protocol}: method x dataset (best layer top-1)", ""]
        table, values = [], {}
        for (method,), runs in group_by(group, ("method",)).items():
            best = [best_top1([r for r in runs if r["dataset"] == d]) for d in datasets]
            table.append([method] + [best_text([r for r in runs if r["dataset"] == d])
                                     for d in datasets])
            csv_rows += [[protocol, method, d, layer, num_text(v)]
                         for d, (v, layer) in zip(datasets, best) if v is not None]
            values[method] = [v for v, _ in best]
        md += markdown_table(["method"] + datasets, table) + [""]
        name = unique_name(f"datasets_{safe_name(protocol)}", paths)
        paths[f"png:{name}"] = bar_chart(os.path.join(out, name + ".png"), datasets, values,
                                         f"{protocol}: best-layer top-1")
        md += [f"![{name}]({name}.png)", ""]
    return csv_rows


def _subset_section(records: list[dict[str, Any]], md: list[str]) -> list[list[Any]]:
    csv_rows: list[list[Any]] = []
    for (protocol, dataset), group in group_by(records, ("protocol", "dataset")).items():
        sizes = sorted({subset_size(r) or 0 for r in group})
        md += [f"## {protocol} on {dataset}: method x pretraining images (best top-1)", ""]
        table = []
        for (method,), runs in group_by(group, ("method",)).items():
            best = [best_top1([r for r in runs if subset_size(r) == s]) for s in sizes]
            table.append([method] + [best_text([r for r in runs if subset_size(r) == s])
                                     for s in sizes])
            csv_rows += [[protocol, dataset, method, size, layer, num_text(v)]
                         for size, (v, layer) in zip(sizes, best) if v is not None]
        md += markdown_table(["method"] + [str(s) for s in sizes], table) + [""]
    return csv_rows


def _budget_section(records: list[dict[str, Any]], out: str, md: list[str],
                    paths: dict[str, str]) -> list[list[Any]]:
    csv_rows: list[list[Any]] = []
    scratch = [r for r in records if is_scratch(r)]
    for (protocol, dataset), group in group_by([r for r in records if not is_scratch(r)],
                                               ("protocol", "dataset_base")).items():
        rows = group + [r for r in scratch if r["dataset_base"] == dataset]
        budgets = ordered_budgets(rows)
        md += [f"## {protocol} on {dataset}: method x label budget (best layer top-1)", "",
               "`mean ± sample std (runs)` in %, best layer in parentheses; `scratch` is the "
               "architecture from random init trained end to end on the same labels (the "
               "fine-tune protocol), `random` frozen random features with the probe.", ""]
        table, means, stds = [], {}, {}
        best_of: dict[tuple[str, str], Interval | None] = {}
        for (method,), runs in group_by(rows, ("method",)).items():
            cells, ys, es = [method], [], []
            for budget in budgets:
                found, layer = best_interval([r for r in runs if budget_or_all(r) == budget])
                best_of[(method, budget)] = found
                cells.append("-" if found is None else f"{found.text()} ({layer})")
                ys.append(None if found is None else found.mean)
                es.append(None if found is None else found.std)
                if found is not None:
                    csv_rows.append([protocol, dataset, method, budget, layer,
                                     num_text(found.mean), num_text(found.std), found.n])
            table.append(cells)
            means[method], stds[method] = ys, es
        md += markdown_table(["method", *budgets], table) + [""]
        name = unique_name(f"budgets_{safe_name(protocol)}_{safe_name(dataset)}", paths)
        paths[f"png:{name}"] = bar_chart(os.path.join(out, name + ".png"), budgets, means,
                                         f"{protocol} on {dataset}: top-1 per label budget "
                                         "(error bars: ± 1 std)", stds)
        md += [f"![{name}]({name}.png)", ""]
        md += _verdicts(best_of, budgets) + [""]
    return csv_rows


def _verdicts(best_of: dict[tuple[str, str], Interval | None], budgets: list[str]) -> list[str]:
    """Each method against each baseline, per budget, in words (the rule: no overlap)."""
    methods = list(dict.fromkeys(m for m, _ in best_of))
    baselines = [b for b in methods if b.split("@")[0] in BASELINE_METHODS]
    lines = ["A difference is called clear only when the two `mean ± std` intervals do not "
             "overlap; with one run per side there is no interval and nothing is called clear.",
             ""]
    for budget in budgets:
        for method in methods:
            if method in baselines or best_of.get((method, budget)) is None:
                continue
            for base in baselines:
                a, b = best_of.get((method, budget)), best_of.get((base, budget))
                if a is not None and b is not None:
                    lines.append(f"- {budget} labels, " + comparison_words(method, a, base, b))
    return lines if len(lines) > 2 else []
