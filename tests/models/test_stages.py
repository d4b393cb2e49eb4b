"""Named stages and freeze_until."""

from __future__ import annotations

import pytest
import torch

from sslpipe.models import create_backbone, freeze_until, resolve_stage


def test_stage_aliases():
    resnet = create_backbone("resnet18")
    assert resolve_stage(resnet, "stage2") == resolve_stage(resnet, "layer2") == "layer2"
    alexnet = create_backbone("alexnet_bn")
    assert resolve_stage(alexnet, "stage3") == "conv3"
    with pytest.raises(ValueError, match="unknown stage 'conv9'.*conv5"):
        resolve_stage(alexnet, "conv9")


@pytest.mark.parametrize("arch,stage,frozen,trainable", [
    ("resnet18", "layer2", ["conv1.", "bn1.", "layer1.", "layer2."], ["layer3.", "layer4."]),
    ("alexnet_bn", "conv3", ["conv1.", "conv2.", "conv3."], ["conv4.", "conv5."]),
])
def test_freeze_until(arch, stage, frozen, trainable):
    model = create_backbone(arch, small_input=True)
    freeze_until(model, stage)
    for name, p in model.named_parameters():
        if any(name.startswith(f) for f in frozen):
            assert not p.requires_grad, name
        if any(name.startswith(t) for t in trainable):
            assert p.requires_grad, name
    # frozen BatchNorm keeps its running statistics in train mode
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    model.train()(torch.randn(4, 3, 32, 32) * 3 + 1)
    after = model.state_dict()
    for key, value in before.items():
        unchanged = torch.equal(value, after[key])
        assert unchanged == any(key.startswith(f) for f in frozen), key
