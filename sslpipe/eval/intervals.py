"""Repeated runs: mean, sample standard deviation and count, and when a difference is clear.

A result measured ``K`` times (probe seeds, pretraining seeds) is reported as
``mean ± std (K)`` with the *sample* standard deviation (``ddof=1``, undefined for one run).
Two results differ **clearly** only when their ``mean ± std`` intervals do not overlap; with
overlapping intervals, or a single run on either side, the difference is not clear. The rule
is deliberately simple and conservative (two one-sigma intervals that just touch are about two
standard errors apart for ``K = 3``): a study says "clearly better" only where the seeds agree.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """``mean ± std`` over ``n`` runs (``std`` None when ``n < 2``); accuracies in %."""

    mean: float
    std: float | None
    n: int

    @property
    def low(self) -> float:
        return self.mean - (self.std or 0.0)

    @property
    def high(self) -> float:
        return self.mean + (self.std or 0.0)

    def text(self, digits: int = 2) -> str:
        """``"84.20 ± 0.31 (3)"``, or ``"84.20"`` for one run."""
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} ({self.n})"


def interval(values: Iterable[float]) -> Interval:
    """Mean and sample standard deviation (``ddof=1``) of ``values``.

    >>> interval([80.0, 82.0, 84.0]).text()
    '82.00 ± 2.00 (3)'

    Raises:
        ValueError: no value, or a value that is not finite.
    """
    data = [float(v) for v in values]
    if not data:
        raise ValueError("values: expected at least one run. Got none")
    if not all(math.isfinite(v) for v in data):
        raise ValueError(f"values must be finite numbers. Got {data}")
    std = statistics.stdev(data) if len(data) > 1 else None
    return Interval(statistics.fmean(data), std, len(data))


def clear_difference(a: Interval, b: Interval) -> int:
    """``1`` when ``a`` is clearly above ``b``, ``-1`` clearly below, ``0`` not clear.

    Clear means: both have at least two runs and the ``mean ± std`` intervals do not overlap
    (touching intervals overlap).
    """
    if a.std is None or b.std is None:
        return 0
    if a.low > b.high:
        return 1
    if a.high < b.low:
        return -1
    return 0


def comparison_words(name: str, a: Interval, other: str, b: Interval) -> str:
    """One sentence comparing two results, naming the rule.

    ``"rotation: 78.10 ± 0.40 (3) vs scratch 70.20 ± 1.10 (3): clearly better (the mean ± std
    intervals do not overlap)"``.
    """
    verdict = clear_difference(a, b)
    if verdict:
        why = "clearly " + ("better" if verdict > 0 else "worse") + \
            " (the mean ± std intervals do not overlap)"
    elif a.std is None or b.std is None:
        why = "not clear (one run: no interval; repeat with more seeds)"
    else:
        why = "no clear difference (the mean ± std intervals overlap)"
    return f"{name}: {a.text()} vs {other} {b.text()}: {why}"


def summarize_runs(runs: Sequence[dict[str, dict[str, float]]],
                   seeds: Sequence[int]) -> dict[str, dict[str, object]]:
    """Per-layer means of ``K`` runs' results, with their spread and the runs themselves.

    Args:
        runs: ``K`` results ``{layer: {"top1": %, "top5": %, ...}}`` (one per seed).
        seeds: the seed of each run.

    Returns:
        ``{layer: {"top1": mean, "top5": mean, "top1_std": s | None, "top5_std": s | None,
        "n": K, "runs": [{"seed", "top1", "top5"}, ...], **the first run's other fields}}``,
        numbers rounded to 2 decimals. Layers missing from a run are left out.
    """
    if not runs or len(runs) != len(seeds):
        raise ValueError(f"runs and seeds must be non-empty and of equal length. Got "
                         f"{len(runs)} runs and {len(seeds)} seeds")
    out: dict[str, dict[str, object]] = {}
    for layer in runs[0]:
        if not all(layer in run for run in runs):
            continue
        entry: dict[str, object] = {k: v for k, v in runs[0][layer].items()
                                    if k not in ("top1", "top5")}
        for metric in ("top1", "top5"):
            values = [run[layer].get(metric) for run in runs]
            if any(v is None for v in values):
                continue
            spread = interval(float(v) for v in values if v is not None)
            entry[metric] = round(spread.mean, 2)
            entry[f"{metric}_std"] = None if spread.std is None else round(spread.std, 2)
        entry["n"] = len(runs)
        entry["runs"] = [{"seed": seed, "top1": run[layer].get("top1"),
                          "top5": run[layer].get("top5")} for seed, run in zip(seeds, runs)]
        out[layer] = entry
    return out


def run_values(numbers: dict[str, object], metric: str = "top1") -> list[float]:
    """The per-run values of ``metric`` in one layer's result (its mean when it holds no runs,
    as a result file written before ``--seeds`` existed)."""
    runs = numbers.get("runs")
    if isinstance(runs, list) and runs:
        return [float(r[metric]) for r in runs if isinstance(r, dict) and r.get(metric) is not None]
    value = numbers.get(metric)
    return [float(value)] if isinstance(value, (int, float)) else []
