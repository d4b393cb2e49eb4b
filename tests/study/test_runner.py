import json
import os
from pathlib import Path

import pytest

from sslpipe.study.grid import build_grid
from sslpipe.study.runner import read_record, run_study
from sslpipe.study.spec import parse_study
from tests.study.conftest import FakeBackend, study_dict


def _run(tmp_path, backend, resume=False, **changes):
    study = parse_study(study_dict(**changes))
    return run_study(study, str(tmp_path / "out"), resume=resume, backend=backend,
                     log=lambda line: None)


def test_every_cell_runs_once_in_order_and_report_is_written(tmp_path):
    backend = FakeBackend()
    result = _run(tmp_path, backend)
    grid = build_grid(parse_study(study_dict()))
    # 2 pretraining sets x (2 tasks + supervised) runs; 2 evals x (6 runs + random)
    assert len(backend.trained) == 6 and len(backend.evaluated) == 14
    assert sorted(result.ran) == sorted(c.id for c in (*grid.train, *grid.evals))
    checkpoints = dict(backend.evaluated)
    assert checkpoints["eval/resnet18/none/random/knn/fm"] == "random"
    assert checkpoints["eval/resnet18/small/supervised/knn/fm"].startswith("supervised:")
    assert checkpoints["eval/resnet18/small/rotation/knn/fm"].endswith(
        os.path.join("train", "resnet18", "small", "rotation", "run"))
    # a run is trained before its evaluations
    order = backend.trained.index("train/resnet18/large/jigsaw")
    assert order == 4
    assert os.path.isfile(result.report["markdown"])


def test_resume_skips_finished_cells(tmp_path):
    _run(tmp_path, FakeBackend())
    again = FakeBackend()
    result = _run(tmp_path, again, resume=True)
    assert again.trained == [] and again.evaluated == []
    assert len(result.skipped) == 20 and result.ran == []
    assert again.reports == 1


def test_existing_study_needs_resume(tmp_path):
    _run(tmp_path, FakeBackend())
    with pytest.raises(ValueError, match="pass --resume"):
        _run(tmp_path, FakeBackend())


def test_changed_settings_rerun_the_changed_runs_and_their_evaluations(tmp_path):
    _run(tmp_path, FakeBackend())
    again = FakeBackend()
    changed = {"rotation": {"mode": "random"}}
    _run(tmp_path, again, resume=True, task_options=changed)
    assert again.trained == ["train/resnet18/small/rotation", "train/resnet18/large/rotation"]
    assert sorted(c for c, _ in again.evaluated) == sorted(
        f"eval/resnet18/{size}/rotation/{ev}/fm" for size in ("small", "large")
        for ev in ("knn", "linear"))


def test_failed_cell_is_recorded_and_the_study_goes_on(tmp_path):
    backend = FakeBackend(fail=("jigsaw",))
    result = _run(tmp_path, backend)
    out = str(tmp_path / "out")
    record = read_record(out, "train/resnet18/small/jigsaw")
    assert record["status"] == "failed" and "unknown option(s) bogus" in record["error"]
    assert "Traceback" in record["traceback"]
    # later runs still trained and evaluated; the failed run's evaluations were not attempted
    assert "train/resnet18/large/supervised" in backend.trained
    assert not any("jigsaw" in c for c, _ in backend.evaluated)
    evaluation = read_record(out, "eval/resnet18/small/jigsaw/knn/fm")
    assert evaluation["status"] == "failed" and "training run failed" in evaluation["error"]
    assert len(result.failed) == 2 + 4
    text = Path(result.report["markdown"]).read_text()
    assert "`train/resnet18/small/jigsaw`" in text and "bogus" in text
    assert "| jigsaw | failed | failed |" in text
    # resume retries exactly the failed cells
    again = FakeBackend()
    _run(tmp_path, again, resume=True)
    assert again.trained == ["train/resnet18/small/jigsaw", "train/resnet18/large/jigsaw"]
    assert len(again.evaluated) == 4


def test_interrupted_training_run_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "out"
    study = parse_study(study_dict(study={"name": "one", "archs": ["resnet18"],
                                          "tasks": ["rotation"]}))
    cell = build_grid(study).train[0]

    class Crash(FakeBackend):
        def train(self, cell, run_dir, resume):
            os.makedirs(os.path.join(run_dir, "checkpoints"))
            open(os.path.join(run_dir, "checkpoints", "step-00000001.pt"), "w").close()
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(study, str(out), backend=Crash(), log=lambda line: None)
    assert read_record(str(out), cell.id)["status"] == "running"
    again = FakeBackend()
    run_study(study, str(out), resume=True, backend=again, log=lambda line: None)
    assert again.resumed == [cell.id]


def test_study_json_lists_the_grid(tmp_path):
    _run(tmp_path, FakeBackend())
    data = json.loads((tmp_path / "out" / "study.json").read_text())
    assert len(data["cells"]) == 20 and data["study"]["name"] == "unit"
