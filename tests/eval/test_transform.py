"""Evaluation collators: deterministic test view, seeded training augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslpipe.eval.transform import EvalCollator, TrainCollator
from sslpipe.ops.color import denormalize


def test_grayscale_28px_becomes_3x32() -> None:
    image = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    batch = EvalCollator(32)([(image, 3), (image, 5)])
    assert batch.inputs.shape == (2, 3, 32, 32) and batch.inputs.dtype == torch.float32
    assert batch.labels.tolist() == [3, 5] and batch.targets is None
    rgb = denormalize(batch.inputs[0])
    torch.testing.assert_close(rgb[0], rgb[1], atol=1e-5, rtol=0)  # the 3 channels agree


def test_centre_square_of_non_square_images() -> None:
    image = torch.zeros(3, 20, 40, dtype=torch.uint8)
    image[:, :, 10:30] = 255  # the centre square is white, the sides black
    batch = EvalCollator(16)([image])
    assert torch.allclose(denormalize(batch.inputs[0]), torch.ones(3, 16, 16), atol=1e-5)


def test_train_collator_is_seeded_and_augments() -> None:
    images = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    a, b = TrainCollator(32, seed=1)(images), TrainCollator(32, seed=1)(images)
    torch.testing.assert_close(a.inputs, b.inputs)
    assert not torch.allclose(a.inputs, EvalCollator(32)(images).inputs)
    assert a.meta["boxes"].shape == (4, 4)


def test_bad_size() -> None:
    with pytest.raises(ValueError, match="size"):
        EvalCollator(0)
