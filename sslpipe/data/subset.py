"""Class-balanced, seeded, nested subsets (``--subset 30k|60k|120k|N|P%``).

Each class gets ``size // num_classes`` images; the remainder goes one each to the first
classes of a seeded permutation of the classes. Within a class the images are taken as a prefix
of one seeded permutation of that class. Both permutations depend only on the seed, so with one
seed a smaller subset is always inside a larger one (30k ⊂ 60k ⊂ 120k), which the pretraining
size sweeps rely on. Unlabeled data is one "class".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_RULE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM%]?)\s*$")


def parse_subset(rule: str, total: int) -> int:
    """The number of images a subset rule asks for.

    ``"30k"`` -> 30,000; ``"1.2m"`` -> 1,200,000; ``"5000"`` -> 5,000; ``"10%"`` -> 10% of
    ``total`` (rounded).

    Raises:
        ValueError: an unparsable rule, a size of 0, or more images than ``total``.
    """
    match = _RULE.match(str(rule))
    if not match:
        raise ValueError(f"`subset` must look like 30k, 1.2m, 5000 or 10%. Got {rule!r}")
    value, unit = float(match.group(1)), match.group(2).lower()
    if unit == "%":
        if not 0 < value <= 100:
            raise ValueError(f"`subset` percentage must be in (0, 100]. Got {rule!r}")
        size = round(total * value / 100)
    else:
        size = round(value * {"": 1, "k": 1_000, "m": 1_000_000}[unit])
    if size <= 0:
        raise ValueError(f"`subset` must select at least one image. Got {rule!r} -> {size}")
    if size > total:
        raise ValueError(
            f"`subset` {rule!r} asks for {size} images, but the data has only {total}"
        )
    return size


def balanced_subset(labels: Sequence[int | None], size: int, seed: int) -> list[int]:
    """Indices (sorted) of a class-balanced subset of ``size`` items.

    Args:
        labels: class index of each item (None for unlabeled items; all form one group).
        size: number of items to select.
        seed: seeds both permutations; equal seeds give nested subsets for growing sizes.

    Raises:
        ValueError: ``size`` exceeds the data, or a class has fewer items than its share.
    """
    return balanced_order(labels, size, seed)[0]


def balanced_order(labels: Sequence[int | None], size: int, seed: int
                   ) -> tuple[list[int], dict[int, list[int]]]:
    """:func:`balanced_subset` and, per class (-1: unlabeled), the items after its share in
    its seeded order: the spares that replace a pick found undecodable, in turn. Taking a
    class's first ``quota`` *decodable* items of its order keeps subsets nested.

    Raises:
        ValueError: as :func:`balanced_subset`.
    """
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(-1 if label is None else int(label), []).append(i)
    if size > len(labels):
        raise ValueError(f"`subset` asks for {size} images, but the data has only {len(labels)}")
    names = sorted(groups)
    share, extra = divmod(size, len(names))
    lucky = set(np.random.default_rng([seed, 0]).permutation(len(names))[:extra].tolist())
    chosen: list[int] = []
    spares: dict[int, list[int]] = {}
    short = []
    for rank, name in enumerate(names):
        quota = share + (rank in lucky)
        members = groups[name]
        if quota > len(members):
            short.append(f"class {name} has {len(members)}, needs {quota}")
            continue
        # one permutation per class seeded by (seed, class): prefixes of it are nested
        order = np.random.default_rng([seed, 1, name + 1]).permutation(len(members))
        chosen.extend(members[i] for i in order[:quota].tolist())
        spares[name] = [members[i] for i in order[quota:].tolist()]
    if short:
        raise ValueError(
            f"`subset` of {size} images cannot be split evenly into {len(names)} classes "
            f"({share}-{share + 1} per class): " + "; ".join(short[:10])
            + (f"; and {len(short) - 10} more" if len(short) > 10 else "")
        )
    return sorted(chosen), spares


def keys_subset(keys: Sequence[str], wanted: Sequence[str], where: str) -> list[int]:
    """Indices of ``wanted`` keys (e.g. read from ``--keys-from``), in the data's order.

    Raises:
        ValueError: a wanted key is not in the data (the first few are named) or repeats.
    """
    position = {key: i for i, key in enumerate(keys)}
    missing = [k for k in wanted if k not in position]
    if missing:
        raise ValueError(
            f"{where}: {len(missing)} key(s) are not in the data, e.g. {missing[:5]}"
        )
    if len(set(wanted)) != len(wanted):
        repeats = len(wanted) - len(set(wanted))
        raise ValueError(f"{where}: keys must be unique. Got {repeats} repeated key(s)")
    return sorted(position[k] for k in wanted)


def read_keys(path: str) -> list[str]:
    """Keys from a text file, one per line (blank lines and ``#`` comments ignored)."""
    with open(path, encoding="utf-8") as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    return [line for line in lines if line]
