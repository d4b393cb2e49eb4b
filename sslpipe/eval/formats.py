"""The files a report is made of: Markdown tables, CSV files and bar-chart PNGs.

Shared by ``sslpipe report`` (:mod:`sslpipe.eval.report`) and a study's report
(:mod:`sslpipe.study.report`). Numbers are written with 2 decimals (:func:`num_text`); files are
written atomically (:mod:`sslpipe.atomic`), so a reader never sees half a table. Charts are
``FIGSIZE`` inches at ``DPI`` (800 x 450 px), drawn with matplotlib's Agg backend.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from sslpipe.atomic import atomic_write, atomic_write_text

FIGSIZE = (8.0, 4.5)
DPI = 100


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table: ``header``, the rule, a line per row (cells ``str()``-ed)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]


def write_csv(path: str, header: list[str], rows: list[list[Any]]) -> str:
    """Write ``header`` and ``rows`` to the CSV file ``path`` (``\\n`` line ends); return ``path``.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path


def bar_chart(path: str, groups: list[str], values: dict[str, list[float | None]],
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


def safe_name(name: Any) -> str:
    """A file-name part: each run of characters other than letters, digits, ``.``, ``+`` and
    ``-`` becomes one ``-``, none at either end ("fashion-mnist (32 px)": "fashion-mnist-32-px").
    """
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(name)).strip("-.") or "unnamed"


def unique_name(name: str, paths: dict[str, str]) -> str:
    """``name``, or ``name-2``, ``name-3``, ... when two groups' names met in one file name."""
    taken = {key.partition(":")[2] for key in paths if key.startswith("png:")}
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def num_text(value: float | None) -> str:
    """``12.35`` for 12.3456 (2 decimals); ``""`` for None (an empty CSV cell)."""
    return "" if value is None else f"{value:.2f}"
