"""create_backbone: timm names, close-match errors, the small-input stem."""

from __future__ import annotations

import pytest
import torch

from sslpipe.models import create_backbone


def test_timm_backbone_without_classifier():
    model = create_backbone("resnet18")
    assert model.num_features == 512
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 512)


def test_unknown_arch_lists_close_matches():
    with pytest.raises(ValueError, match="unknown timm architecture 'resnet19'.*resnet18"):
        create_backbone("resnet19")
    # a family's prefix lists the family, not names spelled alike from other families
    with pytest.raises(ValueError, match="Did you mean: vit_tiny_patch4_32, vit_tiny_patch16"):
        create_backbone("vit_tiny")


@pytest.mark.parametrize("arch", ["resnet18", "resnet18d"])
def test_small_input_stem_keeps_resolution(arch):
    model = create_backbone(arch, small_input=True).eval()
    full = create_backbone(arch).eval()
    x = torch.randn(1, 3, 32, 32)
    small_map = model.forward_features(x).shape[-1]
    assert small_map > full.forward_features(x).shape[-1]
    if arch.startswith("resnet"):
        assert small_map == 32 // 8  # stride 1 stem, no max-pool: only layers 2-4 downsample


def test_small_input_unsupported_arch_is_a_clear_error():
    with pytest.raises(ValueError, match="small_input.*vit_tiny_patch16_224"):
        create_backbone("vit_tiny_patch16_224", small_input=True)


def test_checkpoint_loads_small_input_weights(tmp_path):
    from safetensors.torch import save_file

    source = create_backbone("resnet18", small_input=True).eval()
    path = tmp_path / "b.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = create_backbone("resnet18", small_input=True, checkpoint=str(path)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))
    with pytest.raises(ValueError, match="does not fit"):
        create_backbone("resnet34", checkpoint=str(path))
