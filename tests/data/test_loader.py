"""Tests of sslpipe.data.create_loader: determinism, epoch sizing over ranks and workers,
URL sources (pipe:, http), bad data, and argument errors."""

from __future__ import annotations

import functools
import http.server
import os
import pathlib
import threading
import time

import pytest
import torch
import webdataset as wds

import sslpipe
from sslpipe.data import create_loader, sample_path
from tests.data.loader_shards import encode, image, make_shards


@pytest.fixture()
def shard_dir(tmp_path):
    make_shards(str(tmp_path / "s"), 8, 6)
    return str(tmp_path / "s")


def _labels(loader):
    return [b.labels.tolist() for b in loader]


def test_cpu_backend_is_deterministic_for_a_seed_and_set_epoch_reshuffles(shard_dir):
    def run(seed, epoch):
        loader = create_loader(shard_dir, sslpipe.create_task("rotation", size=16, mode="random",
                                                              crop="random", flip=0.5),
                               batch_size=4, num_workers=2, seed=seed, shuffle_buffer=8,
                               backend="cpu")
        loader.set_epoch(epoch)
        return [(b.labels, b.inputs, b.targets) for b in loader]

    a, b = run(5, 0), run(5, 0)
    assert len(a) == 12
    for x, y in zip(a, b):
        assert all(torch.equal(u, v) for u, v in zip(x, y))
    assert [x[0].tolist() for x in run(5, 1)] != [x[0].tolist() for x in a]
    assert [x[0].tolist() for x in run(6, 0)] != [x[0].tolist() for x in a]


@pytest.mark.parametrize(("drop_last", "batch"), [(True, 4), (False, 6)])
def test_two_ranks_two_workers_see_every_sample_once(shard_dir, drop_last, batch):
    # 48 samples, 2 ranks x 2 workers: 2 shards (12 samples) per reader, batches dividing it.
    loaders = [create_loader(shard_dir, "rotation", batch, rank=r, world_size=2, num_workers=2,
                             seed=1, drop_last=drop_last, backend="cpu") for r in range(2)]
    assert len(loaders[0]) == len(loaders[1]) == 24 // batch
    for epoch in range(2):
        seen = []
        for loader in loaders:
            loader.set_epoch(epoch)
            labels = _labels(loader)
            assert len(labels) == len(loader)
            seen += [i for b in labels for i in b]
        assert sorted(seen) == list(range(48))


def test_partial_last_batch_without_drop_last(shard_dir):
    loaders = [create_loader(shard_dir, "rotation", 5, rank=r, world_size=2, num_workers=2,
                             drop_last=False, backend="cpu") for r in range(2)]
    assert len(loaders[0]) == len(loaders[1]) == 5
    for loader in loaders:
        assert [len(b) for b in _labels(loader)] == [5, 5, 5, 5, 4]


def test_fewer_shards_than_readers_fits_the_workers_or_is_an_error(shard_dir):
    shards = os.path.join(shard_dir, "t-00000{0..2}.tar")
    fitted = create_loader(shards, "rotation", 4, rank=0, world_size=2, num_workers=2,
                           epoch_size=18)  # 3 shards: one worker per rank
    assert len(list(fitted)) == len(fitted)
    one = os.path.join(shard_dir, "t-000000.tar")
    with pytest.raises(ValueError, match="1 shard.*2 rank.*resample=True"):
        create_loader(one, "rotation", 2, rank=0, world_size=2, num_workers=2, epoch_size=6)
    loaders = [create_loader(shards, "rotation", 4, rank=r, world_size=2, num_workers=2,
                             resample=True, backend="cpu") for r in range(2)]
    assert len(loaders[0]) == len(loaders[1]) == 2  # 18 samples / 2 ranks / 4 per batch
    for loader in loaders:
        labels = [i for b in _labels(loader) for i in b]
        assert len(labels) == 8 and set(labels) <= set(range(18))


def test_pipe_and_http_sources(shard_dir):
    pattern = "t-{000000..000007}.tar"
    piped = create_loader(f"pipe:cat {shard_dir}/{pattern}", "rotation", 8, epoch_size=48,
                          num_workers=0, shuffle_buffer=0, backend="cpu")
    assert sorted(i for b in _labels(piped) for i in b) == list(range(48))
    handler = functools.partial(_QuietHandler, directory=shard_dir)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{pattern}"
        loader = create_loader(url, "rotation", 8, epoch_size=48, num_workers=2, backend="cpu")
        assert sorted(i for b in _labels(loader) for i in b) == list(range(48))
        # the manifest's URL: shard URLs and the epoch size come from it
        manifest = f"http://127.0.0.1:{server.server_address[1]}/manifest.json"
        loader = create_loader(manifest, "rotation", 8, num_workers=2, backend="cpu")
        assert len(loader) == 6
        assert sorted(i for b in _labels(loader) for i in b) == list(range(48))
        with pytest.raises(ValueError, match="cannot read the manifest.*nothing/manifest.json"):
            create_loader(manifest.replace("manifest", "nothing/manifest"), "rotation", 8)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_object_store_urls_through_fsspec(shard_dir):
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    for name in sorted(os.listdir(shard_dir)):
        with open(os.path.join(shard_dir, name), "rb") as f:
            memory.pipe(f"/bucket/in/{name}", f.read())
    try:
        loader = create_loader("memory://bucket/in/t-{000000..000007}.tar", "rotation", 8,
                               epoch_size=48, num_workers=0, shuffle_buffer=0)
        assert loader.backend == "cpu"
        assert sorted(i for b in _labels(loader) for i in b) == list(range(48))
        loader = create_loader("memory://bucket/in/manifest.json", "rotation", 8,
                               num_workers=0, single_pass=True, shuffle_buffer=0)
        assert [i for b in _labels(loader) for i in b] == list(range(48))
        missing = create_loader("memory://bucket/in/t-00000{8..9}.tar", "rotation", 2,
                                epoch_size=4, num_workers=0)
        with pytest.raises(ValueError, match="read no sample.*unreadable.*FileNotFoundError"):
            list(missing)
    finally:
        memory.rm("/bucket", recursive=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        return None


def _write_with_bad_sample(path, bad_key="00000002"):
    with wds.TarWriter(path) as sink:
        for i in range(6):
            key = f"{i:08d}"
            good = encode(image(i), "jpg")
            data = b"\xff\xd8\xff\xe0 not really a jpeg" if key == bad_key else good
            sink.write({"__key__": key, "jpg": data, "cls": str(i).encode()})


def test_corrupt_sample_is_skipped_counted_and_reported(tmp_path, caplog):
    path = str(tmp_path / "bad-000000.tar")
    _write_with_bad_sample(path)
    loader = create_loader(path, "rotation", 5, epoch_size=5, num_workers=0, shuffle_buffer=0,
                           backend="cpu")
    with caplog.at_level("WARNING", logger="sslpipe.data.loader"):
        (batch,) = list(loader)
    assert batch.labels.tolist() == [0, 1, 3, 4, 5]  # the batch was refilled to full size
    assert loader.stats.skipped["corrupt"] == 1
    assert loader.stats.events[0][1].endswith("bad-000000.tar:00000002")
    assert "skipped 1 bad input" in caplog.text
    strict = create_loader(path, "rotation", 5, epoch_size=5, num_workers=0, shuffle_buffer=0,
                           backend="cpu", on_error="raise")
    with pytest.raises(ValueError, match="00000002"):
        list(strict)


def test_truncated_shard_is_reported_by_name(shard_dir, tmp_path):
    first = os.path.join(shard_dir, "t-000000.tar")
    cut = str(tmp_path / "cut-000001.tar")
    with open(first, "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[: len(data) // 2])
    loader = create_loader([first, cut], "rotation", 4, epoch_size=8, num_workers=0,
                           backend="cpu", shuffle_buffer=0)
    assert sum(b.batch_size for b in loader) == 8  # the reader made up its quota
    assert loader.stats.skipped["truncated"] >= 1
    assert any(e[0] == "truncated" and e[1] == cut for e in loader.stats.events)
    strict = create_loader([first, cut], "rotation", 4, epoch_size=8, num_workers=0,
                           backend="cpu", shuffle_buffer=0, on_error="raise")
    with pytest.raises(ValueError, match="cut-000001.tar"):
        list(strict)


def test_embedded_sample_with_task_collator_and_name():
    task = sslpipe.create_task("rotation", size=16)
    for what in (task, task.collator, "rotation"):
        loader = create_loader(sample_path("test"), what, 8, epoch_size=16, num_workers=0)
        assert loader.backend == "cpu" and len(loader) == 2
        batch = next(iter(loader))
        assert isinstance(batch, sslpipe.Batch) and batch.labels.shape == (8,)
        assert batch.inputs.dtype == torch.float32 and batch.inputs.shape[1] == 3


def test_unlabeled_shards(tmp_path):
    make_shards(str(tmp_path), 2, 4, labeled=False)
    loader = create_loader(str(tmp_path), "rotation", 4, num_workers=0)
    batches = list(loader)
    assert len(batches) == 2 and all(b.labels is None for b in batches)


def test_argument_errors(shard_dir):
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        create_loader(shard_dir, "rotation", 0)
    with pytest.raises(ValueError, match="on_error must be one of"):
        create_loader(shard_dir, "rotation", 2, on_error="ignore")
    with pytest.raises(ValueError, match="backend must be one of"):
        create_loader(shard_dir, "rotation", 2, backend="gpu")
    with pytest.raises(ValueError, match="rank must be in"):
        create_loader(shard_dir, "rotation", 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="epoch_size is required"):
        create_loader("pipe:cat x-{0..1}.tar", "rotation", 2)
    with pytest.raises(ValueError, match="task_or_collator"):
        create_loader(shard_dir, 3, 2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            create_loader(shard_dir, "rotation", 2, device="cuda")


@pytest.mark.gpu
def test_cpu_backend_delivers_on_cuda(shard_dir):
    loader = create_loader(shard_dir, "rotation", 4, device="cuda", backend="cpu", num_workers=2)
    batches = list(loader)
    assert len(batches) == len(loader)
    assert all(b.inputs.is_cuda and b.labels.is_cuda for b in batches)


def test_uneven_shards_are_balanced_over_ranks_and_workers(tmp_path):
    # 32 samples in shards of 8, 4, 4, 4, 4 and 8: 2 ranks x 2 workers can each get 8
    make_shards(str(tmp_path / "a"), 6, [8, 4, 4, 4, 4, 8], size=(16, 16))
    loaders = [create_loader(str(tmp_path / "a"), "rotation", 4, rank=r, world_size=2,
                             num_workers=2, seed=2, backend="cpu") for r in range(2)]
    for epoch in range(3):
        seen = []
        for loader in loaders:
            loader.set_epoch(epoch)
            seen += [i for b in _labels(loader) for i in b]
        assert sorted(seen) == list(range(32))  # every sample once, each epoch
    # the usual case, a short last shard: at most a batch per worker repeated or skipped
    make_shards(str(tmp_path / "b"), 10, [6] * 9 + [2], size=(16, 16))
    loader = create_loader(str(tmp_path / "b"), "rotation", 4, num_workers=2, backend="cpu")
    seen = [i for b in _labels(loader) for i in b]
    assert len(seen) == 56 and len(set(seen)) >= 56 - 2 * 4


@pytest.mark.parametrize("task", ["simclr", "rotation"])
def test_device_stage_after_the_copy_equals_the_workers_doing_it(shard_dir, task):
    # device_stage="device": the workers hand over uint8 host batches and the loader finishes
    # them (here in the main process, on the CPU); the Batches are the same as the workers'.
    def batches(where):
        loader = create_loader(shard_dir, sslpipe.create_task(task, size=16), 4, num_workers=2,
                               seed=3, device_stage=where)
        assert loader.device_stage == where and loader.num_workers == 2
        return list(loader)

    fused, split = batches("workers"), batches("device")
    assert len(fused) == len(split) > 0
    for a, b in zip(fused, split):
        x = [a.inputs] if isinstance(a.inputs, torch.Tensor) else list(a.inputs)
        y = [b.inputs] if isinstance(b.inputs, torch.Tensor) else list(b.inputs)
        assert all(torch.equal(u, v) for u, v in zip(x, y))
        assert torch.equal(a.labels, b.labels) and sorted(a.meta) == sorted(b.meta)
        assert all(torch.equal(a.meta[k], b.meta[k]) for k in a.meta)


def test_the_loader_says_what_auto_picked(shard_dir, tmp_path):
    loader = create_loader(shard_dir, "rotation", 4, num_workers=2)
    assert loader.backend == "cpu" and loader.device_stage in ("device", "workers")
    # a plain callable has no two stages: it always runs whole in the workers
    whole = functools.partial(sslpipe.create_collator("rotation", size=16))
    plain = create_loader(shard_dir, whole, 4, num_workers=2, device_stage="device")
    assert plain.device_stage == "workers"
    # fewer shards than workers: the workers the loader really runs
    make_shards(str(tmp_path / "two"), 2, 4, size=(16, 16))
    fitted = create_loader(str(tmp_path / "two"), "rotation", 2, num_workers=4)
    assert fitted.num_workers == 2


class _FreezingHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file; after the first request (the loader's look at the first sample), the
    next ``freezes`` requests send half of what they ask for and then stop answering without
    closing the connection (a hung server). Honours Range requests."""

    body = b""
    freezes = 0
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (the http.server API)
        cls = type(self)
        cls.requests.append(self.headers.get("Range", ""))
        first = len(cls.requests) == 1
        start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") else 0
        data = cls.body[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if cls.freezes > 0 and not first:
            cls.freezes -= 1
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            time.sleep(6)  # frozen: neither data nor a close
            return
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("freezes", [1, 5])
def test_a_frozen_http_server_is_retried_then_named(shard_dir, monkeypatch, freezes):
    from sslpipe.data import urls

    monkeypatch.setattr(urls, "HTTP_TIMEOUT", 0.5)
    monkeypatch.setattr(urls, "HTTP_RETRIES", 2)
    monkeypatch.setattr(urls, "_backoff", lambda failures: None)  # no waiting in the test
    handler = type("H", (_FreezingHandler,), {
        "body": pathlib.Path(shard_dir, "t-000000.tar").read_bytes(),
        "freezes": freezes, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/t-000000.tar"
    try:
        started = time.perf_counter()
        loader = create_loader(url, "rotation", 2, single_pass=True, shuffle_buffer=0,
                               num_workers=0, backend="cpu")
        labels = [i for b in _labels(loader) for i in b]
        assert time.perf_counter() - started < 20  # no hang
        if freezes == 1:  # the stall is retried from the byte it stopped at
            assert labels == list(range(6)) and not loader.stats.events
            assert handler.requests[1] == "" and handler.requests[2].startswith("bytes=")
        else:  # every attempt stalls: a truncated shard, the URL and byte named
            (kind, where, why), = loader.stats.events
            assert kind == "truncated" and where == url and "no data after 3 attempt" in why
    finally:
        server.shutdown()
        server.server_close()
