"""The memory check: a step's footprint measured before training, a batch that does not fit
refused (naming the estimate, the memory available and what to change) or, when the user gave
no batch size, the largest power of two that fits chosen and said."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import sslpipe
from sslpipe.cli import main
from sslpipe.models import create_backbone
from sslpipe.train import MemoryLoader, TrainConfig, footprint, train
from tests.data.loader_shards import make_shards
from tests.train.conftest import fake_data


def _model(size: int, arch: str = "resnet18"):
    task = sslpipe.create_task("rotation", size=size)
    return task, task.build(create_backbone(arch, small_input=True))


def test_measure_leaves_the_model_and_the_rng_as_they_were():
    task, model = _model(32)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    fp = footprint.measure(task, model, None, "sgd", 0.9)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BN stats
    assert torch.equal(rng, torch.get_rng_state())
    params = sum(p.numel() * 4 for p in model.parameters())
    assert fp.state == 2 * params  # gradients + SGD momentum
    assert fp.inputs == 4 * 3 * 32 * 32 * 4  # four float rotations per image
    # ResNet-18, small stem, 32 px: layer1 alone keeps a dozen 64 x 32 x 32 float maps per
    # input (256 kB each); all of it (measured: 4.7 MB per input) is well under 20 MB
    assert 4 * 12 * 64 * 32 * 32 * 4 < fp.activations < 4 * 20e6
    assert footprint.measure(task, model, None, "adamw", 0.9).state == 3 * params


def test_activations_grow_with_the_pixels():
    small = footprint.measure(*_model(32), None, "sgd", 0.9)
    large = footprint.measure(*_model(64), None, "sgd", 0.9)
    assert 3.5 < large.activations / small.activations < 4.5


def test_fitting_batch_is_the_batch_or_the_largest_power_of_two_that_fits():
    fp = footprint.Footprint(activations=1e6 / footprint.BACKWARD_FACTOR, inputs=0.0,
                             state=1e6)
    assert fp.need(8) == pytest.approx(9e6)
    assert footprint.fitting_batch(fp, 256, 1e9) == 256
    assert footprint.fitting_batch(fp, 256, 100e6) == 64
    assert footprint.fitting_batch(fp, 100, 40e6) == 32
    assert footprint.fitting_batch(fp, 256, 2.5e6) == 1
    assert footprint.fitting_batch(fp, 256, 2.5e6, smallest=2) == 0


def test_available_memory_on_the_cpu_is_meminfo_capped_by_the_cgroup(monkeypatch):
    monkeypatch.setattr(footprint, "_meminfo_available", lambda: 8e9)
    monkeypatch.setattr(footprint, "_cgroup_room", lambda: None)
    assert footprint.available_memory(torch.device("cpu")) == 8e9
    assert footprint.available_memory(torch.device("cpu"), processes=2) == 4e9
    monkeypatch.setattr(footprint, "_cgroup_room", lambda: 3e9)
    assert footprint.available_memory(torch.device("cpu")) == 3e9


@pytest.fixture
def gigabyte_per_image(monkeypatch):
    """Every image of a step costs 1 GB and 5 GB are available (4.5 GB usable): 4 fit."""
    monkeypatch.setattr(footprint.Footprint, "need", lambda self, batch: batch * 1e9)
    monkeypatch.setattr(footprint, "available_memory", lambda device, processes=1: 5e9)


def test_a_batch_that_does_not_fit_is_refused_before_any_work(tmp_path, gigabyte_per_image):
    config = TrainConfig(task="rotation", arch="resnet18", epochs=1, batch_size=8,
                         task_options={"size": 32}, out=str(tmp_path / "run"), progress=False)
    images, labels = fake_data(16)
    task = sslpipe.create_task("rotation", size=32)
    with pytest.raises(ValueError, match=r"memory: a step of batch 8 \(rotation on resnet18\) "
                       r"needs about 8.0 GB on cpu .*; 5.0 GB available\. Pass a smaller "
                       r"--batch-size \(4 fits: about 4.0 GB\), a smaller --arch"):
        train(config, loader=MemoryLoader(images, labels, task.collator, 8))
    assert not (tmp_path / "run").exists()
    train(config.replace(memory_check=False),
          loader=MemoryLoader(images, labels, task.collator, 8))  # the user's call


def test_the_cli_fits_a_batch_it_was_not_given_and_refuses_one_it_was(tmp_path,
                                                                      gigabyte_per_image):
    make_shards(str(tmp_path / "d"), 2, 8, size=(16, 16))
    args = ["train", "rotation", "--data", str(tmp_path / "d"), "--arch", "resnet18",
            "--epochs", "1", "--num-workers", "0", "--no-progress", "--max-steps", "1"]
    run = ["--out", str(tmp_path / "run")]
    runner = CliRunner()
    given = runner.invoke(main, args + run + ["--batch-size", "8"])
    assert given.exit_code != 0
    assert "needs about 8.0 GB" in given.output and "4 fits" in given.output
    assert not (tmp_path / "run").exists()
    default = runner.invoke(main, args + run)  # the default batch, 256: 4 fit
    assert default.exit_code == 0, default.output
    assert ("memory: a step of batch 256 (rotation on resnet18) needs about 256.0 GB on cpu"
            in default.stderr)
    assert "training with batch 4 instead" in default.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["batch_size"] == 4
    resumed = runner.invoke(main, args + run + ["--max-steps", "2", "--resume"])
    assert resumed.exit_code == 0, resumed.output  # the run's batch, not the default's
    unchecked = runner.invoke(main, args + ["--out", str(tmp_path / "other"), "--batch-size",
                                            "8", "--no-memory-check"])
    assert unchecked.exit_code == 0, unchecked.output
