"""Resolving --checkpoint: run directories, weight files, random and supervised baselines."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from sslpipe.eval.baselines import build_backbone, resolve_checkpoint


def _run_dir(path, task: str):
    path.mkdir()
    torch.manual_seed(2)
    state = timm.create_model("resnet18", num_classes=0).state_dict()
    save_file(state, str(path / "backbone.safetensors"), metadata={"arch": "resnet18"})
    (path / "config.json").write_text(json.dumps({"task": task, "arch": "resnet18",
                                                 "small_input": False, "seed": 4}))
    return state


def test_run_dir_gives_its_task_arch_and_weights(tmp_path) -> None:
    state = _run_dir(tmp_path / "run", "rotation")
    info = resolve_checkpoint(str(tmp_path / "run"))
    assert (info.method, info.arch, info.pretrain["seed"]) == ("rotation", "resnet18", 4)
    assert len(info.sha256) == 64
    backbone = build_backbone(info)
    assert torch.equal(backbone.state_dict()["conv1.weight"], state["conv1.weight"])


def test_supervised_baseline_checks_the_task(tmp_path) -> None:
    _run_dir(tmp_path / "sup", "supervised")
    assert resolve_checkpoint(f"supervised:{tmp_path / 'sup'}").method == "supervised"
    _run_dir(tmp_path / "rot", "rotation")
    with pytest.raises(ValueError, match="not 'supervised'"):
        resolve_checkpoint(f"supervised:{tmp_path / 'rot'}")


def test_random_is_seeded_and_needs_arch() -> None:
    a = build_backbone(resolve_checkpoint("random", "resnet18"), seed=1)
    b = build_backbone(resolve_checkpoint("random", "resnet18"), seed=1)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    with pytest.raises(ValueError, match="--arch"):
        resolve_checkpoint("random")


def test_missing_or_ambiguous_weights(tmp_path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nope"), "resnet18")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="backbone.safetensors"):
        resolve_checkpoint(str(tmp_path / "empty"), "resnet18")
