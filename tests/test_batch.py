"""Batch: moves every nested tensor, reports its size."""

from __future__ import annotations

import pytest
import torch

import sslpipe
from sslpipe import Batch


def _batch() -> Batch:
    return Batch(
        inputs=(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)),
        targets={"a": torch.tensor([1, 2])},
        labels=torch.tensor([3, 4]),
        meta={"boxes": torch.zeros(2, 4)},
    )


def test_to_moves_nested_tensors_and_keeps_values() -> None:
    b = _batch().to(torch.float64)  # dtype conversion goes through the same map
    assert isinstance(b.inputs, tuple) and b.inputs[1].dtype == torch.float64
    assert b.targets["a"].dtype == torch.float64
    assert b.meta["boxes"].dtype == torch.float64
    assert torch.equal(b.labels, torch.tensor([3.0, 4.0], dtype=torch.float64))


def test_batch_size_reads_labels_or_inputs() -> None:
    assert _batch().batch_size == 2
    assert Batch(torch.zeros(5, 3, 2, 2)).batch_size == 5


@pytest.mark.gpu
def test_pin_memory_and_non_blocking_copy() -> None:
    b = _batch().pin_memory()
    assert b.inputs[0].is_pinned() and b.meta["boxes"].is_pinned()
    assert b.to("cuda", non_blocking=True).labels.device.type == "cuda"


def test_host_batch_nbytes_counts_what_crosses_to_the_device() -> None:
    from sslpipe.batch import HostBatch

    host = HostBatch({"a": torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
                      "b": torch.zeros(2, 3, 2, 2, dtype=torch.uint8)},
                     labels=torch.zeros(2, dtype=torch.int64),
                     meta={"angle": torch.zeros(2, 100, dtype=torch.float64)})
    assert host.nbytes == 2 * 3 * 16 + 2 * 3 * 4 + 2 * 8  # pixels and labels; meta stays home
    moved = host.to("meta")
    assert moved.meta["angle"].device.type == "cpu"
    assert HostBatch(host.pixels).nbytes == 2 * 3 * 16 + 2 * 3 * 4


@pytest.mark.parametrize("options", [{"mode": "all"}, {"mode": "random"}])
def test_batch_size_counts_images_not_rows(options: dict) -> None:
    """Rotation "all" has 4B input rows and no labels here: B is still the image count, for
    the task alone, inside a multi-task, and across the host / device split."""
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    rotation = sslpipe.create_collator("rotation", size=32, seed=0, **options)
    batch = rotation(images)
    assert batch.batch_size == 3
    host = rotation.host_stage(images)
    assert host.batch_size == 3 and host.to("cpu").batch_size == 3
    assert rotation.device_stage(host).batch_size == 3
    multi = sslpipe.create_collator("rotation+dino", seed=0, size=32, rotation=options,
                                    dino={"local_crops": 2})
    assert multi(images).batch_size == 3
    assert Batch(torch.zeros(12, 3, 8, 8), size=3).apply(lambda t: t * 2).batch_size == 3
