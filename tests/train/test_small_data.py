"""Defaults that work on small and uneven data: one shard for many workers, 28 px images, fewer
images than a batch, a last batch the task cannot use (training and validation)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from click.testing import CliRunner

import sslpipe
from sslpipe.cli import main
from sslpipe.data import create_loader
from sslpipe.registry import task_class
from sslpipe.train import TrainConfig, train
from sslpipe.train.fit import fit_to_data
from tests.data.loader_shards import make_shards


def test_one_shard_for_four_workers_fits_the_workers_and_says_so(tmp_path, caplog):
    make_shards(str(tmp_path), 1, 10, size=(16, 16))
    with caplog.at_level(logging.WARNING):
        loader = create_loader(str(tmp_path), "rotation", 4, num_workers=4)
    assert "1 shard(s) for 1 rank(s): 1 worker(s) per rank instead of 4" in caplog.text
    assert len(list(loader)) == len(loader) == 2
    with pytest.raises(ValueError, match="cannot be split over 2 rank"):  # truly impossible
        create_loader(str(tmp_path), "rotation", 4, num_workers=4, rank=0, world_size=2)


@pytest.mark.parametrize(("side", "expected", "small"), [(28, 32, True), (32, 32, True),
                                                        (64, 64, True), (96, 96, None),
                                                        (500, None, None)])
def test_fit_to_data_picks_a_size_and_stem(side, expected, small):
    options, stem, note = fit_to_data("rotation", "resnet18", side, {}, False)
    assert options.get("size") == expected and stem is small
    assert (note is None) == (expected is None)
    # an explicit choice always wins; other architectures keep their stem
    assert fit_to_data("rotation", "resnet18", side, {"size": 48}, False)[0] == {"size": 48}
    assert fit_to_data("rotation", "vit_tiny_patch16_224", side, {}, False)[1] is None
    assert fit_to_data("rotation", "resnet18", side, {}, True)[1] is None
    multi, _, _ = fit_to_data("relative_patch+counting", "resnet18", side,
                              {"counting": {"size": 8}}, False)
    if expected is not None:
        assert multi == {"relative_patch": {"size": max(4, expected // 5)},
                         "counting": {"size": 8}}


def test_train_cli_fits_28_px_data_and_an_explicit_option_wins(tmp_path):
    make_shards(str(tmp_path / "d"), 2, 8, size=(28, 28))
    runner = CliRunner()
    out = runner.invoke(main, ["train", "rotation", "--data", str(tmp_path / "d"),
                               "--arch", "resnet18", "--print-config"])
    assert out.exit_code == 0, out.output
    config = json.loads(out.stdout[out.stdout.index("{"):])
    assert config["task_options"] == {"size": 32} and config["small_input"] is True
    assert "images of at most 28 px" in out.stderr
    out = runner.invoke(main, ["train", "rotation", "--data", str(tmp_path / "d"), "--arch",
                               "resnet18", "-o", "size=48", "--no-small-input",
                               "--print-config"])
    config = json.loads(out.stdout[out.stdout.index("{"):])
    assert config["task_options"] == {"size": 48} and config["small_input"] is False


def _config(tmp_path, **kw) -> TrainConfig:
    base = dict(arch="resnet18", small_input=True, epochs=1, batch_size=8, lr=0.05,
                out=str(tmp_path / "run"), log_every=1, progress=False, tensorboard=False,
                num_workers=0, probe=False, device="cpu")
    return TrainConfig(**{**base, **kw})


def test_fewer_images_than_a_batch_train_in_partial_batches(tmp_path, capsys):
    make_shards(str(tmp_path / "d"), 1, 5, size=(16, 16))
    result = train(_config(tmp_path, data=str(tmp_path / "d"), task_options={"size": 16}))
    assert result.steps == 1 and result.metrics["images"] == 5
    out = capsys.readouterr().out
    assert "less than one batch" in out and "drop_last (--drop-last) would leave no step" in out
    assert "1 step of 8 per epoch x 1 epoch = 1 step\n" in out


def test_a_last_batch_the_task_cannot_use_kills_nothing(tmp_path):
    # VICReg's variance needs 2 images: validation over 9 images in batches of 8 ends with one
    make_shards(str(tmp_path / "train"), 2, 8, size=(16, 16))
    make_shards(str(tmp_path / "val"), 1, 9, size=(16, 16))
    options = {"size": 16, "expander_dim": 16, "expander_layers": 2}
    config = _config(tmp_path, task="vicreg", data=str(tmp_path / "train"),
                     val=str(tmp_path / "val"), task_options=options, drop_last=False)
    result = train(config)
    assert "val_loss" in result.metrics and (tmp_path / "run" / "checkpoints").is_dir()


@pytest.mark.parametrize("backend", ["cpu", pytest.param("dali", marks=pytest.mark.dali)])
def test_a_short_last_batch_is_reported_not_taken_for_bad_samples(tmp_path, backend):
    make_shards(str(tmp_path), 1, 5, size=(16, 16))
    loader = create_loader(str(tmp_path), "counting", 2, single_pass=True, shuffle_buffer=0,
                           num_workers=0, backend=backend, **{})
    batches = list(loader)
    assert [b.batch_size for b in batches] == [2, 2]
    assert [e[0] for e in loader.stats.events] == ["short-batch"]
    assert torch.is_tensor(batches[0].inputs[0])


NEEDS_TWO = [n for n in sslpipe.list_tasks() if task_class(n).min_batch_size > 1]


@pytest.mark.parametrize("task", NEEDS_TWO)
def test_a_batch_smaller_than_the_task_needs_is_refused_at_the_start(tmp_path, task):
    """Every batch would be skipped (and the run would loop over epochs without a step):
    refused before any data is read, naming the task and the batch it needs."""
    assert {"byol", "mocov3", "vicreg"} <= set(NEEDS_TWO)
    make_shards(str(tmp_path / "d"), 1, 5, size=(16, 16))
    with pytest.raises(ValueError, match=rf"{task} needs at least 2 images per batch"):
        train(_config(tmp_path, task=task, data=str(tmp_path / "d"), batch_size=1,
                      task_options={"size": 16}))
