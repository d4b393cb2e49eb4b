"""A tiny few-label study through ``sslpipe study``: rotation on the embedded sample, two label
budgets, two probe seeds and two pretraining seeds, random-init and scratch baselines; the
report holds intervals, the verdicts in words and error-bar charts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from click.testing import CliRunner

STUDY = """
[study]
name = "smoke"
archs = ["nin_3block_w50"]
tasks = ["rotation"]
baselines = ["random", "scratch"]
label_budgets = [3, "100%"]
probe_seeds = 2
pretrain_seeds = 2

[train]
epochs = 1
max_steps = 2
batch_size = 16
backend = "cpu"
num_workers = 0
device = "cpu"
probe = false
progress = false
tensorboard = false

[task_options.rotation]
size = 16
mode = "random"

[[pretrain]]
name = "4k"
data = "sample:train"

[[eval]]
kind = "knn"
layers = "all"
pool = 64
k = 5
size = 16
workers = 0

[scratch]
epochs = 1             # 2 batches at 3 labels per class, 250 at 100 %: both bounded to 3
min_steps = 3
max_steps = 3
batch_size = 16
size = 16
workers = 0

[[downstream]]
name = "fm"
train = "sample:train"
test = "sample:test"
"""


def test_tiny_few_label_study_through_the_cli(tmp_path: Path) -> None:
    from sslpipe.study.cli import study

    path = tmp_path / "smoke.toml"
    path.write_text(STUDY)
    out = tmp_path / "out"
    result = CliRunner().invoke(study, [str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    cell = out / "eval/nin_3block_w50/4k/rotation/seed1/knn/fm/labels-3-per-class"
    record = json.loads(next(cell.glob("eval_*.json")).read_text())
    assert record["seeds"] == [0, 1] and record["labels"]["budget"]["per_class"] == 3
    assert record["checkpoint"]["pretrain"]["seed"] == 1
    # what the run did beside what it was asked (1 epoch, stopped at 2 steps)
    assert record["checkpoint"]["pretrain"]["steps"] == 2
    assert record["checkpoint"]["pretrain"]["max_steps"] == 2
    scratch = out / "eval/nin_3block_w50/none/scratch/scratch/fm/labels-3-per-class"
    scratch_record = json.loads(next(scratch.glob("eval_*.json")).read_text())
    assert scratch_record["checkpoint"]["method"] == "scratch"
    assert scratch_record["results"]["freeze:none"]["steps"] == 3
    full = out / "eval/nin_3block_w50/none/scratch/scratch/fm/labels-100pct"
    assert json.loads(next(full.glob("eval_*.json")).read_text())[
        "results"]["freeze:none"]["steps"] == 3
    report = out / "report"
    text = (report / "report.md").read_text()
    assert "method x label budget" in text and "intervals" in text
    # rotation pools 2 pretraining seeds x 2 probe seeds: 4 runs per cell
    rows = list(csv.DictReader((report / "study_subsets.csv").open()))
    rotation = [r for r in rows if r["method"] == "rotation"]
    assert {r["labels"] for r in rotation} == {"3/class", "100%"}
    assert {r["n"] for r in rotation} == {"4"}
    assert {r["n"] for r in rows if r["method"] in ("random", "scratch")} == {"2"}
    assert list(report.glob("budgets_knn_*.png"))
