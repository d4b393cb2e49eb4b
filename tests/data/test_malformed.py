"""Every way a tar shard or a sample in it can be malformed has one defined outcome, the same on
the cpu, nvjpeg and dali backends: skipped and counted with the shard and key named (or fatal
with ``on_error="raise"``); a damaged tar is never read silently short."""

from __future__ import annotations

import io
import os
import tarfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sslpipe import Batch
from sslpipe.data import create_loader
from sslpipe.data.backends import NvjpegBackend
from sslpipe.data.backends.gpu_jpeg import TorchvisionJpegDecoder
from sslpipe.data.dali_index import index_text, members_of_tar
from sslpipe.data.reading import ReadPlan, resolve_shards
from sslpipe.ops.images import collect
from tests.data.loader_shards import encode, image, write_test_manifest

BACKENDS = ["cpu", "nvjpeg", pytest.param("dali", marks=pytest.mark.dali)]


def _good(i: int) -> list[tuple[str, bytes]]:
    return [(f"{i:04d}.png", encode(image(i, (16, 20)), "png")), (f"{i:04d}.cls", str(i).encode())]


# (members, the (kind, key) events they give, the labels they yield)
MALFORMED = {
    "missing image": ([("m1.cls", b"1")], [("corrupt", "m1")]),
    "missing label": ([("m2.png", encode(image(2, (16, 20)), "png"))], [("corrupt", "m2")]),
    "label not an integer": ([("m3.png", encode(image(3), "png")), ("m3.cls", b"three")],
                             [("corrupt", "m3")]),
    "member twice": ([("m4.png", encode(image(4), "png")), ("m4.png", encode(image(5), "png")),
                      ("m4.cls", b"4")], [("corrupt", "m4")]),
    "members not adjacent": ([("m5.png", encode(image(5), "png")), ("0099.png",
                              encode(image(99), "png")), ("0099.cls", b"99"), ("m5.cls", b"5")],
                             [("corrupt", "m5"), ("corrupt", "m5")]),
    "unknown extension only": ([("m6.txt", b"hello")], [("corrupt", "m6")]),
    "empty image member": ([("m7.png", b""), ("m7.cls", b"7")], [("corrupt", "m7")]),
    "undecodable image": ([("m8.jpg", b"\xff\xd8\xff not a jpeg"), ("m8.cls", b"8")],
                          [("corrupt", "m8")]),
}


def _write_tar(path: str, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _shard_dir(directory: str, shards: list[list[tuple[str, bytes]]], counts: list[int],
               labeled: bool = True) -> str:
    os.makedirs(directory, exist_ok=True)
    entries = []
    for s, members in enumerate(shards):
        file = f"x-{s:06d}.tar"
        path = os.path.join(directory, file)
        _write_tar(path, members)
        with open(path[:-4] + ".idx", "w") as f:
            f.write(index_text(members_of_tar(path)))
        entries.append({"file": file, "index_file": file[:-4] + ".idx", "samples": counts[s],
                        "bytes": os.path.getsize(path), "sha256": ""})
    write_test_manifest(directory, "x", entries, labeled, "png", classes=100)
    return directory


def _labels(samples, generator=None):
    images = collect(samples)
    n = len(images)
    return Batch(torch.zeros(n, 1), labels=images.labels)


def _ids(batch: Batch) -> list[int]:
    """The batch's labels (the sample indices); -1 per sample when it has none."""
    return batch.labels.tolist() if batch.labels is not None else [-1] * batch.batch_size


def _run(directory: str, backend: str, on_error: str = "skip") -> tuple[list[int], list]:
    """Every label the backend yields in one pass, and its events as (kind, key)."""
    if backend == "nvjpeg":  # the nvjpeg backend's logic on the CPU, torchvision decoding
        plan = ReadPlan(resolve_shards(directory), 4, None, 0, shuffle_buffer=0,
                        single_pass=True)
        impl = NvjpegBackend(_labels, torch.device("cpu"), 0, on_error)
        impl.decoder = TorchvisionJpegDecoder()
        labels, events = [], []
        for batch, met in impl.batches(plan):
            events += met
            labels += [] if batch is None else _ids(batch)
    else:
        loader = create_loader(directory, _labels, 4, backend=backend, num_workers=0,
                               single_pass=True, shuffle_buffer=0, on_error=on_error)
        labels = [i for b in loader for i in _ids(b)]
        events = loader.stats.events
    # where: "shard:key" for a sample, the shard's path for a shard
    return sorted(labels), sorted((kind, os.path.basename(where).rsplit(":", 1)[-1])
                                  for kind, where, _ in events)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_each_malformed_sample_is_named_and_skipped(tmp_path, backend, kind):
    members, expected = MALFORMED[kind]
    shard = _good(0) + _good(1) + members + _good(2)
    directory = _shard_dir(str(tmp_path / "d"), [shard], [4])
    labels, events = _run(directory, backend)
    good = [0, 1, 2] + ([99] if kind == "members not adjacent" else [])
    assert labels == good
    assert events == sorted(expected)
    with pytest.raises(ValueError, match=expected[0][1]):
        _run(directory, backend, on_error="raise")


@pytest.mark.parametrize("backend", BACKENDS)
def test_extra_members_of_unknown_kinds_are_ignored(tmp_path, backend):
    shard = _good(0) + [("0001.png", encode(image(1), "png")), ("0001.cls", b"1"),
                        ("0001.json", b"{}")] + _good(2)
    labels, events = _run(_shard_dir(str(tmp_path / "d"), [shard], [3]), backend)
    assert labels == [0, 1, 2] and events == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_missing_and_non_tar_shards_are_named(tmp_path, backend):
    directory = _shard_dir(str(tmp_path / "d"), [_good(0) + _good(1), [], _good(2), _good(3)],
                           [2, 0, 1, 1])
    with open(os.path.join(directory, "x-000001.tar"), "wb"):
        pass  # a zero-length shard
    with open(os.path.join(directory, "x-000002.tar"), "wb") as f:
        f.write(b"this is not a tar file at all" * 40)
    os.remove(os.path.join(directory, "x-000003.tar"))  # listed in the manifest, missing
    labels, events = _run(directory, backend)
    assert labels == [0, 1]
    assert events == [("unreadable", "x-000001.tar"), ("unreadable", "x-000002.tar"),
                      ("unreadable", "x-000003.tar")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_unlabeled_tar_without_manifest_reads_alike(tmp_path, backend):
    path = str(tmp_path / "u-000000.tar")
    _write_tar(path, [(f"{i}.png", encode(image(i), "png")) for i in range(5)])
    loader = create_loader(path, _labels, 2, backend=backend if backend != "nvjpeg" else "cpu",
                           num_workers=0, epoch_size=5, drop_last=False, shuffle_buffer=0)
    batches = list(loader)
    assert sum(b.batch_size for b in batches) == 5 and all(b.labels is None for b in batches)
    assert not loader.stats.events


def _truncation_targets(members: int) -> st.SearchStrategy:
    return st.one_of(
        st.tuples(st.just("cut"), st.integers(1, 6000)),
        st.tuples(st.just("zero header"), st.integers(1, members - 1)),
        st.tuples(st.just("garbage header"), st.integers(1, members - 1)),
    )


@settings(max_examples=60, deadline=None)
@given(damage=_truncation_targets(8), backend=st.sampled_from(["cpu", "nvjpeg"]),
       manifest=st.booleans())
def test_a_damaged_tar_is_never_read_silently_short(tmp_path_factory, damage, backend, manifest):
    # with a manifest its sample count catches a short shard; without one the end-of-archive
    # check must (Python's tarfile reads a bad header as the end of the archive)
    directory = _shard_dir(str(tmp_path_factory.mktemp("t")),
                           [[m for i in range(4) for m in _good(i)]], [4])
    path = os.path.join(directory, "x-000000.tar")
    if not manifest:
        os.remove(os.path.join(directory, "manifest.json"))
    with tarfile.open(path) as tar:
        offsets = [m.offset for m in tar.getmembers()]
    how, where = damage
    with open(path, "r+b") as f:
        if how == "cut":
            f.truncate(min(where, os.path.getsize(path) - 1))
        else:
            f.seek(offsets[where])
            f.write(bytes(512) if how == "zero header" else b"\xab" * 512)
    labels, events = _run(directory if manifest else path, backend)
    assert len(labels) == 4 or events, (damage, labels)
    assert all(kind in ("truncated", "unreadable", "corrupt") for kind, _ in events)
    # labels may be gone (-1) when the first sample's label was the damage: the shards are then
    # read as unlabeled, and the damage is still reported
    assert len(labels) <= 4 and (set(labels) <= {0, 1, 2, 3} or set(labels) == {-1})
