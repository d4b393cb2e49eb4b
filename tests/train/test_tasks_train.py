"""Every registered task trains a few steps through the trainer and its loss goes down."""

from __future__ import annotations

import json

import pytest
import torch

import sslpipe
from sslpipe.train import TrainConfig, train
from tests.train.conftest import fake_data, tiny_options


class RepeatLoader:
    """The same collated batch ``steps`` times per epoch: the loss on it must fall."""

    def __init__(self, batch, steps: int) -> None:
        self.batch, self.steps = batch, steps

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        return iter([self.batch] * self.steps)


@pytest.mark.parametrize("name", sslpipe.list_tasks())
def test_task_loss_goes_down(name, tmp_path):
    options = tiny_options(name, tmp_path)
    task = sslpipe.create_task(name, **options)
    size = options.get("size", 32)
    images, labels = fake_data(8, size)
    samples = list(zip(images, labels.tolist()))
    batch = task.collator(samples, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(task=name, arch="resnet18", epochs=1, batch_size=8,
                         optimizer="adamw", lr=1e-3, weight_decay=0.0, schedule="constant",
                         task_options=options, out=str(tmp_path / "run"), log_every=1,
                         progress=False, probe=False)
    result = train(config, loader=RepeatLoader(batch, 4))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").open()
              if json.loads(line)["event"] == "step"]
    assert result.steps == 4 and len(losses) == 4
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", sslpipe.list_tasks())
def test_the_online_probe_runs_for_every_task(name, tmp_path):
    # jigsaw's backbone sees tiles: its probe classifies them by their image's label (source)
    options = tiny_options(name, tmp_path)
    task = sslpipe.create_task(name, **options)
    images, labels = fake_data(8, options.get("size", 32))
    batch = task.collator(list(zip(images, labels.tolist())),
                          generator=torch.Generator().manual_seed(0))
    config = TrainConfig(task=name, arch="resnet18", epochs=1, batch_size=8, lr=0.01,
                         task_options=options, out=str(tmp_path / "run"), log_every=1,
                         progress=False, num_classes=10, tensorboard=False)
    result = train(config, loader=RepeatLoader(batch, 2))
    assert 0.0 <= result.metrics["probe_acc"] <= 1.0, result.metrics


@pytest.mark.parametrize(("name", "schedule"), [("rotation+jigsaw", "sum"),
                                                ("rotation+simclr", "sum"),
                                                ("simclr+rotation", "alternate")])
def test_the_online_probe_trains_in_a_multi_task_run(name, schedule, tmp_path):
    # the backbone's first features are the first member's to run: their labels come through
    # that member's meta (e.g. "rotation.source"), which the probe used to look for unprefixed
    from sslpipe.train.trainer import Trainer

    options = {**tiny_options(name, tmp_path), "schedule": schedule}
    task = sslpipe.create_task(name, **options)
    images, labels = fake_data(8, 48)
    batch = task.collator(list(zip(images, labels.tolist())),
                          generator=torch.Generator().manual_seed(0))
    config = TrainConfig(task=name, arch="resnet18", epochs=1, batch_size=8, lr=0.01,
                         task_options=options, out=str(tmp_path / "run"), log_every=1,
                         progress=False, num_classes=10, tensorboard=False)
    trainer = Trainer(config, loader=RepeatLoader(batch, 3))
    before = trainer.probe.linear.weight.detach().clone()
    result = trainer.fit()
    assert not torch.equal(trainer.probe.linear.weight, before)
    assert trainer.probe.optimizer.state  # momentum buffers: it stepped
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    steps = [x for x in lines if x["event"] == "step"]
    assert len(steps) == 3 and all(0.0 <= x["probe_acc"] <= 1.0 and x["probe_loss"] > 0
                                   for x in steps)
    assert 0.0 <= result.metrics["probe_acc"] <= 1.0


def test_a_probe_that_cannot_match_its_features_to_labels_says_so(tmp_path, capsys):
    options = tiny_options("rotation", tmp_path)  # 4 rotated rows per image
    task = sslpipe.create_task("rotation", **options)
    images, labels = fake_data(8, 32)
    batch = task.collator(list(zip(images, labels.tolist())),
                          generator=torch.Generator().manual_seed(0))
    del batch.meta["source"]
    config = TrainConfig(task="rotation", arch="resnet18", epochs=1, batch_size=8, lr=0.01,
                         task_options=options, out=str(tmp_path / "run"), log_every=1,
                         progress=False, num_classes=10, tensorboard=False)
    train(config, loader=RepeatLoader(batch, 2))
    out = capsys.readouterr().out
    assert out.count("online probe: not trained") == 1 and "meta['source']" in out
