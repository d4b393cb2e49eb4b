"""Few labels: class-balanced, seeded, nested subsets of a labelled training split.

``sslpipe eval ... --labels-per-class N`` keeps exactly ``N`` images of every class;
``--label-fraction P`` keeps ``round(P x n_c)`` images of class ``c`` (at least 1). Within a
class the images are a prefix of one permutation seeded by ``(seed, class)``, as the shard
subsets of :mod:`sslpipe.data.subset` are, so for one seed a smaller budget's images are always
among a larger budget's (1 % ⊂ 10 % ⊂ 100 %; 10/class ⊂ 100/class): a label-budget sweep
changes one thing at a time. The permutation stream is not the shard subsets' one, so a
labelled subset drawn with seed 0 from a pretraining subset made with seed 0 is not simply
its first images.

Positions count the split's samples in manifest order (shards in the manifest's order, samples
in each tar's order): the same images whatever the number of DataLoader workers. The chosen
samples are read from the shards (encoded bytes, kept in memory: about 1 KB per FashionMNIST
image, 110 KB per ImageNet one) and turned into Batches by the evaluation's own collators, in
this process (:class:`~sslpipe.eval.batches.SampleBatches`). A budget that keeps every image
(``100%``) reads the shard directory as a plain evaluation does.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sslpipe.eval.batches import SampleBatches

# SampleBatches (sslpipe.eval.batches) is re-exported: it was this module's
__all__ = ["LabelBudget", "LabeledSplit", "SampleBatches", "label_subset", "parse_budget",
           "subset_digest"]

_PER_CLASS = re.compile(r"^\s*(\d+)\s*(?:/\s*class)?\s*$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


@dataclass(frozen=True)
class LabelBudget:
    """How many labelled images a few-label evaluation keeps.

    Exactly one of:
        per_class: ``N`` images of every class (``>= 1``).
        fraction: the share ``P`` in (0, 1] of every class, ``max(1, round(P x n_c))`` images.
    """

    per_class: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if (self.per_class is None) == (self.fraction is None):
            raise ValueError("a label budget is either labels per class or a label fraction, "
                             f"exactly one. Got per_class={self.per_class!r}, "
                             f"fraction={self.fraction!r}")
        if self.per_class is not None and (isinstance(self.per_class, bool)
                                           or not isinstance(self.per_class, int)
                                           or self.per_class < 1):
            raise ValueError(f"--labels-per-class must be an integer >= 1. Got "
                             f"{self.per_class!r}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(f"--label-fraction must be in (0, 1]. Got {self.fraction!r}")

    @property
    def name(self) -> str:
        """Its name in tables: ``"10/class"`` or ``"1%"``."""
        if self.per_class is not None:
            return f"{self.per_class}/class"
        return f"{100 * (self.fraction or 0):g}%"

    @property
    def tag(self) -> str:
        """A file-name part: ``"10-per-class"`` or ``"1pct"`` (``"0.5pct"``)."""
        if self.per_class is not None:
            return f"{self.per_class}-per-class"
        return f"{100 * (self.fraction or 0):g}pct"

    @property
    def keeps_all(self) -> bool:
        """Whether every image is kept (``fraction == 1``)."""
        return self.fraction == 1.0

    def quotas(self, class_counts: dict[int, int],
               class_names: Sequence[str] | None = None) -> dict[int, int]:
        """Images to keep per class, given each class's count in the split.

        Raises:
            ValueError: ``per_class`` exceeds a class's count (the class is named).
        """
        if self.fraction is not None:
            return {c: max(1, round(n * self.fraction)) for c, n in class_counts.items()}
        short = [c for c, n in sorted(class_counts.items()) if n < (self.per_class or 0)]
        if short:
            c = short[0]
            named = f" ({class_names[c]!r})" if class_names and 0 <= c < len(class_names) else ""
            raise ValueError(
                f"--labels-per-class {self.per_class}: class {c}{named} has only "
                f"{class_counts[c]} image(s) in the training split"
                + (f" ({len(short)} classes are short)" if len(short) > 1 else "")
                + "; lower it or use --label-fraction")
        return {c: int(self.per_class or 0) for c in class_counts}

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "per_class": self.per_class, "fraction": self.fraction}


def parse_budget(value: str | int | float) -> LabelBudget:
    """A budget as a study file or a table names it.

    ``"1%"`` -> fraction 0.01; ``10``, ``"10"`` or ``"10/class"`` -> 10 per class.

    Raises:
        ValueError: anything else.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return LabelBudget(per_class=value)
    text = str(value)
    percent = _PERCENT.match(text)
    if percent:
        return LabelBudget(fraction=float(percent.group(1)) / 100)
    per_class = _PER_CLASS.match(text)
    if per_class:
        return LabelBudget(per_class=int(per_class.group(1)))
    raise ValueError(f"a label budget must look like '1%' (a fraction of every class) or 10 / "
                     f"'10/class' (images per class). Got {value!r}")


def label_subset(labels: Sequence[int] | np.ndarray | torch.Tensor, budget: LabelBudget,
                 seed: int, class_names: Sequence[str] | None = None) -> np.ndarray:
    """Positions (sorted int64) of the labelled images a budget keeps, drawn with ``seed``.

    Args:
        labels: class index of every image of the split, in manifest order.
        budget: :class:`LabelBudget`.
        seed: seeds the per-class permutations; one seed gives nested subsets for growing
            budgets.
        class_names: names for error messages (the manifest's ``classes``).

    Raises:
        ValueError: no labels, or a class with fewer images than ``--labels-per-class``.
    """
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-d sequence of class indices. Got shape "
                         f"{y.shape}")
    classes = np.unique(y)
    members = {int(c): np.flatnonzero(y == c) for c in classes}
    quotas = budget.quotas({c: len(m) for c, m in members.items()}, class_names)
    chosen = []
    for c, idx in members.items():
        # one permutation per (seed, class), its own stream (tag 2): prefixes are nested
        order = np.random.default_rng([seed, 2, c + 1]).permutation(len(idx))
        chosen.append(idx[order[:quotas[c]]])
    return np.sort(np.concatenate(chosen))


def subset_digest(keys: Sequence[str]) -> str:
    """sha256 of the chosen keys (sorted, newline-joined): a labelled subset's identity."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


class LabeledSplit:
    """The keys and labels of a shard directory's samples, in manifest order.

    Reading it decodes nothing: one pass over the shards' tar members.

    Raises:
        ValueError: the directory is unlabelled, or a shard is unreadable or truncated, or its
            samples disagree with the manifest's count.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        from sslpipe.data.manifest import read_manifest

        self.directory = os.fspath(directory)
        self.manifest = read_manifest(self.directory)
        if not self.manifest.get("labeled"):
            raise ValueError(f"{self.directory!r} has no labels (manifest 'labeled' is false); "
                             "a few-label evaluation needs a labelled training split")
        self.class_names: list[str] = list(self.manifest.get("classes") or [])
        keys, labels = [], []
        for sample in self._samples(lambda _i: False):
            keys.append(sample["__key__"])
            labels.append(_label_of(sample, self.directory))
        self.keys: list[str] = keys
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, budget: LabelBudget, seed: int) -> np.ndarray:
        """:func:`label_subset` of this split."""
        return label_subset(self.labels, budget, seed, self.class_names)

    def samples(self, positions: Sequence[int] | np.ndarray) -> dict[int, dict[str, Any]]:
        """``{position: webdataset sample dict (encoded image bytes, "cls")}`` of ``positions``
        (one pass over the shards)."""
        wanted = {int(p) for p in positions}
        out = {i: s for i, s in enumerate(self._samples(wanted.__contains__)) if i in wanted}
        if len(out) != len(wanted):
            raise ValueError(f"{self.directory}: {len(wanted) - len(out)} of the chosen samples "
                             "were not found on the second read; the shards changed meanwhile")
        return out

    def _samples(self, keep_bytes: Callable[[int], bool]) -> Iterator[dict[str, Any]]:
        from sslpipe.data.manifest import shard_paths
        from sslpipe.data.reading import iter_shard

        events: list[tuple[str, str, str]] = []
        position = 0
        for path, shard in zip(shard_paths(self.directory), self.manifest["shards"]):
            for sample in iter_shard(path, events, shard.get("samples")):
                if not keep_bytes(position):
                    sample = {k: v for k, v in sample.items()
                              if k.startswith("__") or k in ("cls", "label")}
                yield sample
                position += 1
            if events:
                kind, url, why = events[0]
                raise ValueError(f"{self.directory}: shard {url} is {kind}: {why}; a few-label "
                                 "evaluation needs every sample (check it with `sslpipe shard "
                                 "--verify`)")
        expected = int(self.manifest["num_samples"])
        if position != expected:
            raise ValueError(f"{self.directory}: read {position} samples but the manifest lists "
                             f"{expected}")


def _label_of(sample: dict[str, Any], where: str) -> int:
    raw = sample.get("cls", sample.get("label"))
    if raw is None:
        raise ValueError(f"{where}: sample {sample.get('__key__')!r} has no label ('cls')")
    try:
        return int(raw.decode().strip() if isinstance(raw, (bytes, bytearray)) else raw)
    except ValueError as err:
        raise ValueError(f"{where}: sample {sample.get('__key__')!r} has a label that is not "
                         f"an integer: {raw!r}") from err
