"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018, InstDisc).

Features are L2-normalised; each test sample takes its ``k`` most cosine-similar training
samples, and class ``c`` scores ``sum_{i in kNN, y_i = c} exp(s_i / T)``. The defaults
(``k=200``, ``T=0.1``) are those of the common CIFAR benchmarks (InstDisc, lightly, solo-learn).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslpipe.devices import default_device
from sslpipe.eval.defaults import DEFAULT_K, DEFAULT_TEMPERATURE
from sslpipe.eval.linear import topk_accuracy
from sslpipe.tasks.base import check_positive


def knn_scores(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    num_classes: int | None = None,
    chunk: int = 1024,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Class scores of each test sample by temperature-weighted votes of its neighbours.

    Args:
        train_x: float ``N x D`` features (any scale: they are L2-normalised here).
        train_y: int64 ``N`` labels.
        test_x: float ``M x D`` features.
        k: neighbours per test sample (clipped to ``N``).
        temperature: ``T`` in ``exp(similarity / T)`` (> 0).
        num_classes: default ``max(train_y) + 1``.
        chunk: test samples per similarity block (memory is ``chunk x N``).
        device: where to compute (default: CUDA when available, else CPU).

    Returns:
        float32 ``M x num_classes`` scores (CPU); each row sums the weights of its ``k`` votes.
    """
    check_positive("k", k)
    check_positive("temperature", temperature)
    check_positive("chunk", chunk)
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train_x and test_x must be N x D and M x D with the same D. Got "
                         f"{tuple(train_x.shape)} and {tuple(test_x.shape)}")
    if train_y.shape != (train_x.shape[0],):
        raise ValueError(f"train_y must have one label per train_x row ({train_x.shape[0]}). "
                         f"Got shape {tuple(train_y.shape)}")
    dev = default_device(device)
    classes = num_classes or int(train_y.max()) + 1
    bank = F.normalize(train_x.to(dev).float(), dim=1)
    bank_y = train_y.to(dev)
    k = min(k, bank.shape[0])
    out = []
    for start in range(0, test_x.shape[0], chunk):
        query = F.normalize(test_x[start:start + chunk].to(dev).float(), dim=1)
        sim, idx = (query @ bank.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        scores = torch.zeros(query.shape[0], classes, device=dev)
        scores.scatter_add_(1, bank_y[idx], weights)
        out.append(scores.cpu())
    return torch.cat(out)


def knn_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """``{"top1": %, "top5": %}`` (in [0, 100], 2 decimals) of :func:`knn_scores`."""
    classes = int(max(train_y.max(), test_y.max())) + 1
    scores = knn_scores(train_x, train_y, test_x, k, temperature, classes, device=device)
    return topk_accuracy(scores, test_y.cpu())
