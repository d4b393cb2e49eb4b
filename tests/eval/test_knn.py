"""Weighted kNN against a brute-force reference."""

from __future__ import annotations

import math

import pytest
import torch

from sslpipe.eval.knn import knn_accuracy, knn_scores


def _reference(train_x, train_y, test_x, k, t, classes):
    out = torch.zeros(len(test_x), classes, dtype=torch.float64)
    for i, q in enumerate(test_x.double()):
        sims = []
        for j, b in enumerate(train_x.double()):
            cos = float(q @ b / (q.norm() * b.norm()))
            sims.append((cos, j))
        sims.sort(reverse=True)
        for cos, j in sims[:k]:
            out[i, int(train_y[j])] += math.exp(cos / t)
    return out


@pytest.mark.parametrize("k", [1, 5, 200])
def test_scores_equal_brute_force(k: int) -> None:
    gen = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(60, 8, generator=gen), torch.randn(13, 8, generator=gen)
    train_y = torch.randint(4, (60,), generator=gen)
    scores = knn_scores(train_x, train_y, test_x, k=k, temperature=0.1, num_classes=4, chunk=5)
    ref = _reference(train_x, train_y, test_x, min(k, 60), 0.1, 4)
    torch.testing.assert_close(scores.double(), ref, rtol=1e-4, atol=1e-3)


def test_scale_invariance_and_accuracy() -> None:
    gen = torch.Generator().manual_seed(1)
    centers = torch.randn(5, 16, generator=gen) * 3
    y = torch.randint(5, (200,), generator=gen)
    x = centers[y] + 0.3 * torch.randn(200, 16, generator=gen)
    a = knn_accuracy(x[:150], y[:150], x[150:], y[150:], k=20)
    b = knn_accuracy(7 * x[:150], y[:150], 0.5 * x[150:], y[150:], k=20)
    assert a == b
    assert a["top1"] == 100.0 and a["top5"] >= a["top1"]


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="same D"):
        knn_scores(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), torch.randn(2, 5))
    with pytest.raises(ValueError, match="temperature"):
        knn_scores(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), torch.randn(2, 3),
                   temperature=0)
