"""The labelled training data of each seed of an evaluation: all of it, or a label budget's.

:class:`TrainLabels` is what ``sslpipe eval`` runs its seeds over. Without a budget (or with
``100%``) every seed trains on the shard directory itself; with one, seed ``s`` trains on
:func:`~sslpipe.eval.labels.label_subset` ``(budget, s)`` of it, held in memory
(:class:`~sslpipe.eval.labels.SampleBatches`), through the same collators:
:class:`~sslpipe.eval.transform.EvalCollator` for the probes' features (cached per subset),
:class:`~sslpipe.eval.transform.TrainCollator` for fine-tuning and the scratch baseline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sslpipe.eval.labels import LabelBudget, LabeledSplit, SampleBatches, subset_digest
from sslpipe.eval.probes import Data
from sslpipe.eval.transform import EvalCollator, TrainCollator


class TrainLabels:
    """The training split of an evaluation, per seed.

    Args:
        train: the training split's shard directory.
        budget: a :class:`~sslpipe.eval.labels.LabelBudget`, or None for every label.
        seeds: the seeds that will run (each draws its own subset).

    Raises:
        ValueError: as :class:`~sslpipe.eval.labels.LabeledSplit` and
            :func:`~sslpipe.eval.labels.label_subset` (a class short of the budget is named).
    """

    def __init__(self, train: str | os.PathLike[str], budget: LabelBudget | None,
                 seeds: Sequence[int]) -> None:
        from sslpipe.eval.data import describe_data

        self.train = os.fspath(train)
        self.budget = budget
        self.seeds = list(seeds)
        described = describe_data(self.train)
        self.num_classes = int(described["num_classes"])
        self.num_samples = int(described["num_samples"])
        self._manifest_sha = str(described["manifest_sha256"])
        self.positions: dict[int, np.ndarray] = {}
        self.keys: dict[int, list[str]] = {}
        self._samples: dict[int, dict[str, Any]] = {}
        if budget is not None and not budget.keeps_all:
            split = LabeledSplit(self.train)
            for seed in self.seeds:
                self.positions[seed] = split.subset(budget, seed)
                self.keys[seed] = [split.keys[i] for i in self.positions[seed].tolist()]
            union = np.unique(np.concatenate(list(self.positions.values())))
            self._samples = split.samples(union)
            self._labels = split.labels

    @property
    def subset(self) -> bool:
        """Whether the seeds train on subsets (False: on the whole split)."""
        return bool(self.positions)

    def for_probe(self, seed: int, size: int, batch_size: int,
                  device: torch.device | str) -> Data:
        """Seed ``seed``'s data for feature extraction: the directory, or its subset as Batches
        of :class:`~sslpipe.eval.transform.EvalCollator` (features cached per subset)."""
        if not self.subset:
            return self.train
        digest = subset_digest(self.keys[seed])
        return SampleBatches(self._chosen(seed), EvalCollator(size), batch_size, device,
                             positions=self.positions[seed],
                             cache_id=f"{self._manifest_sha}:{digest}")

    def for_training(self, seed: int, size: int, batch_size: int,
                     device: torch.device | str) -> Data:
        """Seed ``seed``'s data for fine-tuning: the directory (``finetune`` reads it with
        augmentation), or its subset as augmented, reshuffled Batches of
        :class:`~sslpipe.eval.transform.TrainCollator`."""
        if not self.subset:
            return self.train
        return SampleBatches(self._chosen(seed), TrainCollator(size, seed=seed), batch_size,
                             device, shuffle_seed=seed, positions=self.positions[seed])

    def describe(self) -> dict[str, Any]:
        """What a result file records: the budget, and per seed the number of labels, the
        images per class and the sha256 of the chosen keys (None without a subset)."""
        out: dict[str, Any] = {"budget": None if self.budget is None else self.budget.to_json()}
        per_seed = {}
        for seed in self.seeds:
            if self.subset:
                counts = np.bincount(self._labels[self.positions[seed]],
                                     minlength=self.num_classes)
                per_seed[str(seed)] = {"num_labels": int(len(self.positions[seed])),
                                       "per_class": counts.tolist(),
                                       "keys_sha256": subset_digest(self.keys[seed])}
            else:
                per_seed[str(seed)] = {"num_labels": self.num_samples, "per_class": None,
                                       "keys_sha256": None}
        out["seeds"] = per_seed
        return out

    def _chosen(self, seed: int) -> list[dict[str, Any]]:
        return [self._samples[i] for i in self.positions[seed].tolist()]
