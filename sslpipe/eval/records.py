"""Result records as the report's tables see them.

A record (:mod:`sslpipe.eval.results`) is named with its input size and label budget
(:func:`sized_dataset`), records that differ only in their pretraining seed are pooled into one
(:func:`pool_seeds`), records are grouped and ordered for a table (:func:`group_by`,
:func:`ordered_layers`, :func:`ordered_budgets`), and a group's best layer is found by mean
top-1 (:func:`best_interval`). Accuracies are percentages in [0, 100]; an interval is
``mean ± sample std (n)`` (:mod:`sslpipe.eval.intervals`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from sslpipe.eval.intervals import Interval, interval, run_values


def pool_seeds(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def sized_dataset(record: dict[str, Any], budget: bool = True) -> str:
    """The record's dataset with its input size and label budget, ``"fashion-mnist (32 px, 1%
    labels)"``, as far as they are known."""
    dataset = str(record["dataset"])
    if dataset.endswith(")"):
        return dataset  # named already
    parts = []
    size = (record.get("config") or {}).get("size")
    if size:
        parts.append(f"{size} px")
    if budget and budget_of(record) is not None:
        parts.append(f"{budget_of(record)} labels")
    return f"{dataset} ({', '.join(parts)})" if parts else dataset


def budget_of(record: dict[str, Any]) -> str | None:
    """The record's label budget's name (``"1%"``, ``"10/class"``), None for every label."""
    from sslpipe.eval.results import budget_name

    return budget_name(record)


def budget_or_all(record: dict[str, Any]) -> str:
    """:func:`budget_of`, with ``"100%"`` for a record that used every label."""
    return budget_of(record) or "100%"


def is_scratch(record: dict[str, Any]) -> bool:
    """Whether the record is the ``scratch`` baseline (trained end to end on the labels)."""
    return (record.get("checkpoint") or {}).get("method") == "scratch" or \
        str(record.get("method", "")).split("@")[0] == "scratch"


def subset_size(record: dict[str, Any]) -> int | None:
    """Images of the record's pretraining set, None where unknown."""
    size = (record.get("checkpoint") or {}).get("pretrain", {}).get("num_images")
    return int(size) if size is not None else None


def group_by(records: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    """``{(values of keys): records}``, sorted by the values as text; records keep their order."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[tuple(r.get(k) for k in keys)].append(r)
    return dict(sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))))


def ordered_layers(records: list[dict[str, Any]]) -> list[str]:
    """Every layer of ``records``: ``stage1``, ``stage2``, ... by number, ``pooled``, the rest."""
    names = {layer for r in records for layer in r["results"]}

    def key(name: str) -> tuple[int, int, str]:
        match = re.fullmatch(r"stage(\d+)", name)
        if match:
            return (0, int(match.group(1)), name)
        return (1 if name == "pooled" else 2, 0, name)

    return sorted(names, key=key)


def ordered_budgets(records: list[dict[str, Any]]) -> list[str]:
    """Every budget of ``records``: per-class budgets by size, then fractions by size."""
    from sslpipe.eval.labels import parse_budget

    def key(name: str) -> tuple[int, float]:
        budget = parse_budget(name)
        return (0, float(budget.per_class or 0)) if budget.per_class else \
            (1, float(budget.fraction or 0))

    return sorted({budget_or_all(r) for r in records}, key=key)


def largest_per_method(group: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per method: the one pretrained on the most images (in group order)."""
    best: dict[str, dict[str, Any]] = {}
    for r in group:
        kept = best.get(r["method"])
        if kept is None or (subset_size(r) or 0) > (subset_size(kept) or 0):
            best[r["method"]] = r
    return [r for r in group if best.get(r["method"]) is r]


def method_label(record: dict[str, Any], group: list[dict[str, Any]]) -> str:
    """The record's row name in ``group``'s table: its method, with its pretraining images
    (``"rotation (10000 imgs)"``) where the method has several rows."""
    method = str(record["method"])
    # several runs of one method in a table (pretraining subsets) need telling apart
    if sum(1 for r in group if r["method"] == method) > 1 and subset_size(record) is not None:
        return f"{method} ({subset_size(record)} imgs)"
    return method


def best_top1(runs: list[dict[str, Any]]) -> tuple[float | None, str]:
    """``(top-1, layer)`` of the best layer of ``runs`` by top-1, ``(None, "")`` for none."""
    scored = [(n["top1"], layer) for r in runs for layer, n in r["results"].items()]
    return max(scored) if scored else (None, "")


def best_interval(runs: list[dict[str, Any]]) -> tuple[Interval | None, str]:
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


def best_text(runs: list[dict[str, Any]]) -> str:
    """:func:`best_interval` as a table cell: ``"71.20 ± 0.20 (3) (stage3)"``, ``"-"`` for none."""
    found, layer = best_interval(runs)
    return "-" if found is None else f"{found.text()} ({layer})"


def layer_cell(numbers: dict[str, Any] | None) -> str:
    """A layer's result as a table cell: ``top-1 [± std] / top-5 [(n)]``, ``"-"`` for none."""
    if not numbers:
        return "-"
    top5 = numbers.get("top5")
    std = numbers.get("top1_std")
    text = f"{numbers['top1']:.2f}" + (f" ± {std:.2f}" if std is not None else "")
    text += f" / {top5:.2f}" if top5 is not None else ""
    return text + (f" ({numbers['n']})" if std is not None and numbers.get("n") else "")


def layer_interval(numbers: dict[str, Any], metric: str = "top1") -> Interval | None:
    """``mean ± std (n)`` of one layer's result (its runs, or its single number)."""
    values = run_values(numbers, metric)
    return interval(values) if values else None


def _runs(numbers: dict[str, Any]) -> list[dict[str, Any]]:
    runs = numbers.get("runs")
    if isinstance(runs, list) and runs:
        return [dict(r) for r in runs if isinstance(r, dict) and r.get("top1") is not None]
    return [{"top1": numbers["top1"], "top5": numbers.get("top5")}]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
