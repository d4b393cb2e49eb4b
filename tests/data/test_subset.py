"""Class-balanced nested subsets."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from sslpipe.data.subset import balanced_subset, keys_subset, parse_subset


def _labels(per_class=(50, 60, 70, 80)):
    labels = [c for c, n in enumerate(per_class) for _ in range(n)]
    np.random.default_rng(5).shuffle(labels)
    return labels


def test_parse_subset_units():
    assert parse_subset("30k", 10**6) == 30_000
    assert parse_subset("1.2m", 2 * 10**6) == 1_200_000
    assert parse_subset("123", 200) == 123
    assert parse_subset("10%", 250) == 25
    with pytest.raises(ValueError, match="only 100"):
        parse_subset("1k", 100)
    with pytest.raises(ValueError, match="30k"):
        parse_subset("lots", 100)


def test_balanced_and_remainder_spread():
    labels = _labels()
    chosen = balanced_subset(labels, 102, seed=3)
    counts = Counter(labels[i] for i in chosen)
    assert sum(counts.values()) == 102 and len(set(chosen)) == 102
    assert sorted(counts.values()) == [25, 25, 26, 26]


def test_nested_and_deterministic():
    labels = _labels()
    small, mid, big = (set(balanced_subset(labels, n, seed=7)) for n in (30, 101, 200))
    assert small < mid < big
    assert balanced_subset(labels, 101, seed=7) == balanced_subset(labels, 101, seed=7)
    assert balanced_subset(labels, 101, seed=8) != balanced_subset(labels, 101, seed=7)


def test_class_too_small_says_so():
    with pytest.raises(ValueError, match="class 0 has 50, needs 60"):
        balanced_subset(_labels(), 240, seed=0)


def test_unlabeled_is_one_group():
    chosen = balanced_subset([None] * 40, 10, seed=1)
    assert len(chosen) == 10 and set(chosen) <= set(range(40))


def test_keys_subset_reports_unknown_keys():
    keys = ["a", "b", "c"]
    assert keys_subset(keys, ["c", "a"], "keys") == [0, 2]
    with pytest.raises(ValueError, match="not in the data"):
        keys_subset(keys, ["a", "zz"], "keys")
