"""RotNet's network-in-network: per-block shapes of 3, 4 and 5 blocks, timm registration, and
the per-layer probes over its blocks."""

from __future__ import annotations

import pytest
import timm
import torch

import sslpipe  # noqa: F401  (registers the nin_* models)
from sslpipe.eval.features import LayerTaps, layer_names
from sslpipe.models import create_backbone, freeze_until, stage_names
from sslpipe.models.nin import nin_block_shapes

# (C, H, W) of each block at 32 px: the table of sslpipe/models/nin.py's docstring
EXPECTED_32 = {
    3: [(96, 16, 16), (192, 8, 8), (192, 8, 8)],
    4: [(96, 16, 16), (192, 8, 8), (192, 4, 4), (192, 4, 4)],
    5: [(96, 16, 16), (192, 8, 8), (192, 4, 4), (192, 4, 4), (192, 4, 4)],
}


def _block_outputs(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    outs = []
    for i in range(1, model.num_blocks + 1):  # type: ignore[operator]
        x = getattr(model, f"block{i}")(x)
        outs.append(x)
    return outs


@pytest.mark.parametrize("blocks", [3, 4, 5])
def test_block_shapes_match_the_documented_table(blocks: int) -> None:
    model = timm.create_model(f"nin_{blocks}block", num_classes=0).eval()
    with torch.no_grad():
        outs = _block_outputs(model, torch.randn(2, 3, 32, 32))
        pooled = model(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outs] == EXPECTED_32[blocks]
    assert nin_block_shapes(blocks, 32) == EXPECTED_32[blocks]
    assert pooled.shape == (2, 192) and model.num_features == 192
    assert [f["module"] for f in model.feature_info] == [f"block{i}"
                                                         for i in range(1, blocks + 1)]
    assert [f["reduction"] for f in model.feature_info] == [32 // s[1] for s in
                                                            EXPECTED_32[blocks]]


@pytest.mark.parametrize("blocks", [3, 5])
def test_shapes_at_28_px_and_half_width(blocks: int) -> None:
    model = create_backbone(f"nin_{blocks}block", width=0.5).eval()
    with torch.no_grad():
        outs = _block_outputs(model, torch.randn(1, 3, 28, 28))
    assert [tuple(o.shape[1:]) for o in outs] == nin_block_shapes(blocks, 28, 0.5)
    assert tuple(outs[0].shape[1:]) == (48, 14, 14)


def test_paper_layout_of_each_block() -> None:
    model = timm.create_model("nin_4block", num_classes=10)
    for i in range(1, 5):
        convs = [m for m in getattr(model, f"block{i}") if isinstance(m, torch.nn.Conv2d)]
        kernels = [c.kernel_size[0] for c in convs]
        assert kernels == [5 if i <= 2 else 3, 1, 1]
        assert all(c.stride == (1, 1) and c.bias is None for c in convs)
        assert convs[0].out_channels == 192
    pools = [type(m).__name__ for i in range(1, 5) for m in getattr(model, f"block{i}")
             if isinstance(m, (torch.nn.MaxPool2d, torch.nn.AvgPool2d))]
    assert pools == ["MaxPool2d", "AvgPool2d", "AvgPool2d"]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_fewer_than_three_blocks_is_refused() -> None:
    from sslpipe.models.nin import NetworkInNetwork

    with pytest.raises(ValueError, match="num_blocks"):
        NetworkInNetwork(num_blocks=2)


def test_small_input_leaves_nin_as_it_is() -> None:
    torch.manual_seed(0)
    plain = create_backbone("nin_3block")
    torch.manual_seed(0)
    small = create_backbone("nin_3block", small_input=True)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(),
                                                  small.state_dict().values()))


@pytest.mark.parametrize("blocks", [3, 4, 5])
def test_per_block_probes_see_every_block(blocks: int) -> None:
    model = create_backbone(f"nin_{blocks}block", width=0.25).eval()
    names = layer_names(model)
    assert names == [f"stage{i}" for i in range(1, blocks + 1)] + ["pooled"]
    assert stage_names(model)["stage2"] == "block2"
    taps = LayerTaps(model, names, pool=1)
    with torch.no_grad():
        feats = taps(torch.randn(3, 3, 32, 32))
    widths = [c for c, _, _ in nin_block_shapes(blocks, 32, 0.25)]
    assert [feats[f"stage{i}"].shape for i in range(1, blocks + 1)] == [
        (3, w) for w in widths]
    assert feats["pooled"].shape == (3, widths[-1])


def test_freeze_until_a_block() -> None:
    model = create_backbone("nin_4block", width=0.25)
    assert freeze_until(model, "stage2") == ["block1", "block2"]
    assert not any(p.requires_grad for p in model.block2.parameters())
    assert all(p.requires_grad for p in model.block3.parameters())


def test_linear_probe_per_block_on_the_sample() -> None:
    from sslpipe.data import sample_path
    from sslpipe.eval.labels import LabeledSplit, SampleBatches
    from sslpipe.eval.linear import LinearOptions
    from sslpipe.eval.probes import linear_probe
    from sslpipe.eval.transform import EvalCollator

    def few(split: str, n: int) -> SampleBatches:
        data = LabeledSplit(sample_path(split))
        samples = data.samples(range(n))
        return SampleBatches([samples[i] for i in range(n)], EvalCollator(16), 50)

    model = create_backbone("nin_5block", width=0.25)
    out = linear_probe(model, few("train", 100), few("test", 50), layers="all", pool=64,
                       options=LinearOptions(epochs=2), size=16, device="cpu")
    assert list(out) == [f"stage{i}" for i in range(1, 6)] + ["pooled"]
    assert all(0 <= v["top1"] <= 100 for v in out.values())


@pytest.mark.parametrize("blocks", [3, 4, 5])
def test_half_width_networks_are_registered_for_every_depth(blocks: int) -> None:
    half = timm.create_model(f"nin_{blocks}block_w50", num_classes=0).eval()
    full = timm.create_model(f"nin_{blocks}block", num_classes=0)
    assert half.num_features == 96 and full.num_features == 192
    assert {f"block{i}" for i in range(1, blocks + 1)} <= set(stage_names(half))
    assert f"block{blocks + 1}" not in stage_names(half)
    with torch.no_grad():
        assert half(torch.zeros(2, 3, 28, 28)).shape == (2, 96)
    # a quarter of the weights of the paper's network, give or take the input layer
    ratio = sum(p.numel() for p in half.parameters()) / sum(p.numel() for p in full.parameters())
    assert 0.2 < ratio < 0.3
