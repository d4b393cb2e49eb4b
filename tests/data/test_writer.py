"""Tar shard writing, DALI index files and the manifest."""

from __future__ import annotations

import json
import os
import tarfile

import numpy as np
import pytest

from sslpipe.data import index_paths, read_manifest, sample_path, shard_paths
from sslpipe.data.dali_index import index_text, members_of_tar, parse_index
from sslpipe.data.writer import ShardFile, sha256_of


def _write(tmp_path, n=3):
    shard = ShardFile(str(tmp_path), "t", 0)
    for i in range(n):
        shard.add(f"k{i}", [("jpg", bytes([i]) * (100 + 700 * i)), ("cls", str(i).encode())])
    return shard


def test_shard_is_published_atomically_with_matching_index(tmp_path):
    shard = _write(tmp_path)
    assert os.listdir(tmp_path) == ["t-000000.tar.tmp"]  # nothing visible while writing
    entry = shard.close()
    assert sorted(os.listdir(tmp_path)) == ["t-000000.idx", "t-000000.tar"]
    assert entry["sha256"] == sha256_of(str(tmp_path / "t-000000.tar"))
    assert entry["bytes"] == os.path.getsize(tmp_path / "t-000000.tar")
    text = (tmp_path / "t-000000.idx").read_text()
    assert text.startswith("v1.2 3\n")
    assert text == index_text(members_of_tar(str(tmp_path / "t-000000.tar")))
    raw = (tmp_path / "t-000000.tar").read_bytes()
    for members in parse_index(text):
        for _ext, offset, size, name in members:
            with tarfile.open(tmp_path / "t-000000.tar") as tar:
                assert raw[offset:offset + size] == tar.extractfile(name).read()


def test_abort_leaves_nothing(tmp_path):
    _write(tmp_path).abort()
    assert os.listdir(tmp_path) == []


def test_same_samples_give_same_bytes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert _write(tmp_path / "a").close()["sha256"] == _write(tmp_path / "b").close()["sha256"]


def test_read_manifest_errors_are_specific(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="sslpipe-shards"):
        read_manifest(tmp_path)


def test_embedded_sample_is_balanced():
    for split, per_class in (("train", 400), ("test", 100)):
        manifest = read_manifest(sample_path(split))
        assert set(manifest["counts_per_class"].values()) == {per_class}
        assert manifest["image_format"] == "png" and len(shard_paths(sample_path(split))) >= 1
    with pytest.raises(ValueError, match="split"):
        sample_path("val")


@pytest.mark.dali
def test_dali_reads_the_index_files():
    from nvidia.dali import fn, pipeline_def, types

    path = sample_path("test")

    @pipeline_def(batch_size=250, num_threads=1, device_id=None)
    def pipe():
        image, label = fn.readers.webdataset(paths=shard_paths(path), index_paths=index_paths(path),
                                             ext=["png", "cls"], missing_component_behavior="error")
        return fn.decoders.image(image, device="cpu", output_type=types.GRAY), label

    p = pipe()
    p.build()
    labels = []
    for _ in range(4):
        images, cls = p.run()
        assert images.at(0).shape == (28, 28, 1)
        labels += [int(bytes(np.asarray(cls.at(i))).decode()) for i in range(len(cls))]
    assert np.bincount(labels).tolist() == [100] * 10
