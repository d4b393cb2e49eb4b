"""alexnet_bn is a timm model: created by name, timm interface, pretrained loading from a file."""

from __future__ import annotations

import timm
import torch
from safetensors.torch import save_file

import sslpipe  # noqa: F401  (registers alexnet_bn)


def test_creatable_by_name_from_timm():
    assert "alexnet_bn" in timm.list_models("alexnet*")
    model = timm.create_model("alexnet_bn", num_classes=0)
    assert model.num_features == 256
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 256)
    assert model.forward_features(torch.randn(1, 3, 224, 224)).shape == (1, 256, 6, 6)
    assert [f["module"] for f in model.feature_info] == [f"conv{i}" for i in range(1, 6)]
    model.reset_classifier(7)
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 7)


def test_small_input_keeps_32px_resolution():
    model = timm.create_model("alexnet_bn", num_classes=0, small_input=True)
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 256, 7, 7)


def test_pretrained_file_loads_with_plain_timm(tmp_path):
    source = timm.create_model("alexnet_bn", num_classes=0).eval()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = timm.create_model("alexnet_bn", pretrained=True, num_classes=0,
                               pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))


def test_import_sslpipe_registers_alexnet_bn():
    import subprocess
    import sys

    code = ("import sslpipe, timm; "
            "print(timm.create_model('alexnet_bn', num_classes=0).num_features)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "256"
