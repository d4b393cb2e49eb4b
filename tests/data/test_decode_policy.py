"""One decode policy for every path: the conformance corpus (``tests/conformance.py``: EXIF
orientations, modes, formats, tiny, bombs, junk) through the collators' eager and lazy decodes,
``sslpipe shard``'s re-encoding, and the cpu, dali and nvjpeg backends, on the CPU here and on
CUDA where there is one. Every path must give the corpus' expected pixels (within JPEG IDCT
rounding), and refuse the same files by name."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import webdataset as wds

from sslpipe.batch import Batch
from sslpipe.data import create_loader
from sslpipe.data.backends import NvjpegBackend
from sslpipe.data.backends.gpu_jpeg import NvImageCodecDecoder, TorchvisionJpegDecoder
from sslpipe.data.encode import EncodeOptions, encode_record
from sslpipe.data.reading import ReadPlan, resolve_shards
from sslpipe.data.sources.base import Record
from sslpipe.ops.images import EncodedImage, collect, decode
from tests.conformance import ORIENT_OPS, corpus, tolerance

CORPUS = corpus()
NAMES = sorted(CORPUS)
GOOD = [n for n in NAMES if CORPUS[n][2] is not None]
BAD = [n for n in NAMES if CORPUS[n][2] is None]


def _check(name: str, got: torch.Tensor | np.ndarray) -> None:
    expected = CORPUS[name][2]
    assert expected is not None
    got = got.permute(1, 2, 0).cpu().numpy() if isinstance(got, torch.Tensor) else got
    assert got.shape == expected.shape, name
    assert np.abs(got.astype(np.int16) - expected).max() <= tolerance(name), name


@pytest.mark.parametrize("name", GOOD)
def test_eager_and_lazy_decodes(name):
    data = CORPUS[name][0]
    _check(name, decode(data, where=name))
    lazy = EncodedImage(data, where=name)
    assert lazy.shape == (3, *CORPUS[name][2].shape[:2])
    _check(name, lazy.decode(1))
    if lazy.format == "JPEG":  # a reduced DCT decode is the same image, upright, scaled
        h, w = lazy.raw_hw
        small = lazy.decode(2)
        hw = (math.ceil(h / 2), math.ceil(w / 2))
        assert tuple(small.shape[-2:]) == (hw if lazy.orientation < 5 else hw[::-1])


@pytest.mark.parametrize("name", BAD)
def test_refused_by_name_on_every_decode(name):
    data = CORPUS[name][0]
    with pytest.raises(ValueError, match=name):
        decode(data, where=name)
    with pytest.raises(ValueError, match=name):
        EncodedImage(data, where=name).decode()
    with pytest.raises(ValueError, match=r"samples\[1\]"):
        collect([CORPUS["png_rgb"][0], data])


def test_max_pixels_is_an_option():
    data = CORPUS["jpeg_420"][0]
    with pytest.raises(ValueError, match="max_pixels=1,000"):
        decode(data, max_pixels=1000)
    from sslpipe import create_collator

    with pytest.raises(ValueError, match=r"samples\[0\].*max_pixels"):
        create_collator("rotation", size=16, max_pixels=1000)([data])


@pytest.mark.parametrize("name", NAMES)
def test_shard_reencoding_keeps_what_the_loader_would_decode(tmp_path, name):
    data, ext, expected = CORPUS[name]
    path = tmp_path / f"image.{ext}"
    path.write_bytes(data)
    record = Record(key="k", label=0, path=str(path))
    for options in (EncodeOptions(image_format="png"), EncodeOptions()):
        encoded = encode_record(record, options)
        if expected is None:
            assert encoded.data is None and encoded.reason, name
            continue
        assert encoded.data is not None, (name, encoded.reason)
        # PNG output is lossless: exactly the pixels the loader would decode from the file;
        # JPEG output is either the file's own bytes (tag and all) or a re-encoding
        got = decode(encoded.data)
        if options.image_format == "png":
            _check(name, got)
        else:
            assert tuple(got.shape[1:]) == expected.shape[:2], name
    if name.startswith("jpeg_exif") and expected is not None:  # resized: upright, then scaled
        out = decode(encode_record(record, EncodeOptions(resize=15)).data)
        h, w = expected.shape[:2]
        assert min(out.shape[1:]) == 15 and (out.shape[1] > out.shape[2]) == (h > w), name


def _write_corpus_shard(directory) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "c-000000.tar")
    with wds.TarWriter(path) as sink:
        for i, name in enumerate(NAMES):
            data, ext, _ = CORPUS[name]
            sink.write({"__key__": f"{i:04d}", ext: data, "cls": str(i).encode()})
    return path


class _Keep:
    """A collator that keeps each decoded image by its label (in this process)."""

    def __init__(self) -> None:
        self.images: dict[int, torch.Tensor] = {}

    def __call__(self, samples, generator=None):
        images = collect(samples)
        items = images.images if isinstance(images.images, list) else list(images.images)
        for image, label in zip(items, images.labels.tolist()):
            self.images[label] = image
        return Batch(torch.zeros(len(items), 1), labels=images.labels)


def _check_backend_result(keep: _Keep, events: list) -> None:
    names = {NAMES[i]: image for i, image in keep.images.items()}
    assert sorted(names) == GOOD
    for name, image in names.items():
        _check(name, image)
    refused = sorted(NAMES[int(e[1].rsplit(":", 1)[1])] for e in events if e[0] == "corrupt")
    assert refused == BAD and all(e[0] == "corrupt" for e in events)


@pytest.mark.parametrize("backend", ["cpu", pytest.param("dali", marks=pytest.mark.dali)])
def test_every_backend_decodes_the_corpus_alike(tmp_path, backend):
    path = _write_corpus_shard(tmp_path)
    keep = _Keep()
    loader = create_loader(path, keep, 5, backend=backend, num_workers=0, single_pass=True,
                           shuffle_buffer=0)
    assert sum(b.batch_size for b in loader) == len(GOOD)
    _check_backend_result(keep, loader.stats.events)


@pytest.mark.parametrize("decoder", ["nvimgcodec", "torchvision"])
def test_nvjpeg_backend_with_each_batched_decoder_on_the_cpu(tmp_path, decoder):
    if decoder == "nvimgcodec":
        pytest.importorskip("nvidia.nvimgcodec")
    path = _write_corpus_shard(tmp_path)
    keep = _Keep()
    plan = ReadPlan(resolve_shards(path), 5, None, 0, shuffle_buffer=0, single_pass=True)
    backend = NvjpegBackend(keep, torch.device("cpu"), 0, "skip")
    backend.decoder = (NvImageCodecDecoder(torch.device("cpu")) if decoder == "nvimgcodec"
                       else TorchvisionJpegDecoder())
    events = [e for _, batch_events in backend.batches(plan) for e in batch_events]
    _check_backend_result(keep, events)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["nvjpeg", pytest.param("dali", marks=pytest.mark.dali)])
def test_gpu_backends_decode_the_corpus_like_the_cpu(tmp_path, backend):
    path = _write_corpus_shard(tmp_path)
    keep = _Keep()
    loader = create_loader(path, keep, 5, backend=backend, device="cuda", num_workers=0,
                           single_pass=True, shuffle_buffer=0)
    assert sum(b.batch_size for b in loader) == len(GOOD)
    assert all(image.is_cuda for image in keep.images.values())
    if backend == "nvjpeg" and not _nvimgcodec():
        # torchvision's nvJPEG upsamples chroma by nearest neighbour: compare the orientation
        # and the mean difference only (exact chroma is what nvImageCodec is for)
        for i, image in keep.images.items():
            expected = CORPUS[NAMES[i]][2]
            got = image.permute(1, 2, 0).cpu().numpy()
            assert got.shape == expected.shape
            assert np.abs(got.astype(np.int16) - expected).mean() < 2
        return
    _check_backend_result(keep, loader.stats.events)


@pytest.mark.gpu
@pytest.mark.parametrize("decoder", ["nvimgcodec", "torchvision"])
def test_gpu_jpeg_decoders(decoder):
    """nvImageCodec on CUDA: the CPU decoders' pixels; torchvision's nvJPEG: libjpeg-turbo's
    nearest-neighbour chroma upsampling exactly, and the EXIF orientation applied after."""
    import simplejpeg

    from sslpipe.ops.jpeg import exif_orientation

    if decoder == "nvimgcodec" and not _nvimgcodec():
        pytest.skip("nvImageCodec not installed")
    device = torch.device("cuda")
    jpegs = [n for n in GOOD if n.startswith("jpeg") and n != "jpeg_cmyk"]
    run = (NvImageCodecDecoder(device) if decoder == "nvimgcodec" else TorchvisionJpegDecoder())
    out = run([CORPUS[n][0] for n in jpegs], device)
    for name, image in zip(jpegs, out):
        assert image is not None and image.is_cuda, name
        if decoder == "nvimgcodec":
            _check(name, image)
            continue
        data = CORPUS[name][0]
        nearest = simplejpeg.decode_jpeg(data, fastupsample=True)
        expected = np.ascontiguousarray(ORIENT_OPS[exif_orientation(data)](nearest))
        got = image.permute(1, 2, 0).cpu().numpy()
        assert got.shape == expected.shape and np.abs(got.astype(int) - expected).max() <= 2


def _nvimgcodec() -> bool:
    try:
        import nvidia.nvimgcodec  # noqa: F401
    except ImportError:
        return False
    return True
