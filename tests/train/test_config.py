"""TrainConfig: defaults, files, merging, task options."""

from __future__ import annotations

import pytest

from sslpipe.train import TrainConfig, load_config, parse_task_options
from sslpipe.train.config import merge


def test_task_options_are_typed():
    parsed = parse_task_options(["size=32", "crop_scale=[0.2, 1.0]", "head=mlp", "flip=0.5",
                                 "jigsaw.grid=3", "jitter=false"])
    assert parsed == {"size": 32, "crop_scale": (0.2, 1.0), "head": "mlp", "flip": 0.5,
                      "jigsaw": {"grid": 3}, "jitter": False}
    with pytest.raises(ValueError, match="key=value. Got 'size'"):
        parse_task_options(["size"])


@pytest.mark.parametrize("suffix,text", [
    (".yaml", "arch: resnet18\nepochs: 5\ntask_options: {size: 32}\nstep_epochs: [2, 4]\n"),
    (".toml", 'arch = "resnet18"\nepochs = 5\nstep_epochs = [2, 4]\n[task_options]\nsize = 32\n'),
])
def test_yaml_and_toml_files(tmp_path, suffix, text):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    config = load_config(path)
    assert (config.arch, config.epochs, config.task_options) == ("resnet18", 5, {"size": 32})
    assert config.step_epochs == (2.0, 4.0) and config.lr == TrainConfig().lr
    merged = merge(config, {"task_options": {"mode": "random"}, "lr": 0.3})
    assert merged.task_options == {"size": 32, "mode": "random"} and merged.lr == 0.3


def test_bad_values():
    with pytest.raises(ValueError, match="unknown key\\(s\\) lrr"):
        merge(TrainConfig(), {"lrr": 1})
    with pytest.raises(ValueError, match="divisible by the number of processes \\(4\\). Got 10"):
        TrainConfig(batch_size=10, procs=4)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="epochs must be > 0"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match=r"cpu_decode_share must be in \[0, 1\]. Got 1.3"):
        TrainConfig(cpu_decode_share=1.3)
    with pytest.raises(ValueError, match=r"hw_decoder_load must be in \[0, 1\]"):
        TrainConfig(hw_decoder_load=-0.1)


def test_config_is_frozen_and_round_trips():
    config = TrainConfig(task_options={"size": 32}, step_epochs=(1.0,))
    with pytest.raises(AttributeError):
        config.lr = 1.0  # type: ignore[misc]
    assert merge(TrainConfig(), config.to_dict()) == config
