"""create_loader(single_pass=True): every sample exactly once, for evaluation."""

from __future__ import annotations

import os

import pytest
import torch

from sslpipe.data import create_loader
from sslpipe.data.reading import resolve_shards, single_pass_steps
from tests.data.loader_shards import make_shards
from tests.data.test_backends import raw_collator

UNEVEN = [7, 3, 5, 1, 6]  # 22 samples; no batch size divides a reader's share evenly


@pytest.fixture()
def uneven(tmp_path):
    make_shards(str(tmp_path / "u"), len(UNEVEN), UNEVEN, size=(16, 20))
    return str(tmp_path / "u")


def _labels(loader):
    return [b.labels.tolist() for b in loader]


@pytest.mark.parametrize(("world_size", "workers", "batch"), [(1, 0, 4), (1, 2, 4), (2, 2, 3)])
def test_every_sample_exactly_once_over_ranks_and_workers(uneven, world_size, workers, batch):
    seen = []
    for rank in range(world_size):
        loader = create_loader(uneven, raw_collator, batch, rank=rank, world_size=world_size,
                               num_workers=workers, single_pass=True, backend="cpu")
        labels = _labels(loader)
        assert len(labels) == len(loader)
        assert all(0 < len(b) <= batch for b in labels)
        seen += [i for b in labels for i in b]
    assert sorted(seen) == list(range(sum(UNEVEN)))  # no sample repeated, none missing
    # the training mode, by contrast, fills a fixed quota per reader from uneven shards
    train = create_loader(uneven, raw_collator, 4, num_workers=2, backend="cpu")
    assert sum(len(b) for b in _labels(train)) == 20


def test_in_order_without_shuffle_and_independent_of_seed(uneven):
    def run(seed, epoch):
        loader = create_loader(uneven, raw_collator, 5, num_workers=0, single_pass=True,
                               shuffle_buffer=0, seed=seed, backend="cpu")
        loader.set_epoch(epoch)
        return [i for b in _labels(loader) for i in b]

    assert run(0, 0) == run(3, 2) == list(range(22))


def test_steps_count_each_readers_partial_batch(uneven):
    source = resolve_shards(uneven)
    # one reader: ceil(22 / 4); two workers: shards (7, 5, 6) and (3, 1) -> 5 + 1
    assert single_pass_steps(source, 4, 0, 1, 1) == 6
    assert single_pass_steps(source, 4, 0, 1, 2) == 6
    assert single_pass_steps(source, 5, 0, 1, 2) == 4 + 1


def test_length_unknown_and_argument_errors(uneven):
    shards = os.path.join(uneven, "t-00000{0..4}.tar")
    import shutil

    bare = os.path.join(os.path.dirname(uneven), "bare")
    shutil.copytree(uneven, bare)
    os.remove(os.path.join(bare, "manifest.json"))
    loader = create_loader(os.path.join(bare, "t-00000{0..4}.tar"), raw_collator, 4,
                           single_pass=True, num_workers=0)
    with pytest.raises(TypeError, match="no length"):
        len(loader)
    assert sum(len(b) for b in _labels(loader)) == 22  # it still reads everything
    with pytest.raises(ValueError, match="neither resample=True nor epoch_size"):
        create_loader(shards, raw_collator, 4, single_pass=True, epoch_size=10)
    with pytest.raises(ValueError, match="neither resample=True nor epoch_size"):
        create_loader(shards, raw_collator, 4, single_pass=True, resample=True)
    # more readers than shards is fine: a reader without shards makes no batch
    loader = create_loader(uneven, raw_collator, 4, single_pass=True, num_workers=3,
                           world_size=2, rank=1)
    assert sum(len(b) for b in _labels(loader)) == 1 + 6  # shards 3 and 4


def test_bad_shards_are_counted_even_after_the_last_batch(tmp_path):
    make_shards(str(tmp_path), 2, 4, size=(16, 20))
    second = os.path.join(str(tmp_path), "t-000001.tar")
    with open(second, "rb") as f:
        data = f.read()
    with open(second, "wb") as f:
        f.write(data[: len(data) * 3 // 4])
    loader = create_loader(str(tmp_path), raw_collator, 16, single_pass=True, num_workers=2,
                           backend="cpu")
    got = sorted(i for b in _labels(loader) for i in b)
    assert got[:4] == [0, 1, 2, 3] and len(got) < 8
    assert loader.stats.skipped["truncated"] == 1
    assert loader.stats.events[0][1] == second
    strict = create_loader(str(tmp_path), raw_collator, 16, single_pass=True, num_workers=0,
                           backend="cpu", on_error="raise")
    with pytest.raises(ValueError, match="t-000001.tar"):
        list(strict)
    # an unreadable last shard is met only after the reader's last full batch went out
    with open(second, "wb") as f:
        f.write(b"not a tar file at all" * 50)
    loader = create_loader(str(tmp_path), raw_collator, 4, single_pass=True, num_workers=0,
                           backend="cpu")
    assert _labels(loader) == [[0, 1, 2, 3]]
    assert loader.stats.skipped["unreadable"] == 1 and loader.stats.events[0][1] == second


@pytest.mark.dali
@pytest.mark.parametrize("world_size", [1, 3])
def test_dali_single_pass_reads_each_rank_part_once(uneven, world_size):
    seen = []
    for rank in range(world_size):
        loader = create_loader(uneven, raw_collator, 4, backend="dali", rank=rank,
                               world_size=world_size, num_workers=1, single_pass=True,
                               shuffle_buffer=0)
        for _ in range(2):  # a second pass starts again at the first sample
            labels = _labels(loader)
            assert len(labels) == len(loader)
        seen += [i for b in labels for i in b]
    assert sorted(seen) == list(range(22))  # each sample once, shards dealt over ranks


@pytest.mark.dali
def test_cpu_and_dali_single_pass_give_the_same_pixels(uneven):
    def everything(backend):
        loader = create_loader(uneven, raw_collator, 8, backend=backend, num_workers=0,
                               single_pass=True, shuffle_buffer=0)
        batches = list(loader)
        return torch.cat([b.labels for b in batches]), [x for b in batches for x in b.inputs]

    cpu, dali = everything("cpu"), everything("dali")
    assert torch.equal(cpu[0], dali[0])
    for a, b in zip(cpu[1], dali[1]):
        assert a.shape == b.shape and (a.int() - b.int()).abs().max() <= 2


def test_nvjpeg_backend_single_pass_with_an_injected_decoder(uneven):
    from torchvision.io import decode_jpeg

    from sslpipe.data.backends import NvjpegBackend
    from sslpipe.data.reading import ReadPlan

    source = resolve_shards(uneven)
    plan = ReadPlan(source, 4, single_pass_steps(source, 4, 0, 1, 2), 0, shuffle_buffer=0,
                    single_pass=True)
    backend = NvjpegBackend(raw_collator, torch.device("cpu"), 2, "skip", decode_jpeg=decode_jpeg)
    out = list(backend.batches(plan))
    batches = [b for b, _ in out if b is not None]
    assert len(batches) == plan.steps
    assert sorted(i for b in batches for i in b.labels.tolist()) == list(range(sum(UNEVEN)))
