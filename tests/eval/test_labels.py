"""Label budgets: exact class balance, nesting across budgets for one seed, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from sslpipe.eval.labels import LabelBudget, LabeledSplit, label_subset, parse_budget


def _labels(counts: list[int], seed: int = 0) -> np.ndarray:
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.random.default_rng(seed).permutation(y)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_per_class_budget_is_exact_and_nested(seed: int) -> None:
    y = _labels([50, 40, 60, 45])
    previous: set[int] = set()
    for n in (1, 5, 10, 40):
        chosen = label_subset(y, LabelBudget(per_class=n), seed)
        assert np.bincount(y[chosen], minlength=4).tolist() == [n] * 4
        assert len(set(chosen.tolist())) == len(chosen)
        assert previous <= set(chosen.tolist())
        previous = set(chosen.tolist())


@pytest.mark.parametrize("seed", [0, 3])
def test_fraction_budget_rounds_per_class_and_nests(seed: int) -> None:
    y = _labels([200, 150, 3, 1000])
    previous: set[int] = set()
    for fraction in (0.01, 0.1, 0.5, 1.0):
        chosen = label_subset(y, LabelBudget(fraction=fraction), seed)
        expected = [max(1, round(n * fraction)) for n in (200, 150, 3, 1000)]
        assert np.bincount(y[chosen], minlength=4).tolist() == expected
        assert previous <= set(chosen.tolist())
        previous = set(chosen.tolist())
    assert len(previous) == len(y)  # 100 % keeps every image


def test_seeds_draw_different_subsets_and_a_seed_reproduces() -> None:
    y = _labels([100] * 5)
    a = label_subset(y, LabelBudget(per_class=10), 0)
    assert np.array_equal(a, label_subset(y, LabelBudget(per_class=10), 0))
    assert not np.array_equal(a, label_subset(y, LabelBudget(per_class=10), 1))


def test_a_class_short_of_the_budget_is_named() -> None:
    y = _labels([20, 4, 20])
    with pytest.raises(ValueError, match=r"class 1 \('Trouser'\) has only 4"):
        label_subset(y, LabelBudget(per_class=5), 0, ["T-shirt", "Trouser", "Bag"])


@pytest.mark.parametrize(("text", "per_class", "fraction"), [
    ("1%", None, 0.01), ("10%", None, 0.1), ("100%", None, 1.0), ("10/class", 10, None),
    (25, 25, None), ("7", 7, None)])
def test_parse_budget(text: str | int, per_class: int | None, fraction: float | None) -> None:
    budget = parse_budget(text)
    assert budget.per_class == per_class and budget.fraction == fraction


@pytest.mark.parametrize("bad", ["0%", "150%", "ten", "0", -3, "1.5/class"])
def test_bad_budgets_are_refused(bad: str | int) -> None:
    with pytest.raises(ValueError):
        parse_budget(bad)


def test_budget_wants_exactly_one_kind() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        LabelBudget(per_class=3, fraction=0.5)
    with pytest.raises(ValueError, match="exactly one"):
        LabelBudget()


def test_labeled_split_reads_manifest_order_and_the_chosen_samples() -> None:
    from sslpipe.data import sample_path

    split = LabeledSplit(sample_path("train"))
    assert len(split) == 4000
    assert np.bincount(split.labels).tolist() == [400] * 10
    chosen = split.subset(LabelBudget(per_class=3), 0)
    samples = split.samples(chosen)
    assert sorted(samples) == chosen.tolist()
    for position, sample in samples.items():
        assert sample["__key__"] == split.keys[position]
        assert int(sample["cls"]) == split.labels[position]
        assert sample["png"][:4] == b"\x89PNG"
