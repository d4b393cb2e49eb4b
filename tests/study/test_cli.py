"""A tiny study end to end through `sslpipe study`: the real training and evaluation code."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from sslpipe.data import ShardOptions, write_shards
from sslpipe.data.sources import Record, Source
from sslpipe.study.backend import SslpipeBackend
from sslpipe.study.cli import study as study_command

STUDY = """
[study]
name = "tiny"
archs = ["resnet18"]
tasks = ["rotation", "jigsaw", "relative_patch"]
baselines = ["random"]

[train]
epochs = 1
max_steps = 1
batch_size = 8
lr = 0.01
num_workers = 0
backend = "cpu"
device = "cpu"
probe = false
progress = false
tensorboard = false

[task_options.rotation]
size = 16
mode = "random"

[task_options.jigsaw]
size = 24
num_permutations = 10
tile_dim = 16
hidden_dim = 16

[task_options.relative_patch]
bogus = 1

[[pretrain]]
name = "sample"
data = "sample:train"

[[eval]]
kind = "knn"
k = 5
size = 16
batch_size = 64
workers = 0

[[downstream]]
name = "stripes"
train = "stripes/train"
test = "stripes/test"
"""


def _stripes(directory, n_per_class, seed):
    """Three classes of 16 x 16 images: horizontal, vertical or no stripes, plus noise."""
    rng = np.random.default_rng(seed)
    records = []
    for label in range(3):
        for i in range(n_per_class):
            img = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
            if label == 0:
                img[::4] = 255
            elif label == 1:
                img[:, ::4] = 255
            records.append(Record(f"s{label}_{i}", label, array=img))
    source = Source("stripes", str(directory), "train", ["h", "v", "none"], True, records)
    write_shards(source, str(directory), ShardOptions(progress=False, shard_size=None))


@pytest.fixture
def study_file(tmp_path):
    _stripes(tmp_path / "stripes" / "train", 10, 0)
    _stripes(tmp_path / "stripes" / "test", 5, 1)
    path = tmp_path / "tiny.toml"
    path.write_text(STUDY)
    return path


def test_tiny_study_end_to_end_then_resume(study_file, tmp_path, monkeypatch):
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(study_command, [str(study_file), "--out", str(out)])
    # the broken cell (unknown task option) fails, the study ends with status 1 and a report
    assert result.exit_code == 1, result.output
    report = (out / "report" / "report.md").read_text()
    for method in ("random", "rotation", "jigsaw"):
        record = json.loads((out / "eval" / "resnet18" / ("none" if method == "random"
                            else "sample") / method / "knn" / "stripes" / "cell.json").read_text())
        assert record["status"] == "ok", record["error"]
        top1 = record["result"]["results"]["pooled"]["top1"]
        assert f"| {method} | {top1:.2f} / " in report
    failed = json.loads((out / "train" / "resnet18" / "sample" / "relative_patch" /
                         "cell.json").read_text())
    assert failed["status"] == "failed" and "bogus" in failed["error"]
    assert "`train/resnet18/sample/relative_patch`" in report
    assert (out / "train" / "resnet18" / "sample" / "rotation" / "run" /
            "backbone.safetensors").is_file()

    calls = []
    for name in ("train", "evaluate"):
        original = getattr(SslpipeBackend, name)

        def counted(self, *args, _original=original, _name=name):
            calls.append((_name, args[0].id))
            return _original(self, *args)

        monkeypatch.setattr(SslpipeBackend, name, counted)
    result = runner.invoke(study_command, [str(study_file), "--out", str(out), "--resume"])
    assert result.exit_code == 1, result.output
    # only the broken training run is tried again (its evaluation is not reached)
    assert calls == [("train", "train/resnet18/sample/relative_patch")]
    assert "done, skipped" in result.output
