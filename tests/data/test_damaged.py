"""Damaged JPEGs: files libjpeg-turbo decodes only past a warning ("Corrupt JPEG data: 46
extraneous bytes before marker 0xd9", "premature end of data segment"), which PIL, nvJPEG and
DALI decode in silence. Every backend, ``sslpipe shard`` and ``sslpipe shard verify --decode``
must meet, count and name the same ones (shard and key), under the same ``damaged`` policy."""

from __future__ import annotations

import io
import json
import os
import re
import warnings

import pytest
import torch
import webdataset as wds
from PIL import Image

from sslpipe.batch import Batch
from sslpipe.data import create_loader
from sslpipe.data.backends import NvjpegBackend
from sslpipe.data.backends.gpu_jpeg import NvImageCodecDecoder, TorchvisionJpegDecoder
from sslpipe.data.reading import ReadPlan, resolve_shards
from sslpipe.ops.images import DamagedImageWarning, collect
from sslpipe.ops.jpeg import jpeg_damage
from tests.data.loader_shards import encode, encoding_interrupted_at, image


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


def cmyk(index: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image(index, (40, 56))).convert("CMYK").save(buf, "JPEG", quality=90)
    return buf.getvalue()


# sample index -> what is wrong with it; the others are clean JPEGs
DAMAGED = {1: extraneous, 4: cut, 6: lambda good: cut(progressive(6)), 9: extraneous,
           10: lambda good: extraneous(cmyk(10))}  # PIL decodes CMYK: libjpeg-turbo checks
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


@pytest.mark.parametrize("progressive_jpeg", [False, True])
def test_the_check_finds_what_a_decode_at_any_dct_scale_finds(progressive_jpeg):
    """The GPU paths check at 1/8 scale; the cpu backend decodes at whatever scale the crops
    allow: libjpeg-turbo decodes the entropy-coded data whole at every scale, so both meet
    the same damage (and the same message)."""
    from sslpipe.ops.jpeg import JpegWarning, decode_jpeg

    buf = io.BytesIO()
    Image.fromarray(image(5, (240, 320))).save(buf, "JPEG", quality=90,
                                              progressive=progressive_jpeg)
    good = buf.getvalue()
    sos = good.find(b"\xff\xda")
    variants = [good, extraneous(good), cut(good), good[:-2], good[: len(good) // 3]]
    for offset in range(200, len(good) - sos - 50, 997):  # bytes flipped in the scan
        flipped = bytearray(good)
        for i in range(sos + offset, sos + offset + 6):
            flipped[i] ^= 0x5A
        variants.append(bytes(flipped))
    for data in variants:
        for reduce in (1, 2, 4, 8):
            try:
                decode_jpeg(data, reduce)
                message = None
            except JpegWarning as err:
                message = str(err)
            assert jpeg_damage(data) == message, reduce


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


# --- sslpipe shard: damaged images are counted and named (kept or skipped), resumable -----

def damaged_tree(root):
    """Two classes of 6 JPEGs; class a holds two damaged ones and an undecodable one."""
    for c in "ab":
        (root / c).mkdir(parents=True)
        for i in range(6):
            good = encode(image(i + 10 * (c == "b"), (40, 56)), "jpg")
            if c == "a" and i in (1, 4):
                good = (extraneous if i == 1 else cut)(good)
            if c == "a" and i == 5:
                good = good[: len(good) // 2]  # no EOI: undecodable
            (root / c / f"{i}.jpg").write_bytes(good)
    return root


SUBSET_SEED = 1


def _shard(root, out, **kw):
    from sslpipe.data import ShardOptions, open_source, write_shards

    options = ShardOptions(**{"progress": False, "shard_size": 3, "shard_bytes": None, **kw})
    return write_shards(open_source("imagefolder", str(root)), str(out), options)


@pytest.mark.parametrize("resize", [None, 24])
def test_shard_writes_damaged_images_and_names_them(tmp_path, capsys, resize):
    from sslpipe.data import EncodeOptions, verify_shards
    from sslpipe.data.verify import verify_report

    root = damaged_tree(tmp_path / "src")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedImageWarning)  # counted, not a stray warning
        manifest = _shard(root, tmp_path / "out", encode=EncodeOptions(resize=resize))
    assert manifest["num_samples"] == 11
    assert [(d["key"], d["path"]) for d in manifest["damaged"]] == [
        ("a_1", str(root / "a" / "1.jpg")), ("a_4", str(root / "a" / "4.jpg"))]
    assert "extraneous bytes" in manifest["damaged"][0]["reason"]
    assert "premature end of data segment" in manifest["damaged"][1]["reason"]
    assert [os.path.basename(s["path"]) for s in manifest["skipped"]] == ["5.jpg"]
    err = capsys.readouterr().err
    assert "wrote 2 damaged image(s)" in err and "(key a_1): Corrupt JPEG data" in err
    assert str(root / "a" / "4.jpg") in err
    samples = {s["__key__"]: s["jpg"] for s in wds.WebDataset(
        [str(tmp_path / "out" / s["file"]) for s in manifest["shards"]], shardshuffle=False)}
    if resize is None:  # the bytes kept as they are: every reader meets the damage again
        assert samples["a_1"] == (root / "a" / "1.jpg").read_bytes()
        assert [str(d) for d in verify_report(str(tmp_path / "out"), decode=True).damaged] \
            and verify_shards(str(tmp_path / "out"), decode=True) == []
    else:  # re-encoded from what was decoded: the manifest is what still says so
        assert jpeg_damage(samples["a_1"]) is None


def test_shard_damaged_skip_leaves_them_out_and_a_subset_replaces_them(tmp_path, capsys):
    root = damaged_tree(tmp_path / "src")
    manifest = _shard(root, tmp_path / "out", damaged="skip")
    assert manifest["num_samples"] == 9 and manifest["damaged"] == []
    reasons = {os.path.basename(s["path"]): s["reason"] for s in manifest["skipped"]}
    assert reasons["1.jpg"].startswith("damaged: Corrupt JPEG data: ")
    assert reasons["4.jpg"].startswith("damaged: Corrupt JPEG data: ")
    assert reasons["5.jpg"].startswith("corrupt image data")
    err = capsys.readouterr().err
    assert "skipped 2 damaged image(s) (--damaged skip)" in err and str(root / "a" / "1.jpg") in err
    # a subset keeps its per-class counts: a damaged pick is replaced like an undecodable one
    subset = _shard(root, tmp_path / "sub", damaged="skip", subset="6", seed=SUBSET_SEED)
    assert subset["counts_per_class"] == {"0": 3, "1": 3}  # class a has 3 sound images
    replaced = {os.path.basename(r["path"]) for r in subset["subset"]["replaced"]}
    skipped = {os.path.basename(s["path"]) for s in subset["skipped"]}
    assert replaced == skipped and {"1.jpg", "4.jpg"} <= replaced


@pytest.mark.parametrize("stop_at", [2, 5, 8])
def test_an_interrupted_run_with_damaged_images_resumes_identically(tmp_path, monkeypatch,
                                                                    stop_at):
    import sslpipe.data.sharding as sharding

    root = damaged_tree(tmp_path / "src")
    for damaged in ("use", "skip"):
        reference = _shard(root, tmp_path / f"ref-{damaged}", damaged=damaged, shard_size=2,
                           name="s")
        with encoding_interrupted_at(monkeypatch, stop_at), pytest.raises(KeyboardInterrupt):
            _shard(root, tmp_path / f"cut-{damaged}", damaged=damaged, shard_size=2, name="s")
        if (tmp_path / f"cut-{damaged}" / sharding.JOURNAL).exists():  # a shard was finished
            with pytest.raises(ValueError, match="other options"):  # the policy is the run's
                _shard(root, tmp_path / f"cut-{damaged}", shard_size=2, name="s", resume=True,
                       damaged={"use": "skip", "skip": "use"}[damaged])
        resumed = _shard(root, tmp_path / f"cut-{damaged}", damaged=damaged, shard_size=2,
                         name="s", resume=True)
        assert resumed == reference, damaged


def test_cli_shard_info_and_verify_name_damaged_images(tmp_path):
    from click.testing import CliRunner

    from sslpipe.cli import main

    root = damaged_tree(tmp_path / "src")
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(main, ["shard", "imagefolder", str(root), "--out", str(out), "-j",
                                  "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 damaged image(s)" in result.output  # CliRunner mixes stderr in
    info = runner.invoke(main, ["shard", "info", str(out)]).output
    assert "damaged     2 written" in info and "(key a_4): Corrupt JPEG data" in info
    # recorded in the manifest: listed and counted, not a failure
    result = runner.invoke(main, ["shard", "verify", str(out), "--decode"])
    assert result.exit_code == 0, result.output
    named = re.findall(r"^DAMAGED out-\d{6}\.tar: (a_\d)\.jpg is damaged: Corrupt JPEG",
                       result.output, re.M)
    assert sorted(named) == ["a_1", "a_4"]
    assert "2 of them only past damage" in result.output
    # a manifest that does not record them (older sslpipe, other tools): a failure by name
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["damaged"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(main, ["shard", "verify", str(out), "--decode"])
    assert result.exit_code == 1
    assert result.output.count("FAIL ") == 2 and ".tar: a_1.jpg is damaged: Corrupt JPEG" in \
        result.output
    assert "2 of them damaged image(s) the manifest does not record" in result.output
    assert "damaged     not recorded" in runner.invoke(main, ["shard", "info", str(out)]).output


def test_verify_decode_finds_damage_in_shards_another_tool_wrote(tmp_path):
    from sslpipe.data import verify_shards
    from sslpipe.data.dali_index import index_text, members_of_tar
    from sslpipe.data.writer import sha256_of
    from tests.data.loader_shards import write_test_manifest

    path = write_damaged_shard(tmp_path)
    (tmp_path / "d-000000.idx").write_text(index_text(members_of_tar(path)))
    write_test_manifest(str(tmp_path), "d", [{
        "file": "d-000000.tar", "index_file": "d-000000.idx", "samples": COUNT,
        "bytes": os.path.getsize(path), "sha256": sha256_of(path)}])
    assert verify_shards(str(tmp_path)) == []  # without --decode nothing is decoded
    problems = verify_shards(str(tmp_path), decode=True)
    damaged = sorted(p.split(": ")[1].split(".")[0] for p in problems if "is damaged" in p)
    assert damaged == [f"{i:08d}" for i in sorted(DAMAGED)]
    assert [p for p in problems if "does not decode" in p] == [
        p for p in problems if "00000007.jpg" in p]


def _keys_run(path: str, backend: str, damaged: str) -> tuple[list[str], int]:
    """The events' (kind, key) and the images used though damaged, for a shard directory."""
    if backend in ("cpu", "dali"):
        loader = create_loader(path, _labels, 4, backend=backend, num_workers=0,
                               single_pass=True, shuffle_buffer=0, damaged=damaged)
        list(loader)
        events, used = loader.stats.events, loader.stats.used_damaged
    else:
        plan = ReadPlan(resolve_shards(path), 4, None, 0, shuffle_buffer=0, single_pass=True)
        impl = NvjpegBackend(_labels, torch.device("cpu"), 0, "skip", damaged=damaged)
        impl.decoder = TorchvisionJpegDecoder()
        events = [e for _, met in impl.batches(plan) for e in met]
        used = sum(e[0] == "damaged-used" for e in events)
    return sorted((e[0], e[1].rpartition(":")[2]) for e in events), used


@pytest.mark.parametrize("resize", [None, 24])
@pytest.mark.parametrize("backend", ["cpu", "torchvision",
                                     pytest.param("dali", marks=pytest.mark.dali)])
def test_damage_the_manifest_records_is_met_on_every_backend(tmp_path, resize, backend,
                                                             monkeypatch):
    # shards from `sslpipe shard`: re-encoded (resize) bytes no longer show the damage, yet
    # every backend meets the two images the manifest names; the GPU path trusts the record
    # instead of checking each JPEG again (the check is a CPU decode at 1/8 scale)
    from sslpipe.data import EncodeOptions
    from sslpipe.data.backends import workers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DamagedImageWarning)
        _shard(damaged_tree(tmp_path / "src"), tmp_path / "out",
               encode=EncodeOptions(resize=resize))

    def no_check(data):
        raise AssertionError("checked a JPEG the manifest vouches for")

    monkeypatch.setattr(workers, "jpeg_damage", no_check)
    events, used = _keys_run(str(tmp_path / "out"), backend, "use")
    assert events == [("damaged-used", "a_1"), ("damaged-used", "a_4")] and used == 2
    events, used = _keys_run(str(tmp_path / "out"), backend, "skip")
    assert events == [("damaged", "a_1"), ("damaged", "a_4")] and used == 0
