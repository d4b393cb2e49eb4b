"""Permutation sets of jigsaw puzzles, chosen greedily for large Hamming distance.

Noroozi & Favaro ("Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles",
ECCV 2016, Algorithm 1) build the set of shuffles a network must tell apart one permutation at
a time: start from a random permutation and repeatedly add the candidate whose Hamming distances
to the permutations chosen so far have the largest *sum* (equivalently the largest mean). Their
Table 4 finds that the larger the average distance of the set, the better the features transfer
to detection. This is ``rule="mean"``. ``rule="min"`` instead adds the candidate whose *minimum*
distance to the set is largest (max-min, "farthest point" sampling): it guarantees a larger
minimum distance (no two shuffles differ in only a few tiles) at a slightly smaller mean.

The Hamming distance of two permutations of ``k`` tiles is the number of positions where they
differ (0 to ``k``). Sets are deterministic for a given ``(num_permutations, grid, seed, rule)``
and cached in the process and, optionally, on disk.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import warnings
from pathlib import Path

import numpy as np

from sslpipe.atomic import atomic_write_bytes

PERMUTATION_RULES = ("mean", "min")


def permutation_set(
    num_permutations: int,
    grid: int = 3,
    seed: int = 0,
    *,
    rule: str = "mean",
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Permutations of ``grid * grid`` tiles chosen greedily for large Hamming distance.

    Starting from one permutation drawn with ``seed``, repeatedly adds the candidate that
    maximises the mean Hamming distance to the chosen set (``rule="mean"``, the paper's
    Algorithm 1) or its minimum distance to the set (``rule="min"``); ties are broken by the
    seeded RNG. For ``grid <= 3`` all ``(grid*grid)!`` permutations are candidates (vectorised
    with numpy, a few seconds for 1000 of 9! on one core); for larger grids a seeded pool of
    random permutations is. Results are cached per ``(num_permutations, grid, seed, rule)`` in
    the process and, with ``cache_dir``, on disk (``jigsaw_perms_{rule}_g{grid}_n{num}_s{seed}
    .npy``, written atomically; an unreadable or invalid file is reported and rebuilt).

    Args:
        num_permutations: size of the set, ``1 <= num_permutations <= (grid*grid)!``.
        grid: tiles per side (>= 2).
        seed: seed of the first permutation and of the tie-breaks.
        rule: ``"mean"`` (maximise the mean distance to the set) or ``"min"`` (maximise the
            minimum distance to the set).
        cache_dir: directory of the on-disk cache (None: in-process only).

    Returns:
        int64 ``num_permutations x grid*grid``; each row is a permutation of ``0..grid*grid-1``,
        in the order the greedy algorithm chose them.

    Raises:
        ValueError: on a grid below 2, a set size out of range or an unknown rule.
    """
    if grid < 2:
        raise ValueError(f"grid must be >= 2. Got {grid}")
    if rule not in PERMUTATION_RULES:
        raise ValueError(f"rule must be one of {PERMUTATION_RULES}. Got {rule!r}")
    limit = math.factorial(grid * grid)
    if not 1 <= num_permutations <= limit:
        raise ValueError(
            f"num_permutations must be between 1 and ({grid}*{grid})! = {limit}. "
            f"Got {num_permutations}"
        )
    key = (num_permutations, grid, seed, rule)
    if key in _PERMUTATIONS:
        return _PERMUTATIONS[key].copy()
    path = None
    if cache_dir is not None:
        name = f"jigsaw_perms_{rule}_g{grid}_n{num_permutations}_s{seed}.npy"
        path = Path(cache_dir).expanduser() / name
        perms = _load_cached(path, num_permutations, grid * grid)
        if perms is not None:
            _PERMUTATIONS[key] = perms
            return perms.copy()
    perms = _greedy_permutations(num_permutations, grid * grid, seed, rule)
    _PERMUTATIONS[key] = perms
    if path is not None:
        _save_atomic(path, perms)
    return perms.copy()


def hamming_distances(perms: np.ndarray) -> np.ndarray:
    """int64 ``N x N`` Hamming distances between the rows of an ``N x k`` permutation array
    (number of positions where two rows differ; 0 on the diagonal)."""
    perms = np.asarray(perms)
    if perms.ndim != 2:
        raise ValueError(f"perms must be N x k. Got shape {perms.shape}")
    return (perms[:, None, :] != perms[None, :, :]).sum(-1).astype(np.int64)


_PERMUTATIONS: dict[tuple[int, int, int, str], np.ndarray] = {}


def _greedy_permutations(num: int, k: int, seed: int, rule: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if k <= 9:
        candidates = np.array(list(itertools.permutations(range(k))), dtype=np.uint8)
    else:  # (k)! candidates cannot be enumerated: a seeded random pool stands in
        pool = max(50_000, 20 * num)
        candidates = np.argsort(rng.random((pool, k)), axis=1).astype(np.uint8)
    # match[i, v] is 1 where a candidate has value v at position i: the number of positions
    # where a candidate agrees with p is then a sum of k precomputed rows.
    match = np.stack([np.stack([candidates[:, i] == v for v in range(k)]) for i in range(k)])
    match = match.astype(np.uint8)
    chosen = [int(rng.integers(len(candidates)))]
    if rule == "min":
        score = np.full(len(candidates), k + 1, dtype=np.int32)  # a chosen one scores 0
    else:
        score = np.zeros(len(candidates), dtype=np.int32)
        taken = np.int32(-(2**30))  # below any sum of distances: never chosen twice
    for _ in range(num - 1):
        p = candidates[chosen[-1]]
        agree = match[0, p[0]].astype(np.int32)
        for i in range(1, k):
            agree += match[i, p[i]]
        if rule == "min":
            np.minimum(score, k - agree, out=score)
        else:
            score += k - agree
            score[chosen[-1]] = taken
        best = np.flatnonzero(score == score.max())
        chosen.append(int(best[rng.integers(len(best))]))
    return candidates[chosen].astype(np.int64)


def _load_cached(path: Path, num: int, k: int) -> np.ndarray | None:
    if not path.exists():
        return None
    try:
        perms = np.load(path)
    except (OSError, ValueError) as err:
        warnings.warn(f"ignoring unreadable permutation cache {path}: {err}", stacklevel=3)
        return None
    valid = (perms.shape == (num, k) and np.issubdtype(perms.dtype, np.integer)
             and (np.sort(perms, axis=1) == np.arange(k)).all()
             and len(np.unique(perms, axis=0)) == num)
    if not valid:
        warnings.warn(f"ignoring invalid permutation cache {path}; regenerating it", stacklevel=3)
        return None
    return perms.astype(np.int64)


def _save_atomic(path: Path, perms: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, perms)
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as err:  # a read-only home must not stop training: the set is recomputable
        warnings.warn(f"could not cache permutations to {path}: {err}", stacklevel=3)
