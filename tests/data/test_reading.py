"""Tests of reading shards: shard lists (data.shard_source), epoch plans (data.reading), shard
streams and bad shards (data.tar_samples), URL schemes (data.urls)."""

from __future__ import annotations

import os

import pytest
import torch

from sslpipe.data.reading import ReadPlan, rank_quota, steps_per_epoch, worker_steps
from sslpipe.data.shard_source import resolve_shards
from sslpipe.data.tar_samples import iter_shard
from tests.data.loader_shards import make_shards


@pytest.fixture()
def shard_dir(tmp_path):
    make_shards(str(tmp_path), 4, 3)
    return str(tmp_path)


def test_resolve_directory_pattern_and_list(shard_dir):
    source = resolve_shards(shard_dir)
    assert len(source.urls) == 4 and source.num_samples == 12 and source.labeled is True
    assert all(i is not None and i.endswith(".idx") for i in source.index_files)
    pattern = resolve_shards(os.path.join(shard_dir, "t-{000000..000003}.tar"))
    assert pattern.urls == source.urls
    # Local shards beside a manifest get their counts from it.
    assert pattern.num_samples == 12
    listed = resolve_shards([os.path.join(shard_dir, "t-00000{0..1}.tar"), source.urls[3]])
    assert len(listed.urls) == 3 and listed.num_samples == 9
    assert resolve_shards("pipe:cat a-{0..2}.tar").num_samples is None
    # a manifest.json path is its directory
    assert resolve_shards(os.path.join(shard_dir, "manifest.json")) == source


def test_unknown_schemes_go_to_fsspec_and_say_how_to_install_it(monkeypatch):
    import sys

    from sslpipe.data.urls import open_url

    monkeypatch.setitem(sys.modules, "fsspec", None)  # as if not installed
    with pytest.raises(ValueError, match=r"s3:// scheme.*fsspec.*not installed.*s3fs"):
        open_url("s3://bucket/a-000000.tar")
    events = []
    assert list(iter_shard("s3://bucket/a-000000.tar", events)) == []
    assert events[0][0] == "unreadable" and "pip install fsspec" in events[0][2]


def test_resolve_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        resolve_shards(str(tmp_path / "x-{0..1}.tar"))
    with pytest.raises(ValueError, match="manifest.json"):
        resolve_shards(str(tmp_path))
    with pytest.raises(ValueError, match="shards must be"):
        resolve_shards(3)


def test_steps_and_batch_sizes():
    assert steps_per_epoch(100, 8, 2, drop_last=True) == 6
    assert steps_per_epoch(100, 8, 2, drop_last=False) == 7
    assert rank_quota(101, 2, drop_last=False) == 51
    with pytest.raises(ValueError, match="fewer than one batch"):
        steps_per_epoch(10, 8, 2, drop_last=True)
    # 7 steps over 3 workers: step s belongs to worker s % 3; the last step is partial.
    even = [len(range(w, 7, 3)) for w in range(3)]
    sizes = [[size for _, size in steps] for steps in worker_steps(even, 50, 8)]
    assert sizes == [[8, 8, 2], [8, 8], [8, 8]]
    assert sum(map(sum, sizes)) == 50


def test_shards_partition_readers_and_change_with_epoch(shard_dir):
    source = resolve_shards(shard_dir)
    plans = [ReadPlan(source, 1, 1, 1, rank=r, world_size=2, seed=3) for r in range(2)]
    parts = [p.shards_for(w, 2) for p in plans for w in range(2)]
    assert sorted(u for part in parts for u in part) == sorted(source.urls)
    orders = set()
    for epoch in range(6):
        plans[0].epoch = epoch
        orders.add(tuple(plans[0].shards_for(0, 1)))
    assert len(orders) > 1


def test_samples_shuffle_is_seeded_and_one_pass_is_complete(shard_dir):
    source = resolve_shards(shard_dir)

    def first(seed, n=12):
        stream = ReadPlan(source, 1, 1, 1, seed=seed, shuffle_buffer=5).samples(0, 1)
        return [next(stream)["__key__"] for _ in range(n)]

    assert first(1) == first(1)
    assert first(1) != first(2)
    assert sorted(first(1)) == [f"{i:08d}" for i in range(12)]


def test_truncated_and_unreadable_shards_are_reported(shard_dir, tmp_path):
    path = resolve_shards(shard_dir).urls[0]
    with open(path, "rb") as f:
        data = f.read()
    cut = str(tmp_path / "cut.tar")
    with open(cut, "wb") as f:
        f.write(data[: len(data) // 2 + 100])
    events: list = []
    samples = list(iter_shard(cut, events))
    assert 0 < len(samples) < 3
    assert events[0][0] == "truncated" and events[0][1] == cut
    events.clear()
    assert list(iter_shard("pipe:cat /nonexistent/x.tar", events)) == []
    assert events and events[0][0] == "unreadable"


def test_reader_with_no_readable_shard_raises_instead_of_spinning(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar" * 10)
    plan = ReadPlan(resolve_shards(str(bad)), 1, 1, 1)
    with pytest.raises(ValueError, match="read no sample"):
        next(plan.samples(0, 1))


class _Steps(torch.utils.data.IterableDataset):
    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        yield from worker_steps(self.batches, 100, 4)[info.id]


def test_worker_steps_number_batches_in_the_order_a_dataloader_delivers_them():
    from sslpipe.data.reading import split_steps

    batches = [3, 1, 2]
    steps = worker_steps(batches, 22, 4)
    assert steps == [[(0, 4), (3, 4), (5, 2)], [(1, 4)], [(2, 4), (4, 4)]]
    loader = torch.utils.data.DataLoader(_Steps(batches), batch_size=None, num_workers=3)
    assert [int(step) for step, _ in loader] == list(range(6))  # finished workers are passed
    assert split_steps(14, [30, 26]) == [8, 6]  # in proportion, remainder to the lower worker
    assert split_steps(5, [0, 0]) == [3, 2] and sum(split_steps(7, [5, 9, 1])) == 7
