"""Damaged JPEGs: files libjpeg-turbo decodes only past a warning ("Corrupt JPEG data: 46
extraneous bytes before marker 0xd9", "premature end of data segment"), which PIL, nvJPEG and
DALI decode in silence. Every backend, ``sslpipe shard`` and ``sslpipe shard verify --decode``
must meet, count and name the same ones (shard and key), under the same ``damaged`` policy."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
import webdataset as wds
from PIL import Image

from sslpipe.batch import Batch
from sslpipe.data import create_loader
from sslpipe.data.backends import NvjpegBackend
from sslpipe.data.backends.nvjpeg import NvImageCodecDecoder, TorchvisionJpegDecoder
from sslpipe.data.reading import ReadPlan, resolve_shards
from sslpipe.ops.images import DamagedImageWarning, collect
from sslpipe.ops.jpeg import jpeg_damage
from tests.data.loader_shards import encode, image


def extraneous(good: bytes) -> bytes:
    """Bytes between the last scan and EOI: "Corrupt JPEG data: N extraneous bytes"."""
    return good[:-2] + bytes(range(1, 51)) + b"\xff\xd9"


def cut(good: bytes) -> bytes:
    """Half the scan, then EOI: "Corrupt JPEG data: premature end of data segment"."""
    return good[: len(good) // 2] + b"\xff\xd9"


def progressive(index: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image(index, (40, 56))).save(buf, "JPEG", quality=90, progressive=True)
    return buf.getvalue()


# sample index -> what is wrong with it; the others are clean JPEGs
DAMAGED = {1: extraneous, 4: cut, 6: lambda good: cut(progressive(6)), 9: extraneous}
UNDECODABLE = {7: lambda good: good[: len(good) // 2]}  # truncated, no EOI: PIL refuses too
COUNT = 12


def write_damaged_shard(directory) -> str:
    path = str(directory / "d-000000.tar")
    with wds.TarWriter(path) as sink:
        for i in range(COUNT):
            good = encode(image(i, (40, 56)), "jpg")
            damage = DAMAGED.get(i) or UNDECODABLE.get(i)
            sink.write({"__key__": f"{i:08d}", "jpg": damage(good) if damage else good,
                        "cls": str(i).encode()})
    return path


def test_the_damage_is_what_libjpeg_reports_and_pil_passes_over():
    for i, damage in {**DAMAGED, **UNDECODABLE}.items():
        data = damage(encode(image(i, (40, 56)), "jpg"))
        assert jpeg_damage(data), i
        if i in DAMAGED:
            Image.open(io.BytesIO(data)).load()  # PIL decodes it without a word
    assert jpeg_damage(encode(image(0, (40, 56)), "jpg")) is None
    assert jpeg_damage(progressive(3)) is None
    assert "extraneous bytes" in jpeg_damage(extraneous(encode(image(0), "jpg")))
    assert jpeg_damage(b"\x89PNG not a jpeg") is None


def _labels(samples, generator=None):
    return Batch(torch.zeros(len(samples), 1), labels=collect(samples).labels)


def _run(path: str, backend: str, damaged: str) -> tuple[list[int], list[tuple[str, int]], int]:
    """Labels delivered, (kind, sample index) of every event, images used though damaged."""
    if backend in ("cpu", "dali"):
        loader = create_loader(path, _labels, 5, backend=backend, num_workers=0,
                               single_pass=True, shuffle_buffer=0, damaged=damaged)
        labels = [i for b in loader for i in b.labels.tolist()]
        events, used = loader.stats.events, loader.stats.used_damaged
    else:  # nvjpeg on the CPU, with each of its batched decoders
        plan = ReadPlan(resolve_shards(path), 5, None, 0, shuffle_buffer=0, single_pass=True)
        impl = NvjpegBackend(_labels, torch.device("cpu"), 0, "skip", damaged=damaged)
        impl.decoder = (NvImageCodecDecoder(torch.device("cpu")) if backend == "nvimgcodec"
                        else TorchvisionJpegDecoder())
        labels, events = [], []
        for batch, met in impl.batches(plan):
            events += met
            labels += [] if batch is None else batch.labels.tolist()
        used = sum(e[0] == "damaged-used" for e in events)
    assert all(e[1].startswith(f"{path}:") for e in events)  # the shard and the key
    return sorted(labels), sorted((e[0], int(e[1].rsplit(":", 1)[1])) for e in events), used


BACKENDS = ["cpu", "torchvision", "nvimgcodec", pytest.param("dali", marks=pytest.mark.dali)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("damaged", ["skip", "use"])
def test_every_backend_meets_the_same_damaged_images(tmp_path, backend, damaged):
    if backend == "nvimgcodec":
        pytest.importorskip("nvidia.nvimgcodec")
    path = write_damaged_shard(tmp_path)
    with warnings.catch_warnings():
        # reported through the loader's stats, never as a stray warning besides
        warnings.simplefilter("error", DamagedImageWarning)
        labels, events, used = _run(path, backend, damaged)
    undecodable = [("corrupt", i) for i in UNDECODABLE]
    if damaged == "skip":
        assert labels == sorted(set(range(COUNT)) - set(DAMAGED) - set(UNDECODABLE))
        assert events == sorted([("damaged", i) for i in DAMAGED] + undecodable)
        assert used == 0
    else:
        assert labels == sorted(set(range(COUNT)) - set(UNDECODABLE))
        assert events == sorted([("damaged-used", i) for i in DAMAGED] + undecodable)
        assert used == len(DAMAGED)


def test_on_error_raise_names_the_damaged_sample_on_the_gpu_path(tmp_path):
    path = write_damaged_shard(tmp_path)
    plan = ReadPlan(resolve_shards(path), 5, None, 0, shuffle_buffer=0, single_pass=True)
    impl = NvjpegBackend(_labels, torch.device("cpu"), 0, "raise")
    impl.decoder = TorchvisionJpegDecoder()
    with pytest.raises(ValueError, match=r"d-000000\.tar:00000001.*damaged"):
        list(impl.batches(plan))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["nvjpeg", pytest.param("dali", marks=pytest.mark.dali)])
def test_gpu_backends_on_cuda_meet_the_same_damaged_images(tmp_path, backend):
    path = write_damaged_shard(tmp_path)
    for damaged in ("skip", "use"):
        runs = {}
        for name, device in (("cpu", "cpu"), (backend, "cuda")):
            loader = create_loader(path, _labels, 5, backend=name, device=device,
                                   num_workers=0, single_pass=True, shuffle_buffer=0,
                                   damaged=damaged)
            labels = sorted(i for b in loader for i in b.labels.tolist())
            runs[name] = (labels, sorted(e[:2] for e in loader.stats.events),
                          loader.stats.used_damaged)
        assert runs["cpu"] == runs[backend], damaged
