"""Shared test settings: one torch thread (the suite runs on 2 cores), markers for GPU / DALI."""

from __future__ import annotations

import importlib.util

import pytest
import torch

torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    no_gpu = not torch.cuda.is_available()
    no_dali = importlib.util.find_spec("nvidia.dali") is None
    for item in items:
        if no_gpu and "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if no_dali and "dali" in item.keywords:
            item.add_marker(
                pytest.mark.skip(reason="needs NVIDIA DALI (pip install sslpipe[dali])")
            )
