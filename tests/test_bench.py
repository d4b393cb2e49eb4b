"""`sslpipe bench`: every backend measured or explained, beside the model step, on the sample."""

from __future__ import annotations

import itertools
import json

import torch
from click.testing import CliRunner

import sslpipe
from sslpipe.bench import bench_loader, bench_model_step
from sslpipe.cli import main
from sslpipe.data import create_loader, sample_path

ARGS = ["bench", "rotation", "--data", sample_path("test"), "-o", "size=32", "-o",
        "mode=random", "--arch", "resnet18", "--small-input", "--batch-size", "8", "--steps",
        "2", "--num-workers", "0"]


def test_bench_prints_and_writes_every_path(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, [*ARGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in rows][:3] == ["cpu", "nvjpeg", "dali"]
    assert "resnet18 model step (fp32, synthetic input)" in rows[-1] and "| 1.00 |" in rows[-1]
    record = json.loads(out.read_text())
    rates = {r["path"]: r for r in record["rates"]}
    assert rates["cpu"]["images_per_s"] > 0
    if not torch.cuda.is_available():
        assert rates["nvjpeg"]["images_per_s"] is None and "CUDA" in rates["nvjpeg"]["note"]


def test_bench_input_only_and_errors():
    result = CliRunner().invoke(main, [*ARGS, "--backends", "cpu", "--no-model"])
    assert result.exit_code == 0, result.output
    assert "model step" not in result.output and "vs model step" not in result.output
    bad = CliRunner().invoke(main, [*ARGS, "--backends", "cpu,gpu"])
    assert bad.exit_code != 0 and "unknown ['gpu']" in bad.output
    bad = CliRunner().invoke(main, [*ARGS, "--steps", "0"])
    assert bad.exit_code != 0 and "--steps" in bad.output


def test_python_api_measures_what_it_is_given():
    task = sslpipe.create_task("rotation", size=16, mode="random")
    cpu = torch.device("cpu")
    (rate,) = bench_loader(sample_path("test"), task, 4, 2, cpu, ["cpu"], num_workers=0)
    assert rate.path == "cpu" and rate.images_per_s > 0
    batch = next(iter(create_loader(sample_path("test"), task, 4, epoch_size=4, num_workers=0)))
    model = task.build(sslpipe.models.create_backbone("resnet18", small_input=True))
    step = bench_model_step(model, task, itertools.repeat(batch), 1, cpu)
    assert step.images_per_s > 0 and "fp32" in step.path


def test_bench_fed_step_rows():
    result = CliRunner().invoke(main, [*ARGS, "--backends", "cpu", "--fed"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in rows] == [
        "cpu", "resnet18 model step (fp32, synthetic input)",
        "resnet18 model step (fp32, fed by cpu)"]
    assert float(rows[2].split("|")[3]) > 0  # the fed step's share of the synthetic step
