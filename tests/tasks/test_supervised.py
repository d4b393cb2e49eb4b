"""Supervised baseline task: RRC + flip on labelled samples, linear classifier, cross-entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sslpipe
from sslpipe.ops.color import normalize
from sslpipe.ops.geometry import hflip, resized_crop


def _samples(n=6, size=40):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return [(images[i], i % 3) for i in range(n)], images


def test_batch_replays_from_meta():
    task = sslpipe.create_task("supervised", num_classes=3, size=24)
    samples, images = _samples()
    batch = task.collator(samples, generator=torch.Generator().manual_seed(1))
    assert batch.inputs.shape == (6, 3, 24, 24) and batch.inputs.dtype == torch.float32
    assert batch.labels.tolist() == [0, 1, 2, 0, 1, 2] and torch.equal(batch.targets, batch.labels)
    replay = normalize(hflip(resized_crop(images, batch.meta["boxes"], 24), batch.meta["flip"]))
    torch.testing.assert_close(batch.inputs, replay)
    again = task.collator(samples, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.inputs, batch.inputs)


def test_samples_without_labels_are_an_error():
    task = sslpipe.create_task("supervised", num_classes=3, size=24)
    _, images = _samples()
    with pytest.raises(ValueError, match="needs \\(image, label\\) samples"):
        task.collator(images)
    with pytest.raises(ValueError, match="labels must be in 0..1"):
        sslpipe.create_task("supervised", num_classes=2, size=24).collator(_samples()[0])


def test_model_and_loss_are_linear_classifier_and_cross_entropy():
    from sslpipe.models import create_backbone

    task = sslpipe.create_task("supervised", num_classes=3, size=32)
    model = task.build(create_backbone("resnet18"))
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 3
    batch = task.collator(_samples()[0], generator=torch.Generator().manual_seed(0))
    logits = model.eval()(batch.inputs)
    expected = -torch.log_softmax(logits, 1)[torch.arange(6), batch.labels].mean()
    torch.testing.assert_close(task.loss(logits, batch), expected)
    torch.testing.assert_close(task.loss(logits, batch), F.cross_entropy(logits, batch.labels))


def test_options_are_checked():
    with pytest.raises(ValueError, match="crop_scale"):
        sslpipe.create_task("supervised", crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="num_classes must be > 0"):
        sslpipe.create_task("supervised", num_classes=0)
