"""Token helpers of tasks.heads: patch rows as the official MAE lays them out, the class token
and the mean of the patch tokens, tokens folded back to their grid."""

from __future__ import annotations

import pytest
import timm
import torch

from sslpipe.tasks.heads import feature_map, patchify, pool_tokens, split_tokens, unpatchify


def test_patchify_is_the_official_layout_and_unpatchify_undoes_it() -> None:
    x = torch.randn(2, 3, 8, 12)
    rows = patchify(x, 4)
    assert rows.shape == (2, 6, 48)
    # facebookresearch/mae models_mae.py: einsum('nchpwq->nhwpqc'), reshape to N x L x p*p*3
    official = torch.einsum("nchpwq->nhwpqc", x.reshape(2, 3, 2, 4, 3, 4)).reshape(2, 6, 48)
    assert torch.equal(rows, official)
    # patch (row 1, column 2) holds the pixels x[:, :, 4:8, 8:12], channel last
    patch = x[:, :, 4:8, 8:12].permute(0, 2, 3, 1)
    assert torch.equal(rows[:, 1 * 3 + 2].reshape(2, 4, 4, 3), patch)
    assert torch.equal(unpatchify(rows, 4, (2, 3)), x)
    with pytest.raises(ValueError, match="patch_size"):
        patchify(torch.zeros(1, 3, 10, 8), 4)


def test_pool_tokens_reads_class_and_patch_tokens() -> None:
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1,
                            num_classes=0, reg_tokens=2)
    tokens = torch.randn(3, 3 + 16, 192)
    prefix, patches = split_tokens(vit, tokens)
    assert prefix.shape == (3, 3, 192) and patches.shape == (3, 16, 192)
    assert torch.equal(pool_tokens(vit, tokens, "cls"), tokens[:, 0])
    assert torch.equal(pool_tokens(vit, tokens, "mean"), tokens[:, 3:].mean(1))
    both = pool_tokens(vit, tokens, "cls+mean")
    assert both.shape == (3, 384) and torch.equal(both[:, 192:], tokens[:, 3:].mean(1))
    bare = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1,
                             num_classes=0, class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="class token"):
        pool_tokens(bare, torch.randn(3, 16, 192), "cls")


def test_feature_map_folds_vit_tokens_to_the_patch_grid() -> None:
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1,
                            num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fmap = feature_map(vit, x)
        tokens = vit.forward_features(x)
    assert fmap.shape == (2, 192, 4, 4)
    assert torch.equal(fmap[:, :, 1, 2], tokens[:, 1 + 1 * 4 + 2])  # class token left out
