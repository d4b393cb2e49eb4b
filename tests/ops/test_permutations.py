"""Tests of the jigsaw permutation sets: both greedy rules, determinism, the disk cache."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from sslpipe.ops import permutations
from sslpipe.ops.permutations import hamming_distances, permutation_set


def _off_diagonal(perms: np.ndarray) -> np.ndarray:
    d = hamming_distances(perms)
    return d[~np.eye(len(perms), dtype=bool)]


def test_hamming_distances_by_hand() -> None:
    perms = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [3, 2, 1, 0]])
    assert hamming_distances(perms).tolist() == [[0, 2, 4], [2, 0, 4], [4, 4, 0]]
    with pytest.raises(ValueError, match="N x k"):
        hamming_distances(np.arange(4))


@pytest.mark.parametrize("rule", ["mean", "min"])
def test_sets_are_distinct_permutations_and_deterministic(rule: str) -> None:
    perms = permutation_set(1000, grid=3, seed=0, rule=rule)
    assert perms.shape == (1000, 9) and perms.dtype == np.int64
    assert (np.sort(perms, axis=1) == np.arange(9)).all()
    assert len(np.unique(perms, axis=0)) == 1000
    assert np.array_equal(perms, permutation_set(1000, grid=3, seed=0, rule=rule))
    assert not np.array_equal(perms, permutation_set(1000, grid=3, seed=1, rule=rule))


@pytest.mark.parametrize("rule", ["mean", "min"])
def test_every_greedy_step_picks_a_best_candidate(rule: str) -> None:
    """Algorithm 1 of the paper (rule "mean"), or max-min: checked step by step against all
    4! candidates of a 2x2 grid, with an independent distance computation."""
    perms = permutation_set(12, grid=2, seed=3, rule=rule)
    candidates = np.array(list(itertools.permutations(range(4))))
    for i in range(1, len(perms)):
        chosen = perms[:i]
        dist = (candidates[:, None, :] != chosen[None, :, :]).sum(-1)  # 24 x i
        score = dist.mean(1) if rule == "mean" else dist.min(1)
        free = ~(candidates[:, None, :] == chosen[None]).all(-1).any(1)
        picked = np.flatnonzero((candidates == perms[i]).all(1))[0]
        assert free[picked]
        assert score[picked] == score[free].max()


def test_mean_rule_has_larger_mean_and_min_rule_larger_minimum() -> None:
    for n in (100, 1000):
        mean_set, min_set = (permutation_set(n, seed=0, rule=r) for r in ("mean", "min"))
        assert _off_diagonal(mean_set).mean() > _off_diagonal(min_set).mean()
        assert _off_diagonal(min_set).min() > _off_diagonal(mean_set).min()
        # both far apart: a random set of 1000 has pairs 2 apart, and a mean near 8 = 9 - 1
        assert _off_diagonal(mean_set).mean() > 8.0
    assert _off_diagonal(permutation_set(1000, seed=0, rule="min")).min() >= 5


def test_small_sets_and_other_grids() -> None:
    p2 = permutation_set(24, grid=2)
    assert len(np.unique(p2, axis=0)) == 24  # every permutation of 4 tiles
    p4 = permutation_set(10, grid=4)
    assert p4.shape == (10, 16) and (np.sort(p4, axis=1) == np.arange(16)).all()
    assert permutation_set(1, grid=3).shape == (1, 9)


@pytest.mark.parametrize("num,grid,rule", [
    (0, 3, "mean"), (math.factorial(9) + 1, 3, "mean"), (25, 2, "min"), (5, 1, "mean"),
    (10, 3, "max"),
])
def test_rejects_bad_arguments(num: int, grid: int, rule: str) -> None:
    with pytest.raises(ValueError, match="num_permutations|grid|rule"):
        permutation_set(num, grid=grid, rule=rule)


def test_cache_on_disk_per_rule(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(permutations, "_PERMUTATIONS", {})
    first = permutation_set(20, seed=3, cache_dir=tmp_path)
    other = permutation_set(20, seed=3, rule="min", cache_dir=tmp_path)
    names = sorted(f.name for f in tmp_path.iterdir())
    assert names == ["jigsaw_perms_mean_g3_n20_s3.npy", "jigsaw_perms_min_g3_n20_s3.npy"]
    assert not np.array_equal(first, other)
    path = tmp_path / names[0]
    monkeypatch.setattr(permutations, "_PERMUTATIONS", {})
    assert np.array_equal(np.load(path), first)
    assert np.array_equal(permutation_set(20, seed=3, cache_dir=tmp_path), first)
    # a corrupt cache is reported and replaced, never used
    monkeypatch.setattr(permutations, "_PERMUTATIONS", {})
    np.save(path, np.zeros((20, 9), dtype=np.int64))
    with pytest.warns(UserWarning, match="invalid permutation cache"):
        again = permutation_set(20, seed=3, cache_dir=tmp_path)
    assert np.array_equal(again, first)
    assert np.array_equal(np.load(path), first)
