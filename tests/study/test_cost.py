import json
import os

import pytest
from click.testing import CliRunner

from sslpipe.study.cli import study as study_command
from sslpipe.study.cost import DEFAULT_IMG_PER_S, estimate
from sslpipe.study.grid import build_grid
from sslpipe.study.spec import parse_study
from tests.study.conftest import study_dict


def _study(**changes):
    raw = study_dict(**changes)
    raw["train"] = {**raw["train"], "device": "cpu"}
    return parse_study(raw)


def test_training_estimate_is_images_over_rate():
    study = _study(task_options={"rotation": {"size": 32, "mode": "random"}})
    grid = build_grid(study)
    cost = estimate(study, grid)
    rate, side = DEFAULT_IMG_PER_S[("cpu", "resnet18", False)]
    cell = cost["train/resnet18/small/rotation"]
    assert cell.img_per_s == pytest.approx(rate * (side / 32) ** 2)
    # one epoch over the embedded sample's 4,000 images
    assert cell.seconds == pytest.approx(4000 / cell.img_per_s)


def test_measured_rates_of_finished_runs_win(tmp_path):
    study = _study(task_options={"rotation": {"size": 32, "mode": "random"}})
    folder = tmp_path / "train" / "resnet18" / "small" / "rotation"
    (folder / "run").mkdir(parents=True)
    (folder / "cell.json").write_text(json.dumps(
        {"status": "ok", "result": {"img_per_s": 1000.0}}))
    (folder / "run" / "config.json").write_text(json.dumps(
        {"task_options": {"size": 32, "mode": "random"}}))
    cost = estimate(study, build_grid(study), out=str(tmp_path))
    assert cost["train/resnet18/large/rotation"].img_per_s == pytest.approx(1000.0)
    assert cost["train/resnet18/large/rotation"].source == "measured in this study"


def test_dry_run_prints_the_grid_and_the_count(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text("""
[study]
name = "dry"
archs = ["resnet18"]
tasks = ["rotation", "jigsaw"]
[train]
device = "cpu"
[[pretrain]]
name = "30k"
data = "shards/missing"
[[eval]]
kind = "knn"
[[downstream]]
name = "fm"
train = "sample:train"
test = "sample:test"
""")
    result = CliRunner().invoke(study_command, [str(path), "--dry-run",
                                                "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "2 training runs, 2 evaluation cells (4 cells)" in result.output
    assert "train/resnet18/30k/jigsaw" in result.output
    assert "estimated total:" in result.output
    assert not os.path.exists(tmp_path / "out")


def test_invalid_study_is_a_clear_cli_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[study]\nname = "x"\narchs = ["resnet18"]\n')
    result = CliRunner().invoke(study_command, [str(path), "--dry-run"])
    assert result.exit_code != 0
    assert "missing key(s)" in result.output
