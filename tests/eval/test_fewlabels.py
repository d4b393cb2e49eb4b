"""Few-label runs: the scratch baseline trains from random init on only the subset's images;
``sslpipe eval --seeds K`` with a label budget records K runs and the subset of each seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sslpipe.data import sample_path
from sslpipe.eval.baselines import build_backbone, resolve_checkpoint
from sslpipe.eval.fewlabels import TrainLabels
from sslpipe.eval.finetune import FinetuneOptions, finetune
from sslpipe.eval.labels import LabelBudget, LabeledSplit, SampleBatches
from sslpipe.eval.transform import EvalCollator

ARCH = "nin_3block_w50"
SIZE = 16


def _small_test_set() -> SampleBatches:
    split = LabeledSplit(sample_path("test"))
    positions = np.arange(40)
    samples = split.samples(positions)
    return SampleBatches([samples[i] for i in positions.tolist()], EvalCollator(SIZE), 20)


def test_scratch_trains_from_random_init_on_only_the_subset(monkeypatch: Any) -> None:
    seen: list[torch.Tensor] = []
    original = SampleBatches.__iter__

    def spy(self: SampleBatches) -> Any:
        for batch in original(self):
            if self.shuffle_seed is not None:  # the training batches, not the test set's
                seen.append(batch.meta["index"].clone())
            yield batch

    monkeypatch.setattr(SampleBatches, "__iter__", spy)
    budget = LabelBudget(per_class=2)
    train = TrainLabels(sample_path("train"), budget, [3])
    backbone = build_backbone(resolve_checkpoint("scratch", ARCH), 3)
    # the scratch baseline's init is the random baseline's for the same seed
    same = build_backbone(resolve_checkpoint("random", ARCH), 3)
    init = {k: v.clone() for k, v in backbone.state_dict().items()}
    assert all(torch.equal(init[k], v) for k, v in same.state_dict().items())
    data = train.for_training(3, SIZE, 8, "cpu")
    result = finetune(backbone, data, _small_test_set(),
                      FinetuneOptions(epochs=1, lr=0.05, batch_size=8, size=SIZE, seed=3,
                                      steps=6),
                      num_classes=train.num_classes, device="cpu")
    assert result["steps"] == 6 and result["frozen"] == []
    # 20 labelled images, batches of 8: 3 steps per pass, two passes
    seen_positions = torch.cat(seen)
    subset = LabeledSplit(sample_path("train")).subset(budget, 3)
    assert set(seen_positions.tolist()) == set(subset.tolist())
    assert len(seen_positions) == 2 * len(subset)
    changed = [k for k, v in backbone.state_dict().items()
               if k.endswith(".weight") and v.is_floating_point() and not torch.equal(v, init[k])]
    convs = [k for k, v in init.items() if k.endswith(".weight") and v.ndim == 4]
    assert set(convs) <= set(changed)


def test_scratch_refuses_probes_and_frozen_stages(tmp_path: Path) -> None:
    from sslpipe.eval.cli import eval_group

    common = ["--checkpoint", "scratch", "--arch", ARCH, "--train", sample_path("train"),
              "--test", sample_path("test"), "--out", str(tmp_path)]
    result = CliRunner().invoke(eval_group, ["linear", *common])
    assert result.exit_code != 0 and "sslpipe eval finetune" in result.output
    result = CliRunner().invoke(eval_group, ["finetune", "--freeze", "block1", *common])
    assert result.exit_code != 0 and "--checkpoint random" in result.output


def test_eval_cli_seeds_and_budget_are_recorded(tmp_path: Path) -> None:
    from sslpipe.eval.cli import eval_group

    args = ["knn", "--checkpoint", "random", "--arch", ARCH, "--train", sample_path("train"),
            "--test", sample_path("test"), "--size", str(SIZE), "--layers", "all",
            "--pool", "64", "--k", "5", "--labels-per-class", "4", "--seeds", "2",
            "--seed", "5", "--workers", "0", "--backend", "cpu", "--out", str(tmp_path)]
    result = CliRunner().invoke(eval_group, args)
    assert result.exit_code == 0, result.output
    path = tmp_path / "eval_knn_fashion-mnist_random_4-per-class.json"
    record = json.loads(path.read_text())
    assert record["seeds"] == [5, 6]
    assert record["labels"]["budget"]["per_class"] == 4
    per_seed = record["labels"]["seeds"]
    assert per_seed["5"]["per_class"] == [4] * 10 and per_seed["6"]["num_labels"] == 40
    assert per_seed["5"]["keys_sha256"] != per_seed["6"]["keys_sha256"]
    for numbers in record["results"].values():
        tops = [run["top1"] for run in numbers["runs"]]
        assert numbers["n"] == 2 and len(tops) == 2
        assert numbers["top1"] == pytest.approx(sum(tops) / 2, abs=0.01)
        assert numbers["top1_std"] == pytest.approx(abs(tops[0] - tops[1]) / 2**0.5, abs=0.01)


def test_both_budgets_at_once_are_refused(tmp_path: Path) -> None:
    from sslpipe.eval.cli import eval_group

    result = CliRunner().invoke(eval_group, [
        "knn", "--checkpoint", "random", "--arch", ARCH, "--train", sample_path("train"),
        "--test", sample_path("test"), "--labels-per-class", "4", "--label-fraction", "0.1",
        "--out", str(tmp_path)])
    assert result.exit_code != 0 and "give one of the two" in result.output
