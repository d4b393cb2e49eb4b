import csv
import math
from pathlib import Path

import pytest

from sslpipe.study.report import sensitivity
from sslpipe.study.runner import run_study
from sslpipe.study.spec import parse_study
from tests.study.conftest import FakeBackend, study_dict


def test_sensitivity_is_the_mean_over_datasets_of_the_std_across_sizes():
    std, used = sensitivity({"cifar10": [40.0, 44.0], "svhn": [70.0, 70.0, 76.0],
                             "stl10": [12.0]})
    assert used == 2
    assert std == pytest.approx(round((2.0 + math.sqrt(8.0)) / 2, 2))
    assert sensitivity({"a": [1.0]}) == (None, 0)


def test_report_tables_hold_the_cells_numbers(tmp_path):
    # top-1 grows with the pretraining set for rotation only
    scores = {("rotation", "small"): 40.0, ("rotation", "large"): 50.0}
    backend = FakeBackend(score=lambda c: scores.get((c.method, c.pretrain), 30.0))
    study = parse_study(study_dict(eval=[{"kind": "knn"}]))
    result = run_study(study, str(tmp_path / "out"), backend=backend, log=lambda line: None)
    folder = tmp_path / "out" / "report"
    rows = list(csv.DictReader((folder / "study_sensitivity.csv").open()))
    by_method = {r["method"]: float(r["std"]) for r in rows}
    assert by_method == {"rotation": 5.0, "jigsaw": 0.0, "supervised": 0.0}
    subsets = list(csv.DictReader((folder / "study_subsets.csv").open()))
    rotation = {r["pretrain"]: float(r["top1"]) for r in subsets if r["method"] == "rotation"}
    assert rotation == {"small": 40.0, "large": 50.0}
    # best layer is the pooled one (stage1 is 10 points lower in the fake results)
    assert {r["layer"] for r in subsets} == {"pooled"}
    text = Path(result.report["markdown"]).read_text()
    assert "| rotation | 40.00 / 99.00 | 50.00 / 99.00 |" in text
    assert "| knn | all | random | - | - | - | 0 |" in text
    png = (folder / "study_subsets_knn_fm.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
