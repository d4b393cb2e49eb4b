"""End to end: an ImageNet-like tree with broken files -> shards -> webdataset."""

from __future__ import annotations

import io
import json
import os
from collections import Counter

import numpy as np
import pytest
import webdataset as wds
from PIL import Image
from skimage import data as photos

import sslpipe.data.encode as encode
import sslpipe.data.sharding as sharding
from sslpipe.data import (
    EncodeOptions,
    ShardOptions,
    open_source,
    read_manifest,
    shard_paths,
    verify_shards,
    write_shards,
)
from tests.data.loader_shards import encoding_interrupted_at

WNIDS = ["n01440764", "n01443537", "n02102040"]
PER_CLASS = 6


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes x 6 JPEGs cut from skimage photos, plus every kind of bad file."""
    root = tmp_path_factory.mktemp("imagenet")
    sources = [photos.astronaut(), photos.coffee(), photos.chelsea()]
    for wnid, photo in zip(WNIDS, sources):
        folder = root / "train" / wnid
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            crop = photo[i * 20:i * 20 + 150, i * 25:i * 25 + 200]
            Image.fromarray(crop).resize((80, 60)).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    bad = root / "train" / WNIDS[0]
    good = (bad / f"{WNIDS[0]}_0.JPEG").read_bytes()
    (bad / "truncated.JPEG").write_bytes(good[: len(good) // 2])
    (bad / "empty.JPEG").write_bytes(b"")
    (bad / "garbage.JPEG").write_bytes(b"this is not an image at all")
    png = Image.fromarray(photos.rocket()[:60, :80])
    png.save(bad / "png_inside.JPEG", "PNG")
    Image.fromarray(photos.coffee()[:60, :80]).convert("CMYK").save(bad / "cmyk.JPEG", "JPEG")
    other = root / "train" / WNIDS[1]
    Image.fromarray(photos.camera()[:60, :80]).save(other / "gray.JPEG", "JPEG")
    Image.fromarray(photos.coffee()[:60, :80]).convert("P").save(other / "palette.png")
    Image.fromarray(photos.astronaut()[:60, :80]).convert("RGBA").save(other / "alpha.png")
    return root


def _options(**kw):
    base = {"progress": False, "shard_size": 7, "shard_bytes": None}
    return ShardOptions(**{**base, **kw})


def test_counts_labels_and_skipped(tree, tmp_path):
    source = open_source("imagenet", str(tree), "train")
    manifest = write_shards(source, str(tmp_path / "in"), _options())
    skipped = {os.path.basename(s["path"]): s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {"truncated.JPEG", "empty.JPEG", "garbage.JPEG"}
    assert skipped["empty.JPEG"] == "empty file (0 bytes)"
    # 18 photos + png/cmyk (class 0) + gray/palette/alpha (class 1), all converted to RGB
    assert manifest["num_samples"] == 23
    assert manifest["counts_per_class"] == {"0": 8, "1": 9, "2": 6}
    assert [s["samples"] for s in manifest["shards"]] == [7, 7, 7, 2]
    assert manifest == read_manifest(tmp_path / "in")
    assert verify_shards(str(tmp_path / "in"), decode=True) == []

    dataset = wds.WebDataset(shard_paths(tmp_path / "in"), shardshuffle=False)
    samples = list(dataset)
    assert len(samples) == 23 and len({s["__key__"] for s in samples}) == 23
    labels = {f"{w}_{i}": c for c, w in enumerate(WNIDS) for i in range(PER_CLASS)}
    for s in samples:
        image = Image.open(io.BytesIO(s["jpg"]))
        assert image.format == "JPEG" and image.mode == "RGB"
        if s["__key__"] in labels:
            assert int(s["cls"]) == labels[s["__key__"]]
    # no resize: valid RGB JPEGs keep their original bytes
    kept = next(s for s in samples if s["__key__"] == "n01443537_2")
    assert kept["jpg"] == (tree / "train" / "n01443537" / "n01443537_2.JPEG").read_bytes()


def test_workers_and_runs_give_identical_shards(tree, tmp_path):
    source = open_source("imagenet", str(tree), "train")
    one = write_shards(source, str(tmp_path / "a"), _options(workers=1, subset="12", seed=3))
    two = write_shards(source, str(tmp_path / "b"), _options(workers=2, subset="12", seed=3))
    assert [s["sha256"] for s in one["shards"]] == [s["sha256"] for s in two["shards"]]
    # 4 per class: a broken file drawn into the subset is skipped, listed, and replaced by the
    # next image of its class's seeded order, so that no class ends up short
    assert one["skipped"] and one["counts_per_class"] == {"0": 4, "1": 4, "2": 4}
    replaced = one["subset"].pop("replaced")
    assert one["subset"] == {"rule": "12", "seed": 3, "size": 12}
    assert sorted(r["path"] for r in replaced) == sorted(s["path"] for s in one["skipped"])


def test_a_subset_keeps_its_counts_and_nesting_when_picks_are_broken(tree, tmp_path):
    # class 0 holds 6 good images and 4 broken ones (besides a CMYK JPEG that converts fine):
    # every subset still takes the first decodable images of each class's seeded order
    source = open_source("imagenet", str(tree), "train")
    keys = {}
    for size in ("9", "15"):
        manifest = write_shards(source, str(tmp_path / size), _options(subset=size, seed=5))
        per_class = int(size) // 3
        assert manifest["counts_per_class"] == {"0": per_class, "1": per_class,
                                                "2": per_class}
        keys[size] = {s["__key__"] for s in wds.WebDataset(
            shard_paths(tmp_path / size), shardshuffle=False)}
    assert keys["9"] <= keys["15"]  # nested, replacements included


def test_resize_format_and_shard_bytes(tree, tmp_path):
    source = open_source("imagenet", str(tree), "train")
    options = _options(encode=EncodeOptions(resize=32, image_format="png"), shard_size=None,
                       shard_bytes=40_000, keys=("n01440764_1", "n02102040_5", "gray"))
    manifest = write_shards(source, str(tmp_path / "r"), options)
    assert manifest["image_format"] == "png" and manifest["subset"]["rule"] == "keys"
    for sample in wds.WebDataset(shard_paths(tmp_path / "r"), shardshuffle=False):
        assert min(Image.open(io.BytesIO(sample["png"])).size) == 32
    assert all(s["bytes"] <= 40_000 for s in manifest["shards"])


def test_interrupted_run_resumes_to_identical_result(tree, tmp_path, monkeypatch):
    source = open_source("imagenet", str(tree), "train")
    reference = write_shards(source, str(tmp_path / "full"), _options(shard_size=4, name="in"))
    real, calls = encode.encode_record, []

    def dying(record, options):
        calls.append(record.key)
        if len(calls) == 15:
            raise KeyboardInterrupt
        return real(record, options)

    monkeypatch.setattr(encode, "encode_record", dying)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        write_shards(source, str(out), _options(shard_size=4, name="in"))
    names = sorted(os.listdir(out))
    assert "manifest.json" not in names and not any(n.endswith(".tmp") for n in names)
    finished = [n for n in names if n.endswith(".tar")]
    assert 1 <= len(finished) < len(reference["shards"])
    with pytest.raises(ValueError, match="--resume"):
        write_shards(source, str(out), _options(shard_size=4, name="in"))

    calls.clear()
    monkeypatch.setattr(encode, "encode_record", lambda r, options: (calls.append(r.key),
                                                                      real(r, options))[1])
    resumed = write_shards(source, str(out), _options(shard_size=4, name="in", resume=True))
    assert resumed == reference
    assert len(calls) < 26  # finished shards were not encoded again
    assert json.loads((out / "manifest.json").read_text())["shards"] == reference["shards"]
    assert not (out / sharding.JOURNAL).exists()


@pytest.mark.parametrize("left", ["a partial .tmp", "a finished shard, no journal yet"])
def test_resume_after_a_kill_before_the_first_journal_write(tree, tmp_path, left):
    source = open_source("imagenet", str(tree), "train")
    reference = write_shards(source, str(tmp_path / "full"), _options(shard_size=4, name="in"))
    out = tmp_path / "cut"
    out.mkdir()
    if left == "a partial .tmp":
        (out / "in-000000.tar.tmp").write_bytes(b"half a tar")
    else:
        for name in ("in-000000.tar", "in-000000.idx"):
            (out / name).write_bytes((tmp_path / "full" / name).read_bytes())
    with pytest.raises(ValueError, match="--resume"):
        write_shards(source, str(out), _options(shard_size=4, name="in"))
    assert write_shards(source, str(out), _options(shard_size=4, name="in",
                                                   resume=True)) == reference
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "full"))


def test_subset_errors_name_the_problem(tree, tmp_path):
    source = open_source("imagenet", str(tree), "train")
    with pytest.raises(ValueError, match="only 26"):
        write_shards(source, str(tmp_path / "x"), _options(subset="1k"))
    with pytest.raises(ValueError, match="cannot be split evenly"):
        write_shards(source, str(tmp_path / "x"), _options(subset="25"))


def test_array_source_writes_png_and_unlabeled_has_no_cls(tmp_path):
    base = tmp_path / "stl10_binary"
    base.mkdir()
    rng = np.random.default_rng(0)
    rng.integers(0, 256, (5, 3, 96, 96), dtype=np.uint8).tofile(base / "unlabeled_X.bin")
    manifest = write_shards(open_source("stl10", str(tmp_path), "unlabeled"),
                            str(tmp_path / "u"), _options())
    assert not manifest["labeled"] and manifest["image_format"] == "png"
    samples = list(wds.WebDataset(shard_paths(tmp_path / "u"), shardshuffle=False))
    assert Counter(tuple(sorted(k for k in s if not k.startswith("__"))) for s in samples) == {
        ("png",): 5}
    assert verify_shards(str(tmp_path / "u")) == []


@pytest.mark.parametrize("stop_at", [3, 9, 14])
def test_an_interrupted_subset_run_with_replacements_resumes_identically(tree, tmp_path,
                                                                         monkeypatch, stop_at):
    source = open_source("imagenet", str(tree), "train")
    options = dict(subset="15", seed=5, shard_size=2, name="s")
    reference = write_shards(source, str(tmp_path / "ref"), _options(**options))
    assert reference["subset"]["replaced"]
    with encoding_interrupted_at(monkeypatch, stop_at), pytest.raises(KeyboardInterrupt):
        write_shards(source, str(tmp_path / "cut"), _options(**options))
    resumed = write_shards(source, str(tmp_path / "cut"), _options(**options, resume=True))
    assert resumed == reference
    assert sorted(os.listdir(tmp_path / "cut")) == sorted(os.listdir(tmp_path / "ref"))


_KILL_AT_JOURNAL = """
import os, signal, sys
import sslpipe.atomic as atomic
from sslpipe.data import ShardOptions, open_source, write_shards
real, calls = os.replace, []
def replace(src, dst):  # SIGKILL with the journal's temporary written, before its rename
    if dst.endswith(".sslpipe-progress.json"):
        calls.append(dst)
        if len(calls) == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
atomic.os.replace = replace
write_shards(open_source("imagenet", sys.argv[1], "train"), sys.argv[2],
             ShardOptions(shard_size=4, shard_bytes=None, name="in", progress=False))
"""


@pytest.mark.parametrize("kill_at", [1, 3])
def test_a_kill_during_a_journal_write_leaves_nothing_after_resume(tree, tmp_path, kill_at):
    import signal
    import subprocess
    import sys

    source = open_source("imagenet", str(tree), "train")
    reference = write_shards(source, str(tmp_path / "full"), _options(shard_size=4, name="in"))
    out = tmp_path / "cut"
    killed = subprocess.run([sys.executable, "-c", _KILL_AT_JOURNAL, str(tree), str(out),
                             str(kill_at)], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = [n for n in os.listdir(out) if n.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(f".{sharding.JOURNAL}.")  # .PID.tmp
    # the same PID may come back (a container's PIDs start again): the temporary is still
    # stale, since one job owns the directory
    (out / f".manifest.json.{os.getpid()}.tmp").write_text("{")
    resumed = write_shards(source, str(out), _options(shard_size=4, name="in", resume=True))
    assert resumed == reference
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "full"))


def test_a_fresh_run_or_overwrite_tidies_stale_temporaries(tree, tmp_path):
    source = open_source("imagenet", str(tree), "train")
    out = tmp_path / "out"
    out.mkdir()
    (out / "..sslpipe-progress.json.999999999.tmp").write_text("{")
    (out / ".in-000000.idx.999999999.tmp").write_text("v1.2")
    (out / ".notes.txt").write_text("not ours")
    write_shards(source, str(out), _options(shard_size=8, name="in"))
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    (out / ".manifest.json.999999999.tmp").write_text("{")
    write_shards(source, str(out), _options(shard_size=8, name="in", overwrite=True))
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    (out / ".manifest.json.999999999.tmp").write_text("{")
    write_shards(source, str(out), _options(shard_size=8, name="in", resume=True))  # complete
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    assert (out / ".notes.txt").exists()
