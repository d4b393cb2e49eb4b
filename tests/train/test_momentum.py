"""Momentum teachers in the trainer: exact resume (teacher included), the step hooks, the
exports of both networks, and the memory check's view of a teacher."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import sslpipe
from sslpipe.cli import main
from sslpipe.models import create_backbone
from sslpipe.tasks.byol import BYOL
from sslpipe.train import MemoryLoader, TrainConfig, train
from sslpipe.train.export import network_prefixes
from sslpipe.train.footprint import measure
from tests.train.conftest import fake_data

OPTIONS = {"size": 32, "hidden_dim": 32, "projection_dim": 16, "predictor_dim": 32,
           "base_momentum": 0.9}


def _config(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(task="byol", arch="resnet18", epochs=2, batch_size=8, lr=0.05,
                warmup_epochs=0.5, task_options=OPTIONS, out=str(tmp_path / name), log_every=1,
                progress=False, seed=3, num_classes=10)
    return TrainConfig(**{**base, **kw})


def _loader(config: TrainConfig, n: int = 32) -> MemoryLoader:
    images, labels = fake_data(n)
    task = sslpipe.create_task(config.task, **config.task_options)
    return MemoryLoader(images, labels, task.collator, config.batch_size, seed=config.seed)


def test_interrupted_and_resumed_equals_uninterrupted_teacher_included(tmp_path, monkeypatch):
    seen: list[tuple[int, int, int]] = []
    original = BYOL.end_step

    def end_step(self, model, info):
        seen.append((info.step, info.total_steps, info.steps_per_epoch))
        original(self, model, info)

    monkeypatch.setattr(BYOL, "end_step", end_step)
    full = _config(tmp_path, "full")
    train(full, loader=_loader(full))
    assert seen == [(s, 8, 4) for s in range(8)]
    part = _config(tmp_path, "part", max_steps=5)  # stops mid-epoch 1
    train(part, loader=_loader(part))
    resumed = part.replace(max_steps=0, resume=True)
    assert train(resumed, loader=_loader(resumed)).steps == 8
    # the resumed run's schedule continues where it stopped (max_steps changes nothing)
    assert seen[8:] == [(s, 8, 4) for s in range(5)] + [(s, 8, 4) for s in range(5, 8)]
    for file in ("online", "teacher", "backbone"):
        a = load_file(str(tmp_path / "full" / f"{file}.safetensors"))
        b = load_file(str(tmp_path / "part" / f"{file}.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=f"{file} {key}")
    online = load_file(str(tmp_path / "full" / "online.safetensors"))
    teacher = load_file(str(tmp_path / "full" / "teacher.safetensors"))
    backbone = load_file(str(tmp_path / "full" / "backbone.safetensors"))
    assert all(torch.equal(backbone[k], online[k]) for k in online)  # BYOL evaluates online
    assert not torch.equal(online["conv1.weight"], teacher["conv1.weight"])


def test_export_either_network(tmp_path):
    config = _config(tmp_path, max_steps=2)
    train(config, loader=_loader(config))
    for network in ("online", "teacher"):
        out = tmp_path / f"{network}.st"
        result = CliRunner().invoke(main, ["export", config.out, "--out", str(out),
                                           "--network", network])
        assert result.exit_code == 0, result.output
        written = load_file(str(out))
        expected = load_file(str(tmp_path / "run" / f"{network}.safetensors"))
        assert all(torch.equal(written[k], expected[k]) for k in expected)
        backbone = create_backbone("resnet18")
        backbone.load_state_dict(written)  # a plain timm state dict, every key
    default = CliRunner().invoke(main, ["export", config.out, "--out", str(tmp_path / "d.st")])
    assert default.exit_code == 0
    assert torch.equal(load_file(str(tmp_path / "d.st"))["conv1.weight"],
                       load_file(str(tmp_path / "online.st"))["conv1.weight"])


def test_a_model_without_a_teacher_has_only_the_online_network():
    task = sslpipe.create_task("rotation", size=32)
    backbone = create_backbone("resnet18")
    model = task.build(backbone)
    assert network_prefixes(model, backbone) == {"online": "backbone"}
    with pytest.raises(ValueError, match="no momentum teacher"):
        network_prefixes(model, backbone, "teacher")
    byol = sslpipe.create_task("byol", **OPTIONS)
    backbone = create_backbone("resnet18")
    assert network_prefixes(byol.build(backbone), backbone) == {
        "online": "encoders.online.backbone", "teacher": "encoders.target.backbone"}


def test_the_memory_check_counts_a_teacher():
    task = sslpipe.create_task("byol", **OPTIONS)
    model = task.build(create_backbone("resnet18", small_input=True))
    fp = measure(task, model, None, "sgd", 0.9)
    trainable = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() * 4 for p in model.encoders.target.parameters())
    assert frozen > 0 and fp.state == 2 * trainable  # gradient + momentum, online only
    assert fp.teacher > 0 and fp.need(8) - fp.need(4) > 4 * fp.teacher
    simclr = sslpipe.create_task("simclr", size=32, hidden_dim=32, projection_dim=16)
    assert measure(simclr, simclr.build(create_backbone("resnet18", small_input=True)),
                   None, "sgd", 0.9).teacher == 0
