"""Repeated runs: mean ± sample std (ddof=1) and K, and the 'clear' rule."""

from __future__ import annotations

import math

import pytest

from sslpipe.eval.intervals import (
    Interval,
    clear_difference,
    comparison_words,
    interval,
    run_values,
    summarize_runs,
)


def test_mean_std_and_count_by_hand() -> None:
    # mean 82, deviations -2, 0, 2: sum of squares 8 over K - 1 = 2 -> std 2
    got = interval([80.0, 82.0, 84.0])
    assert (got.mean, got.std, got.n) == (82.0, 2.0, 3)
    assert got.text() == "82.00 ± 2.00 (3)"
    got = interval([70.0, 71.0])
    assert got.std == pytest.approx(math.sqrt(0.5))


def test_one_run_has_no_interval() -> None:
    got = interval([75.5])
    assert got.std is None and got.n == 1 and got.text() == "75.50"


def test_no_run_or_nan_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one run"):
        interval([])
    with pytest.raises(ValueError, match="finite"):
        interval([1.0, float("nan")])


def test_summarize_runs_per_layer() -> None:
    runs = [{"pooled": {"top1": 80.0, "top5": 99.0, "dim": 512}},
            {"pooled": {"top1": 82.0, "top5": 98.0, "dim": 512}},
            {"pooled": {"top1": 84.0, "top5": 97.0, "dim": 512}}]
    out = summarize_runs(runs, [0, 1, 2])["pooled"]
    assert out["top1"] == 82.0 and out["top1_std"] == 2.0 and out["n"] == 3
    assert out["top5"] == 98.0 and out["top5_std"] == 1.0 and out["dim"] == 512
    assert [r["seed"] for r in out["runs"]] == [0, 1, 2]  # type: ignore[index]
    assert run_values(out) == [80.0, 82.0, 84.0]


@pytest.mark.parametrize(("a", "b", "expected"), [
    (Interval(80.0, 1.0, 3), Interval(77.0, 1.0, 3), 1),     # 79 > 78: apart
    (Interval(77.0, 1.0, 3), Interval(80.0, 1.0, 3), -1),
    (Interval(80.0, 1.0, 3), Interval(78.5, 1.0, 3), 0),     # 79 < 79.5: overlap
    (Interval(80.0, 1.0, 3), Interval(78.0, 1.0, 3), 0),     # 79 == 79: touching overlaps
    (Interval(90.0, None, 1), Interval(50.0, 1.0, 3), 0),    # one run: never clear
])
def test_clear_only_when_intervals_do_not_overlap(a: Interval, b: Interval,
                                                   expected: int) -> None:
    assert clear_difference(a, b) == expected


def test_the_words_say_the_rule() -> None:
    apart = comparison_words("rotation", Interval(80.0, 1.0, 3), "scratch",
                             Interval(70.0, 2.0, 3))
    assert "clearly better" in apart and "do not overlap" in apart
    close = comparison_words("rotation", Interval(80.0, 1.0, 3), "scratch",
                             Interval(79.0, 2.0, 3))
    assert "no clear difference" in close and "overlap" in close
    single = comparison_words("rotation", Interval(80.0, None, 1), "random",
                              Interval(70.0, None, 1))
    assert "not clear" in single
