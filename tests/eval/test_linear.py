"""Linear probes on features of known structure."""

from __future__ import annotations

import pytest
import torch

from sslpipe.eval.linear import LinearOptions, topk_accuracy, train_linear


def _clusters(n: int, dim: int = 32, classes: int = 10, seed: int = 0):
    """Gaussian blobs around fixed class centres (the same for every ``seed``)."""
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 4
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(classes, (n,), generator=gen)
    return centers[y] + torch.randn(n, dim, generator=gen), y


def test_separable_features_reach_full_accuracy() -> None:
    x, y = _clusters(400)
    xt, yt = _clusters(200, seed=1)
    result = train_linear(x.half(), y, xt.half(), yt, LinearOptions(epochs=10, batch_size=64))
    assert result["top1"] >= 99.0
    assert result["top5"] >= result["top1"]


def test_unstructured_labels_stay_at_chance() -> None:
    gen = torch.Generator().manual_seed(3)
    x, xt = torch.randn(500, 32, generator=gen), torch.randn(1000, 32, generator=gen)
    y, yt = torch.randint(10, (500,), generator=gen), torch.randint(10, (1000,), generator=gen)
    result = train_linear(x, y, xt, yt, LinearOptions(epochs=10, batch_size=100))
    assert 4.0 <= result["top1"] <= 17.0  # chance is 10%
    assert 35.0 <= result["top5"] <= 65.0  # chance is 50%
    assert result["top5"] >= result["top1"]


def test_weight_decay_sweep_returns_one_of_the_candidates() -> None:
    x, y = _clusters(300)
    result = train_linear(x, y, x, y, LinearOptions(epochs=3, weight_decays=(0.0, 1e-3, 10.0)))
    assert result["weight_decay"] in (0.0, 1e-3)  # 10.0 shrinks the classifier to nothing


def test_topk_accuracy_hand_case() -> None:
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    labels = torch.tensor([0, 1, 2])
    # row 0: top-1 hit; row 1: label 1 is second; row 2: label 2 is last
    assert topk_accuracy(logits, labels, ks=(1, 2, 5)) == {"top1": 33.33, "top2": 66.67,
                                                           "top5": 100.0}


def test_bad_inputs_name_the_argument() -> None:
    x, y = _clusters(20)
    with pytest.raises(ValueError, match="same width"):
        train_linear(x, y, x[:, :5], y)
    with pytest.raises(ValueError, match="train features"):
        train_linear(x, y[:3], x, y)
    with pytest.raises(ValueError, match="epochs"):
        LinearOptions(epochs=0)
