"""Fine-tuning trains what is not frozen and leaves the frozen stages untouched."""

from __future__ import annotations

import timm
import torch

from sslpipe.eval.finetune import FinetuneOptions, finetune
from sslpipe.eval.transform import EvalCollator


def _batches(n: int = 2) -> list:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n * 4, 3, 32, 32), dtype=torch.uint8, generator=gen)
    collate = EvalCollator(32)
    return [collate([(images[i], i % 3) for i in range(b * 4, b * 4 + 4)]) for b in range(n)]


def test_freeze_until_stage2_trains_only_the_rest() -> None:
    torch.manual_seed(0)
    backbone = timm.create_model("resnet18", num_classes=0)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    result = finetune(backbone, _batches(), _batches(1), FinetuneOptions(freeze="stage2",
                      epochs=2, lr=0.1), device="cpu")
    after = backbone.state_dict()
    assert result["steps"] == 4 and result["top5"] >= result["top1"]
    assert result["frozen"][-1] == "layer2"
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer2.1.bn2.running_mean"):
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["layer4.1.conv2.weight"], after["layer4.1.conv2.weight"])
    assert not any(p.requires_grad for p in backbone.layer2.parameters())


def test_no_freeze_trains_the_stem() -> None:
    torch.manual_seed(0)
    backbone = timm.create_model("resnet18", num_classes=0)
    stem = backbone.conv1.weight.detach().clone()
    finetune(backbone, _batches(1), _batches(1), FinetuneOptions(epochs=1, lr=0.1),
             num_classes=3, device="cpu")
    assert not torch.equal(stem, backbone.conv1.weight)


def test_finetune_training_data_is_reshuffled_every_epoch():
    """finetune reads shard directories through create_loader with TrainCollator: each epoch
    sees the samples in a new (seeded) order, and the same seed gives the same order."""
    from sslpipe.data import create_loader, sample_path
    from sslpipe.eval.transform import TrainCollator

    def order(epoch: int) -> list[int]:
        loader = create_loader(sample_path("test"), TrainCollator(16, seed=0), 250,
                               num_workers=0, seed=0, drop_last=False)
        loader.set_epoch(epoch)
        return [int(x) for b in loader for x in b.labels]

    first, second = order(0), order(1)
    assert sorted(first) == sorted(second) and len(first) == 1000
    assert first != second
    assert order(0) == first
