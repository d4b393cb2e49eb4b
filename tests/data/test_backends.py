"""Tests of the decode backends: auto selection, nvjpeg's CPU-side routing and merge order,
the DALI CPU pipeline, same pixels across backends, and the device prefetcher."""

from __future__ import annotations

import builtins

import pytest
import torch
import webdataset as wds
from torchvision.io import decode_jpeg

from sslpipe import Batch
from sslpipe.data import create_loader
from sslpipe.data.backends import NvjpegBackend, decode_encoded, select_backend
from sslpipe.data.backends.dali import require_dali
from sslpipe.data.prefetch import prefetch_to_device
from sslpipe.data.reading import ReadPlan, resolve_shards, steps_per_epoch
from sslpipe.ops.images import collect, decode
from tests.data.loader_shards import encode, image, make_shards


def raw_collator(samples, generator=None):
    """Decoded uint8 images as they reach a collator, ordered by label (the sample index)."""
    images = collect(samples)
    order = torch.argsort(images.labels)
    stacked = images.images
    if not isinstance(stacked, torch.Tensor):
        stacked = torch.stack(stacked)
    return Batch(stacked[order.to(stacked.device)], labels=images.labels[order])


def test_auto_selection_and_errors(tmp_path):
    make_shards(str(tmp_path), 1, 2)
    source = resolve_shards(str(tmp_path))
    name, why = select_backend("auto", torch.device("cpu"), source)
    assert name == "cpu" and "DataLoader workers" in why
    with pytest.raises(ValueError, match="nvjpeg.*CUDA"):
        select_backend("nvjpeg", torch.device("cpu"), source)
    with pytest.raises(ValueError, match="backend must be one of"):
        select_backend("turbo", torch.device("cpu"), source)


def test_dali_missing_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_dali(name, *args, **kwargs):
        if name.startswith("nvidia.dali") or name == "nvidia":
            raise ImportError("No module named 'nvidia.dali'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dali)
    with pytest.raises(ImportError, match=r"pip install 'sslpipe\[dali\]'"):
        require_dali()


def test_decode_encoded_routes_jpeg_to_the_batched_decoder_and_keeps_order():
    data = [encode(image(i), "png" if i % 3 == 1 else "jpg") for i in range(7)]
    data[4] = b"\xff\xd8\xff broken jpeg"
    data[5] = b"\x89PNG broken png"
    calls = []

    def batched(tensors, mode, device):
        calls.append(len(tensors))
        return decode_jpeg(tensors, mode=mode, device=device)

    images, bad, damaged = decode_encoded(data, torch.device("cpu"), batched)
    # one batched call with every JPEG whose header reads (0, 2, 3, 6); 4 goes to the CPU
    # decoder, which names what is wrong with it
    assert calls == [4] and not damaged
    assert [i for i, _ in bad] == [4, 5]
    for i in (0, 1, 2, 3, 6):
        diff = (images[i].int() - decode(data[i]).int()).abs().max()
        assert diff <= (0 if i % 3 == 1 else 2), i  # same pixels as the cpu path's decode
    assert images[4] is None and images[5] is None


def test_nvjpeg_backend_pipeline_on_cpu_with_injected_decoder(tmp_path):
    make_shards(str(tmp_path), 2, 4, fmt="mix")
    source = resolve_shards(str(tmp_path))
    plan = ReadPlan(source, 4, steps_per_epoch(8, 4, 1, True), 8, shuffle_buffer=0)
    backend = NvjpegBackend(raw_collator, torch.device("cpu"), 0, "skip", decode_jpeg=decode_jpeg)
    batches = [b for b, _ in backend.batches(plan)]
    labels = sorted(i for b in batches for i in b.labels.tolist())
    assert labels == list(range(8))
    for b in batches:
        for x, i in zip(b.inputs, b.labels.tolist()):
            expect = decode(encode(image(i), "png" if i % 2 else "jpg")).int()
            assert (x.int() - expect).abs().max() <= (0 if i % 2 else 2)


@pytest.mark.dali
def test_dali_backend_on_cpu_reads_every_sample_per_rank(tmp_path):
    make_shards(str(tmp_path), 4, 4)
    seen = []
    for rank in range(2):
        loader = create_loader(str(tmp_path), "rotation", 4, backend="dali", rank=rank,
                               world_size=2, num_workers=1, shuffle_buffer=0)
        assert loader.backend == "dali" and len(loader) == 2
        batches = list(loader)
        assert all(b.inputs.shape == (16, 3, 224, 224) for b in batches)
        seen += [i for b in batches for i in b.labels.tolist()]
    assert sorted(seen) == list(range(16))


@pytest.mark.dali
@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_same_pixels_cpu_dali_and_nvjpeg_fallback(tmp_path, fmt):
    make_shards(str(tmp_path), 1, 6, fmt=fmt, size=(40, 56))
    args = dict(epoch_size=6, num_workers=0, shuffle_buffer=0)
    cpu = next(iter(create_loader(str(tmp_path), raw_collator, 6, backend="cpu", **args)))
    dali = next(iter(create_loader(str(tmp_path), raw_collator, 6, backend="dali", **args)))
    source = resolve_shards(str(tmp_path))
    plan = ReadPlan(source, 6, 1, 6, shuffle_buffer=0)
    nvjpeg = next(NvjpegBackend(raw_collator, torch.device("cpu"), 0, "skip",
                                decode_jpeg=decode_jpeg).batches(plan))[0]
    assert cpu.labels.tolist() == dali.labels.tolist() == nvjpeg.labels.tolist() == list(range(6))
    tolerance = 2 if fmt == "jpg" else 0
    for other in (dali, nvjpeg):
        assert other.inputs.shape == cpu.inputs.shape
        assert (other.inputs.int() - cpu.inputs.int()).abs().max() <= tolerance


def test_prefetch_passes_cpu_batches_through():
    batches = [Batch(torch.full((2, 3, 4, 4), float(i)), labels=torch.tensor([i, i]))
               for i in range(3)]
    out = list(prefetch_to_device(iter(batches), "cpu"))
    assert [int(b.labels[0]) for b in out] == [0, 1, 2]
    assert out[1] is batches[1]


@pytest.mark.gpu
def test_prefetch_copies_to_cuda_in_order():
    batches = [Batch(torch.full((2, 3, 4, 4), float(i)).pin_memory()) for i in range(4)]
    out = list(prefetch_to_device(iter(batches), "cuda"))
    assert [float(b.inputs[0, 0, 0, 0]) for b in out] == [0.0, 1.0, 2.0, 3.0]
    assert all(b.inputs.is_cuda for b in out)


@pytest.mark.gpu
@pytest.mark.parametrize(("share", "workers"), [(0.0, 0), (0.5, 2)])
def test_nvjpeg_backend_on_cuda_matches_cpu_decode(tmp_path, share, workers):
    make_shards(str(tmp_path), 2, 4, fmt="mix", size=(40, 56))
    args = dict(epoch_size=8, num_workers=workers, shuffle_buffer=0)
    gpu = list(create_loader(str(tmp_path), raw_collator, 4, device="cuda", backend="nvjpeg",
                             cpu_decode_share=share, **args))
    cpu = list(create_loader(str(tmp_path), raw_collator, 4, backend="cpu", **args))
    from sslpipe.data.backends.gpu_jpeg import jpeg_decoder

    # nvImageCodec upsamples chroma as the CPU decoders do; torchvision's nvJPEG by nearest
    # neighbour, far off at these images' sharp colour edges (tests/data/test_decode_policy)
    exact = jpeg_decoder(torch.device("cuda")).name == "nvimgcodec"
    for g, c in zip(gpu, cpu):
        assert g.inputs.is_cuda and g.labels.tolist() == c.labels.tolist()
        diff = (g.inputs.cpu().int() - c.inputs.int()).abs()
        assert diff.max() <= 3 if exact else diff.float().mean() < 3


@pytest.mark.gpu
@pytest.mark.dali
def test_dali_mixed_decoder_on_cuda(tmp_path):
    make_shards(str(tmp_path), 2, 4)
    loader = create_loader(str(tmp_path), "rotation", 4, device="cuda", backend="dali",
                           num_workers=2)
    batch = next(iter(loader))
    assert batch.inputs.is_cuda and batch.inputs.shape == (16, 3, 224, 224)


def test_jpeg_the_gpu_decoder_rejects_is_decoded_on_the_cpu():
    """CMYK JPEGs go to the CPU decoder (PIL knows Adobe's inversion); a JPEG the GPU decoder
    rejects falls back to the CPU decoder too, not dropped."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image(3)).convert("CMYK").save(buf, "JPEG")
    data = [encode(image(0), "jpg"), buf.getvalue(), b"\xff\xd8\xff broken jpeg"]

    def picky(tensors, mode, device):
        if any(t.numel() == len(data[1]) for t in tensors):
            raise RuntimeError("unsupported colour space")
        return decode_jpeg(tensors, mode=mode, device=device)

    images, bad, _ = decode_encoded(data, torch.device("cpu"), picky)
    assert [i for i, _ in bad] == [2]
    assert images[1] is not None and torch.equal(images[1], decode(data[1]))

    def refuses_all(tensors, mode, device):
        raise RuntimeError("unsupported")

    images, bad, _ = decode_encoded(data, torch.device("cpu"), refuses_all)
    assert [i for i, _ in bad] == [2] and torch.equal(images[0], decode(data[0]))


@pytest.mark.parametrize(("share", "workers"), [(0.0, 0), (0.5, 2), (1.0, 0)])
def test_nvjpeg_workers_decode_other_formats_and_a_share_of_jpegs(tmp_path, share, workers):
    make_shards(str(tmp_path), 2, 8, fmt="mix")  # odd samples PNG
    source = resolve_shards(str(tmp_path))
    plan = ReadPlan(source, 8, steps_per_epoch(16, 8, 1, True), 16, shuffle_buffer=0)
    sent = []

    def gpu(tensors, mode, device):
        sent.append(len(tensors))
        return decode_jpeg(tensors, mode=mode, device=device)

    backend = NvjpegBackend(raw_collator, torch.device("cpu"), workers, "skip", decode_jpeg=gpu,
                            cpu_decode_share=share)
    batches = [b for b, _ in backend.batches(plan)]
    assert sorted(i for b in batches for i in b.labels.tolist()) == list(range(16))
    # 8 JPEGs in all; PNGs never reach the GPU decoder
    assert sum(sent) == {0.0: 8, 0.5: 4, 1.0: 0}[share]
    for b in batches:
        for x, i in zip(b.inputs, b.labels.tolist()):
            expect = decode(encode(image(i), "png" if i % 2 else "jpg")).int()
            assert (x.int() - expect).abs().max() <= (0 if i % 2 else 2)


def test_a_sample_the_workers_cannot_decode_is_replaced_and_reported(tmp_path):
    path = str(tmp_path / "bad-000000.tar")
    with wds.TarWriter(path) as sink:
        for i in range(6):
            data = b"\x89PNG broken" if i == 1 else encode(image(i), "png")
            sink.write({"__key__": f"{i:08d}", "png": data, "cls": str(i).encode()})
    source = resolve_shards(path)
    plan = ReadPlan(source, 4, 1, 4, shuffle_buffer=0)
    backend = NvjpegBackend(raw_collator, torch.device("cpu"), 0, "skip", decode_jpeg=decode_jpeg)
    (batch, events), = [(b, e) for b, e in backend.batches(plan) if b is not None]
    assert batch.labels.tolist() == [0, 2, 3, 4]  # refilled to a full batch
    assert events[0][0] == "corrupt" and events[0][1].endswith("bad-000000.tar:00000001")
    strict = NvjpegBackend(raw_collator, torch.device("cpu"), 0, "raise", decode_jpeg=decode_jpeg)
    with pytest.raises(ValueError, match="00000001"):
        list(strict.batches(ReadPlan(source, 4, 1, 4, shuffle_buffer=0)))


@pytest.mark.dali
@pytest.mark.parametrize("damage", ["truncated", "garbage header", "not a jpeg"])
def test_dali_skips_and_names_an_image_it_cannot_decode_like_the_cpu_backend(tmp_path, damage):
    # DALI fails the whole batch on a truncated JPEG: that batch is decoded again on the CPU,
    # which names the bad sample; the pipeline is rebuilt and the next batches go on
    good = [encode(image(i, (40, 56)), "jpg") for i in range(8)]
    broken = {"truncated": good[2][: len(good[2]) // 2],
              "garbage header": good[2][:200] + bytes(400),
              "not a jpeg": b"\xff\xd8\xff\xe0 broken"}[damage]
    path = str(tmp_path / "t-000000.tar")
    with wds.TarWriter(path) as sink:
        for i in range(8):
            sink.write({"__key__": f"{i:08d}", "jpg": broken if i == 2 else good[i],
                        "cls": str(i).encode()})
    seen = {}
    for backend in ("cpu", "dali"):
        loader = create_loader(path, raw_collator, 4, backend=backend, num_workers=0,
                               shuffle_buffer=0, single_pass=True)
        labels = [i for b in loader for i in b.labels.tolist()]
        assert labels == [0, 1, 3, 4, 5, 6, 7], backend
        (event,) = loader.stats.events
        assert event[0] == "corrupt" and event[1] == f"{path}:00000002", backend
        seen[backend] = event[2]
    with pytest.raises(ValueError, match="00000002"):
        list(create_loader(path, raw_collator, 4, backend="dali", num_workers=0,
                           shuffle_buffer=0, single_pass=True, on_error="raise"))
