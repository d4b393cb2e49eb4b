"""Per-layer frozen features: documented dimensions, layer names, the on-disk cache."""

from __future__ import annotations

import pytest
import timm
import torch
from torch.utils.data import DataLoader

from sslpipe.eval.features import extract_features, layer_names, parse_layers, pooled_grid
from sslpipe.eval.transform import EvalCollator


def _loader(n: int = 6, side: int = 28, batch_size: int = 4, size: int = 32) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, side, side), dtype=torch.uint8, generator=gen)
    samples = [(images[i], i % 3) for i in range(n)]
    return DataLoader(samples, batch_size=batch_size, collate_fn=EvalCollator(size))


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=0)


def test_resnet18_dims_at_32px(resnet: torch.nn.Module) -> None:
    feats = extract_features(resnet, _loader(), "all", device="cpu")
    dims = {name: int(x.shape[1]) for name, x in feats.features.items()}
    assert dims == {"stage0": 9216, "stage1": 4096, "stage2": 2048, "stage3": 1024,
                    "stage4": 512, "pooled": 512}
    assert all(x.dtype == torch.float16 and x.shape[0] == 6 for x in feats.features.values())
    assert feats.labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_pooled_layer_equals_backbone_output(resnet: torch.nn.Module) -> None:
    loader = _loader()
    feats = extract_features(resnet, loader, "stage2,pooled", device="cpu")
    with torch.no_grad():
        expected = torch.cat([resnet.eval()(b.inputs) for b in loader])
    torch.testing.assert_close(feats.features["pooled"].float(), expected, rtol=1e-2, atol=1e-3)


def test_layer_names_and_aliases(resnet: torch.nn.Module) -> None:
    assert layer_names(resnet)[-1] == "pooled"
    assert parse_layers("last", resnet) == ["pooled"]
    assert parse_layers("layer2, stem, stage2", resnet) == ["stage2", "stage0"]
    with pytest.raises(ValueError, match="stage9"):
        parse_layers("stage9", resnet)


def test_grid_rule() -> None:
    assert pooled_grid(64, 16, 16, 9216) == (12, 12)
    assert pooled_grid(512, 7, 7, 9216) == (4, 4)
    assert pooled_grid(256, 13, 13, 1) == (1, 1)


@pytest.fixture(scope="module")
def vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8,
                             depth=2)


def _block_tokens(vit: torch.nn.Module, loader: DataLoader, block: int) -> torch.Tensor:
    """The raw B x N x C output of ``blocks[block]``, read with a hook (not LayerTaps)."""
    seen: list[torch.Tensor] = []
    handle = vit.blocks[block].register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        for batch in loader:
            vit.eval()(batch.inputs)
    handle.remove()
    return torch.cat(seen)


def test_vit_blocks_give_class_token_and_mean_of_patch_tokens(vit: torch.nn.Module) -> None:
    loader = _loader(4)
    feats = extract_features(vit, loader, "stage1,stage2,pooled", device="cpu")
    # the documented shapes: 2C per block (class token, then the mean of the 16 patch tokens)
    assert feats.features["stage1"].shape == (4, 2 * 192)
    assert feats.features["stage2"].shape == (4, 2 * 192)
    assert feats.features["pooled"].shape == (4, 192)
    tokens = _block_tokens(vit, loader, 1)
    assert tokens.shape == (4, 1 + 16, 192)
    expected = torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], 1)
    torch.testing.assert_close(feats.features["stage2"].float(), expected, rtol=1e-2, atol=2e-3)


@pytest.mark.parametrize(("mode", "width"), [("cls", 192), ("mean", 192), ("grid", 192 * 16)])
def test_vit_token_modes(vit: torch.nn.Module, mode: str, width: int) -> None:
    loader = _loader(4)
    feats = extract_features(vit, loader, "stage1", device="cpu", tokens=mode)
    assert feats.features["stage1"].shape == (4, width)
    tokens = _block_tokens(vit, loader, 0)
    if mode == "cls":
        torch.testing.assert_close(feats.features["stage1"].float(), tokens[:, 0],
                                   rtol=1e-2, atol=2e-3)
    if mode == "grid":  # the class token dropped, 16 patch tokens on their 4x4 grid
        grid = tokens[:, 1:].transpose(1, 2).reshape(4, 192 * 16)
        torch.testing.assert_close(feats.features["stage1"].float(), grid, rtol=1e-2, atol=2e-3)


def test_a_vit_as_create_backbone_makes_it_is_probed_at_any_size(vit: torch.nn.Module) -> None:
    """create_backbone lets every ViT take any size (a ViT trained at 64 px is evaluated at
    --size 64): the same per-block features at its own size, and a finer grid at 48 px."""
    import copy

    from sslpipe.models.vit import accept_any_size

    dynamic = accept_any_size(copy.deepcopy(vit))
    fixed = extract_features(vit, _loader(4), "stage1,pooled", device="cpu")
    same = extract_features(dynamic, _loader(4), "stage1,pooled", device="cpu")
    for layer in ("stage1", "pooled"):
        torch.testing.assert_close(same.features[layer], fixed.features[layer])
    larger = extract_features(dynamic, _loader(4, size=48), "stage1,pooled", device="cpu")
    assert larger.features["stage1"].shape == (4, 2 * 192)  # class token + mean of 6 x 6
    with pytest.raises(AssertionError):  # what a ViT built for 32 px did before
        extract_features(vit, _loader(4, size=48), "stage1", device="cpu")


def test_vit_without_class_token_uses_the_mean() -> None:
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8,
                            depth=1, class_token=False, global_pool="avg")
    feats = extract_features(vit, _loader(4), "stage1", device="cpu")
    assert feats.features["stage1"].shape == (4, 192)
    with pytest.raises(ValueError, match="tokens"):
        extract_features(vit, _loader(4), "stage1", device="cpu", tokens="first")


def test_cache_reads_back_without_running_the_model(resnet: torch.nn.Module, tmp_path) -> None:
    key = {"checkpoint": "abc", "data": "def"}
    first = extract_features(resnet, _loader(), "stage3,pooled", cache_dir=tmp_path,
                             cache_key=key, device="cpu")
    assert len(list(tmp_path.glob("*.pt"))) == 2

    class Broken(torch.nn.Module):
        feature_info = resnet.feature_info

        def forward(self, x):  # noqa: ANN001, ANN202
            raise AssertionError("the cache should have answered")

    again = extract_features(Broken(), _loader(), "stage3,pooled", cache_dir=tmp_path,
                             cache_key=key, device="cpu")
    for name in first.features:
        assert torch.equal(first.features[name], again.features[name])
    other = extract_features(resnet, _loader(), "stage3", pool=64, cache_dir=tmp_path,
                             cache_key=key, device="cpu")
    assert other.features["stage3"].shape[1] == 256  # another pool is another cache entry
    assert not list(tmp_path.glob("*.tmp"))


def test_batches_without_labels_are_refused(resnet: torch.nn.Module) -> None:
    from sslpipe import Batch

    with pytest.raises(ValueError, match="labels"):
        extract_features(resnet, [Batch(torch.zeros(2, 3, 32, 32))], device="cpu")
