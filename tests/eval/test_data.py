"""eval_loader: the pretraining input path in single-pass mode, every sample once."""

from __future__ import annotations

import os

import pytest
import torch

from sslpipe.eval.data import eval_loader
from sslpipe.eval.transform import EvalCollator
from tests.data.loader_shards import make_shards


@pytest.fixture()
def uneven(tmp_path):
    make_shards(str(tmp_path / "u"), 4, [5, 2, 6, 3], size=(20, 28))
    return str(tmp_path / "u")


@pytest.mark.parametrize("workers", [0, 2, 9])
def test_every_sample_once_with_any_worker_count(uneven, workers):
    loader = eval_loader(uneven, EvalCollator(16), batch_size=4, workers=workers, backend="cpu")
    batches = list(loader)
    assert len(batches) == len(loader)
    labels = torch.cat([b.labels for b in batches])
    assert sorted(labels.tolist()) == list(range(16))
    assert all(b.inputs.shape[1:] == (3, 16, 16) for b in batches)


def test_a_corrupt_sample_is_an_error_naming_it(tmp_path):
    import webdataset as wds

    os.makedirs(tmp_path / "c")
    make_shards(str(tmp_path / "c"), 1, 3)
    path = str(tmp_path / "c" / "t-000000.tar")
    with wds.TarWriter(path) as sink:  # same keys and count as the manifest lists
        for i in range(3):
            sink.write({"__key__": f"{i:08d}", "jpg": b"\xff\xd8\xff broken", "cls": b"0"})
    with pytest.raises(ValueError, match="t-000000.tar:00000000"):
        list(eval_loader(str(tmp_path / "c"), EvalCollator(16), batch_size=2))


@pytest.mark.dali
def test_dali_backend_gives_the_cpu_backends_batches(uneven):
    cpu = list(eval_loader(uneven, EvalCollator(16), batch_size=8, backend="cpu"))
    dali = list(eval_loader(uneven, EvalCollator(16), batch_size=8, workers=1, backend="dali"))
    assert [b.labels.tolist() for b in cpu] == [b.labels.tolist() for b in dali]
    for a, b in zip(cpu, dali):
        # JPEG decoders may differ by a rounding step; normalized, that is < 0.05
        assert (a.inputs - b.inputs).abs().max() < 0.05


def test_evaluation_reads_a_manifest_url(uneven):
    fsspec = pytest.importorskip("fsspec")
    from sslpipe.eval.data import describe_data

    memory = fsspec.filesystem("memory")
    for name in os.listdir(uneven):
        with open(os.path.join(uneven, name), "rb") as f:
            memory.pipe(f"/evalbucket/u/{name}", f.read())
    try:
        url = "memory://evalbucket/u/manifest.json"
        remote = describe_data(url)
        local = describe_data(uneven)
        assert remote["path"] == url and remote["num_samples"] == 16
        assert remote["manifest_sha256"] == local["manifest_sha256"]
        labels = torch.cat([b.labels for b in eval_loader(url, EvalCollator(16), 4)])
        assert sorted(labels.tolist()) == list(range(16))
        with pytest.raises(ValueError, match="cannot read the manifest"):
            describe_data("memory://evalbucket/none/manifest.json")
    finally:
        memory.rm("/evalbucket", recursive=True)
