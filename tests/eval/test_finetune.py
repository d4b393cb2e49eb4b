"""Fine-tuning trains what is not frozen and leaves the frozen stages untouched."""

from __future__ import annotations

import pytest
import timm
import torch

from sslpipe.eval.finetune import FinetuneOptions, finetune, finetune_steps
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


@pytest.mark.parametrize(("per_epoch", "expected"), [(5, 150), (47, 235), (469, 470), (1, 150)])
def test_epochs_bounded_by_min_and_max_steps(per_epoch: int, expected: int) -> None:
    """The docstring's budget sweep: 600 / 6,000 / 60,000 labels in batches of 128."""
    options = FinetuneOptions(epochs=5, min_steps=150, max_steps=470)
    assert finetune_steps(options, per_epoch) == expected
    assert finetune_steps(FinetuneOptions(epochs=5), per_epoch) == 5 * per_epoch
    assert finetune_steps(FinetuneOptions(epochs=5, steps=7), per_epoch) == 7


def test_min_steps_trains_that_many_steps() -> None:
    """Two batches per pass and min_steps=5: three passes, the last cut short."""
    backbone = timm.create_model("resnet18", num_classes=0)
    result = finetune(backbone, _batches(2), _batches(1),
                      FinetuneOptions(epochs=1, min_steps=5, lr=0.01), device="cpu")
    assert result["steps"] == 5 and result["images"] == 20


@pytest.mark.parametrize("options", [{"steps": 3, "min_steps": 2}, {"steps": 3, "max_steps": 9},
                                     {"min_steps": 9, "max_steps": 3}, {"min_steps": 0}])
def test_bad_step_bounds_are_named(options: dict) -> None:
    with pytest.raises(ValueError, match="steps"):
        FinetuneOptions(**options)
