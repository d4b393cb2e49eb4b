"""A run directory holds one run: refusal, --overwrite, resume of a finished run and of one killed
before its first checkpoint, tidying after a kill, and time-based checkpoints."""

from __future__ import annotations

import json

import pytest

import sslpipe
from sslpipe.train import MemoryLoader, TrainConfig, train
from sslpipe.train.checkpoint import latest_checkpoint
from sslpipe.train.rundir import holds_run, tidy_for_resume
from tests.train.conftest import fake_data

OPTIONS = {"size": 16, "mode": "random"}


def _config(tmp_path, **kw) -> TrainConfig:
    base = dict(task="rotation", arch="resnet18", small_input=True, epochs=1, batch_size=8,
                lr=0.05, task_options=OPTIONS, out=str(tmp_path / "run"), log_every=1,
                progress=False, num_classes=10, seed=3, tensorboard=False)
    return TrainConfig(**{**base, **kw})


def _loader(config: TrainConfig, n: int = 16) -> MemoryLoader:
    images, labels = fake_data(n, size=16)
    task = sslpipe.create_task(config.task, **config.task_options)
    return MemoryLoader(images, labels, task.collator, config.batch_size, seed=config.seed)


def test_a_second_run_into_the_same_directory_is_refused_unless_overwrite(tmp_path):
    config = _config(tmp_path)
    train(config, loader=_loader(config))
    (tmp_path / "run" / "eval").mkdir()
    (tmp_path / "run" / "eval" / "linear.json").write_text("{}")
    with pytest.raises(ValueError, match="already holds a run.*--resume.*--overwrite"):
        train(config, loader=_loader(config))
    again = config.replace(overwrite=True, lr=0.01)
    train(again, loader=_loader(again))
    assert not (tmp_path / "run" / "eval").exists()  # an old eval/ never sits beside new weights
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lr"] == 0.01
    with pytest.raises(ValueError, match="exclude each other"):
        config.replace(resume=True, overwrite=True)


def test_resuming_a_finished_run_keeps_its_result(tmp_path):
    config = _config(tmp_path)
    first = train(config, loader=_loader(config))
    final = (tmp_path / "run" / "final.json").read_text()
    assert first.metrics
    again = train(config.replace(resume=True), loader=_loader(config))
    assert (tmp_path / "run" / "final.json").read_text() == final
    assert again.metrics == first.metrics and again.steps == first.steps


def test_resume_before_the_first_checkpoint_starts_from_the_beginning(tmp_path):
    config = _config(tmp_path)
    reference = train(config.replace(out=str(tmp_path / "ref")), loader=_loader(config))
    run = tmp_path / "run"
    run.mkdir()  # a run killed before its first checkpoint: a config and a partial log line
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    (run / "metrics.jsonl").write_text('{"event": "step", "step": 1, "loss": 1.0}\n{"event": "st')
    (run / ".final.json.tmp").write_text("{")
    result = train(config.replace(resume=True), loader=_loader(config))
    assert result.steps == reference.steps and result.metrics == reference.metrics
    assert not list(run.rglob("*.tmp"))


def test_tidy_for_resume_drops_partial_lines_later_steps_and_temporaries(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".step-00000004.pt.123.tmp").write_bytes(b"half")
    lines = [{"event": "step", "step": s} for s in (1, 2, 3, 4, 5)] + [{"event": "epoch",
                                                                       "step": 4}]
    text = "".join(json.dumps(x) + "\n" for x in lines)
    (tmp_path / "metrics.jsonl").write_text(text + '{"event": "step", "st')
    tidy_for_resume(tmp_path, 4)
    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert [x["step"] for x in kept] == [1, 2, 3, 4, 4]
    assert not list(tmp_path.rglob("*.tmp"))
    assert holds_run(tmp_path)


def test_checkpoints_by_time(tmp_path):
    images, labels = fake_data(32, size=16)
    every = _config(tmp_path, checkpoint_minutes=1e-9, keep_checkpoints=100)
    train(every, loader=MemoryLoader(images, labels, sslpipe.create_task(
        "rotation", **OPTIONS).collator, 8, seed=3))
    saved = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert len(saved) == 4  # a checkpoint at every log step (4 steps), none twice
    never = _config(tmp_path, out=str(tmp_path / "never"), checkpoint_minutes=0,
                    keep_checkpoints=100)
    train(never, loader=MemoryLoader(images, labels, sslpipe.create_task(
        "rotation", **OPTIONS).collator, 8, seed=3))
    assert latest_checkpoint(tmp_path / "never").endswith("step-00000004.pt")
    assert len(list((tmp_path / "never" / "checkpoints").iterdir())) == 1  # the epoch end's
