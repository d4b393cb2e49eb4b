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
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import defaultdict
from typing import Any

from sslpipe.atomic import atomic_write, atomic_write_text
from sslpipe.eval.intervals import Interval, comparison_words, interval, run_values

FIGSIZE = (8.0, 4.5)
DPI = 100
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
    budgeted = any(_budget(r) is not None for r in records)
    records = _pool_seeds([{**r, "dataset_base": _sized(r, budget=False),
                            "dataset": _sized(r)} for r in records])
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    paths: dict[str, str] = {}
    md = ["# sslpipe evaluation report", "",
          "Accuracies in %, as in the result JSON files. `top-1 / top-5` per layer; the dataset "
          "and subset tables give the best layer's top-1 (layer in parentheses). A result of "
          "several runs (seeds) reads `mean ± sample std` with the number of runs in "
          "parentheses.", ""]
    rows = _layer_section(records, out, md, paths)
    paths["layers_csv"] = _csv(os.path.join(out, "layers.csv"), LAYER_COLUMNS, rows)
    rows = _dataset_section(records, out, md, paths)
    paths["datasets_csv"] = _csv(os.path.join(out, "datasets.csv"), DATASET_COLUMNS, rows)
    sized = [r for r in records if _subset_size(r) is not None]
    if sized:
        rows = _subset_section(sized, md)
        paths["subsets_csv"] = _csv(os.path.join(out, "subsets.csv"), SUBSET_COLUMNS, rows)
    if budgeted:
        rows = _budget_section(records, out, md, paths)
        paths["budgets_csv"] = _csv(os.path.join(out, "budgets.csv"), BUDGET_COLUMNS, rows)
    paths["markdown"] = os.path.join(out, "report.md")
    atomic_write_text(paths["markdown"], "\n".join(md))
    return paths


def _layer_section(records: list[dict[str, Any]], out: str, md: list[str],
                   paths: dict[str, str]) -> list[list[Any]]:
    csv_rows: list[list[Any]] = []
    for (protocol, dataset), group in _group(records, ("protocol", "dataset")).items():
        layers = _ordered_layers(group)
        md += [f"## {protocol} on {dataset}: method x layer", ""]
        table = [[_label(r, group)] + [_cell(r["results"].get(layer)) for layer in layers]
                 for r in group]
        md += _markdown(["method"] + layers, table) + [""]
        for r in group:
            for layer in layers:
                if layer in r["results"]:
                    n = r["results"][layer]
                    csv_rows.append([protocol, dataset, _label(r, group), layer,
                                     _num(n["top1"]), _num(n.get("top5"))])
        name = _unique(f"layers_{_safe(protocol)}_{_safe(dataset)}", paths)
        charted, title = group, f"{protocol} top-1 on {dataset}"
        if len(group) > MAX_SERIES:
            # a bar per (method, subset) is unreadable: chart each method's largest run
            charted = _largest_per_method(group)
            title += " (largest pretraining set of each method)"
        paths[f"png:{name}"] = _bars(
            os.path.join(out, name + ".png"), layers,
            {_label(r, group): [r["results"].get(layer, {}).get("top1") for layer in layers]
             for r in charted}, title)
        md += [f"![{name}]({name}.png)", ""]
    return csv_rows


def _dataset_section(records: list[dict[str, Any]], out: str, md: list[str],
                     paths: dict[str, str]) -> list[list[Any]]:
    csv_rows: list[list[Any]] = []
    for (protocol,), group in _group(records, ("protocol",)).items():
        datasets = sorted({str(r["dataset"]) for r in group})
        md += [f"## {protocol}: method x dataset (best layer top-1)", ""]
        table, values = [], {}
        for (method,), runs in _group(group, ("method",)).items():
            best = [_best([r for r in runs if r["dataset"] == d]) for d in datasets]
            table.append([method] + [_best_text([r for r in runs if r["dataset"] == d])
                                     for d in datasets])
            csv_rows += [[protocol, method, d, layer, _num(v)]
                         for d, (v, layer) in zip(datasets, best) if v is not None]
            values[method] = [v for v, _ in best]
        md += _markdown(["method"] + datasets, table) + [""]
        name = _unique(f"datasets_{_safe(protocol)}", paths)
        paths[f"png:{name}"] = _bars(os.path.join(out, name + ".png"), datasets, values,
                                     f"{protocol}: best-layer top-1")
        md += [f"![{name}]({name}.png)", ""]
    return csv_rows


def _subset_section(records: list[dict[str, Any]], md: list[str]) -> list[list[Any]]:
    csv_rows: list[list[Any]] = []
    for (protocol, dataset), group in _group(records, ("protocol", "dataset")).items():
        sizes = sorted({_subset_size(r) or 0 for r in group})
        md += [f"## {protocol} on {dataset}: method x pretraining images (best top-1)", ""]
        table = []
        for (method,), runs in _group(group, ("method",)).items():
            best = [_best([r for r in runs if _subset_size(r) == s]) for s in sizes]
            table.append([method] + [_best_text([r for r in runs if _subset_size(r) == s])
                                     for s in sizes])
            csv_rows += [[protocol, dataset, method, size, layer, _num(v)]
                         for size, (v, layer) in zip(sizes, best) if v is not None]
        md += _markdown(["method"] + [str(s) for s in sizes], table) + [""]
    return csv_rows


def _budget_section(records: list[dict[str, Any]], out: str, md: list[str],
                    paths: dict[str, str]) -> list[list[Any]]:
    csv_rows: list[list[Any]] = []
    scratch = [r for r in records if _is_scratch(r)]
    for (protocol, dataset), group in _group([r for r in records if not _is_scratch(r)],
                                             ("protocol", "dataset_base")).items():
        rows = group + [r for r in scratch if r["dataset_base"] == dataset]
        budgets = _ordered_budgets(rows)
        md += [f"## {protocol} on {dataset}: method x label budget (best layer top-1)", "",
               "`mean ± sample std (runs)` in %, best layer in parentheses; `scratch` is the "
               "architecture from random init trained end to end on the same labels (the "
               "fine-tune protocol), `random` frozen random features with the probe.", ""]
        table, means, stds = [], {}, {}
        best_of: dict[tuple[str, str], Interval | None] = {}
        for (method,), runs in _group(rows, ("method",)).items():
            cells, ys, es = [method], [], []
            for budget in budgets:
                found, layer = _best_interval([r for r in runs if _budget_or_all(r) == budget])
                best_of[(method, budget)] = found
                cells.append("-" if found is None else f"{found.text()} ({layer})")
                ys.append(None if found is None else found.mean)
                es.append(None if found is None else found.std)
                if found is not None:
                    csv_rows.append([protocol, dataset, method, budget, layer,
                                     _num(found.mean), _num(found.std), found.n])
            table.append(cells)
            means[method], stds[method] = ys, es
        md += _markdown(["method", *budgets], table) + [""]
        name = _unique(f"budgets_{_safe(protocol)}_{_safe(dataset)}", paths)
        paths[f"png:{name}"] = _bars(os.path.join(out, name + ".png"), budgets, means,
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


def _is_scratch(record: dict[str, Any]) -> bool:
    return (record.get("checkpoint") or {}).get("method") == "scratch" or \
        str(record.get("method", "")).split("@")[0] == "scratch"


def _budget_or_all(record: dict[str, Any]) -> str:
    return _budget(record) or "100%"


def _ordered_budgets(records: list[dict[str, Any]]) -> list[str]:
    from sslpipe.eval.labels import parse_budget

    def key(name: str) -> tuple[int, float]:
        budget = parse_budget(name)
        return (0, float(budget.per_class or 0)) if budget.per_class else \
            (1, float(budget.fraction or 0))

    return sorted({_budget_or_all(r) for r in records}, key=key)


def _best_interval(runs: list[dict[str, Any]]) -> tuple[Interval | None, str]:
    """The layer with the highest mean top-1 over ``runs`` (pooled when several)."""
    best: tuple[Interval | None, str] = (None, "")
    for layer in {layer for r in runs for layer in r["results"]}:
        values = [v for r in runs if layer in r["results"]
                  for v in run_values(r["results"][layer])]
        if values:
            found = interval(values)
            if best[0] is None or found.mean > best[0].mean:
                best = (found, layer)
    return best


def _group(records: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[tuple(r.get(k) for k in keys)].append(r)
    return dict(sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))))


def _ordered_layers(records: list[dict[str, Any]]) -> list[str]:
    names = {layer for r in records for layer in r["results"]}

    def key(name: str) -> tuple[int, int, str]:
        match = re.fullmatch(r"stage(\d+)", name)
        if match:
            return (0, int(match.group(1)), name)
        return (1 if name == "pooled" else 2, 0, name)

    return sorted(names, key=key)


def _largest_per_method(group: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per method: the one pretrained on the most images (in group order)."""
    best: dict[str, dict[str, Any]] = {}
    for r in group:
        kept = best.get(r["method"])
        if kept is None or (_subset_size(r) or 0) > (_subset_size(kept) or 0):
            best[r["method"]] = r
    return [r for r in group if best.get(r["method"]) is r]


def _label(record: dict[str, Any], group: list[dict[str, Any]]) -> str:
    method = str(record["method"])
    # several runs of one method in a table (pretraining subsets) need telling apart
    if sum(1 for r in group if r["method"] == method) > 1 and _subset_size(record) is not None:
        return f"{method} ({_subset_size(record)} imgs)"
    return method


def _sized(record: dict[str, Any], budget: bool = True) -> str:
    """The record's dataset with its input size and label budget, ``"fashion-mnist (32 px, 1%
    labels)"``, as far as they are known."""
    dataset = str(record["dataset"])
    if dataset.endswith(")"):
        return dataset  # named already
    parts = []
    size = (record.get("config") or {}).get("size")
    if size:
        parts.append(f"{size} px")
    if budget and _budget(record) is not None:
        parts.append(f"{_budget(record)} labels")
    return f"{dataset} ({', '.join(parts)})" if parts else dataset


def _budget(record: dict[str, Any]) -> str | None:
    from sslpipe.eval.results import budget_name

    return budget_name(record)


def _pool_seeds(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records that differ only in their pretraining seed become one, their runs pooled."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        pre = dict((r.get("checkpoint") or {}).get("pretrain") or {})
        pre.pop("seed", None)
        key = (r.get("protocol"), r["dataset"], r.get("method"), r.get("arch"),
               repr(sorted(pre.items(), key=str)))
        groups[key].append(r)
    out = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        results: dict[str, dict[str, Any]] = {}
        for layer in group[0]["results"]:
            if not all(layer in r["results"] for r in group):
                continue
            runs = [run for r in group for run in _runs(r["results"][layer])]
            top1 = interval(run["top1"] for run in runs)
            entry: dict[str, Any] = {"top1": round(top1.mean, 2), "top1_std": _round(top1.std),
                                     "n": top1.n, "runs": runs}
            if all(run.get("top5") is not None for run in runs):
                top5 = interval(run["top5"] for run in runs)
                entry.update(top5=round(top5.mean, 2), top5_std=_round(top5.std))
            results[layer] = entry
        out.append({**group[0], "results": results, "pooled_records": len(group)})
    return out


def _runs(numbers: dict[str, Any]) -> list[dict[str, Any]]:
    runs = numbers.get("runs")
    if isinstance(runs, list) and runs:
        return [dict(r) for r in runs if isinstance(r, dict) and r.get("top1") is not None]
    return [{"top1": numbers["top1"], "top5": numbers.get("top5")}]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def layer_interval(numbers: dict[str, Any], metric: str = "top1") -> Interval | None:
    """``mean ± std (n)`` of one layer's result (its runs, or its single number)."""
    values = run_values(numbers, metric)
    return interval(values) if values else None


def _subset_size(record: dict[str, Any]) -> int | None:
    size = (record.get("checkpoint") or {}).get("pretrain", {}).get("num_images")
    return int(size) if size is not None else None


def _best(runs: list[dict[str, Any]]) -> tuple[float | None, str]:
    scored = [(n["top1"], layer) for r in runs for layer, n in r["results"].items()]
    return max(scored) if scored else (None, "")


def _cell(numbers: dict[str, Any] | None) -> str:
    if not numbers:
        return "-"
    top5 = numbers.get("top5")
    std = numbers.get("top1_std")
    text = f"{numbers['top1']:.2f}" + (f" ± {std:.2f}" if std is not None else "")
    text += f" / {top5:.2f}" if top5 is not None else ""
    return text + (f" ({numbers['n']})" if std is not None and numbers.get("n") else "")


def _best_text(runs: list[dict[str, Any]]) -> str:
    found, layer = _best_interval(runs)
    return "-" if found is None else f"{found.text()} ({layer})"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]


def _csv(path: str, header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path


def _bars(path: str, groups: list[str], values: dict[str, list[float | None]],
          title: str, errors: dict[str, list[float | None]] | None = None) -> str:
    """A grouped bar chart (a group per ``groups`` entry, a bar per series of ``values``), with
    ``errors`` (one standard deviation per bar, None for none) drawn as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    width = 0.8 / max(1, len(values))
    for i, (method, ys) in enumerate(values.items()):
        xs = [g + (i - (len(values) - 1) / 2) * width for g in range(len(groups))]
        err = (errors or {}).get(method)
        yerr = None if err is None else [e if e is not None else 0.0 for e in err]
        bars = ax.bar(xs, [y if y is not None else 0.0 for y in ys], width, label=method,
                      yerr=yerr, capsize=3 if yerr else 0, error_kw={"elinewidth": 1})
        if len(values) * len(groups) <= 24:  # numbers on the bars while they stay legible
            ax.bar_label(bars, labels=[f"{y:.1f}" if y is not None else "" for y in ys],
                         fontsize="x-small", rotation=90, padding=2)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(0, 108)  # room for the value labels above 100 %
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    # below the axes, so that no bar is hidden behind it
    ax.legend(fontsize="small", ncols=min(3, len(values)), loc="upper center",
              bbox_to_anchor=(0.5, -0.08), frameon=False)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    finally:
        plt.close(fig)
    return path


def _safe(name: Any) -> str:
    """A file-name part: each run of characters other than letters, digits, ``.``, ``+`` and
    ``-`` becomes one ``-``, none at either end ("fashion-mnist (32 px)": "fashion-mnist-32-px").
    """
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(name)).strip("-.") or "unnamed"


def _unique(name: str, paths: dict[str, str]) -> str:
    """``name``, or ``name-2``, ``name-3``, ... when two groups' names met in one file name."""
    taken = {key.partition(":")[2] for key in paths if key.startswith("png:")}
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate
