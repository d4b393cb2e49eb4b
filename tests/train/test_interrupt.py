"""SIGINT / SIGTERM stop a run after its current step, with a checkpoint of that step, exit 130
(143), and ``--resume`` ends with an unbroken run's weights; a signal Python would have lost
in a ``__del__`` still stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sslpipe
from sslpipe.train import MemoryLoader, TrainConfig, train
from sslpipe.train.checkpoint import latest_checkpoint, load_checkpoint
from sslpipe.train.trainer import Trainer, TrainingInterrupted
from tests.data.loader_shards import make_shards
from tests.train.conftest import fake_data

OPTIONS = {"size": 32, "mode": "random"}


def _config(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(task="rotation", arch="resnet18", epochs=2, batch_size=8, lr=0.05,
                task_options=OPTIONS, out=str(tmp_path / name), log_every=10, progress=False,
                num_classes=10, seed=3, tensorboard=False, checkpoint_minutes=0)
    return TrainConfig(**{**base, **kw})


def _loader(config: TrainConfig, cls=MemoryLoader) -> MemoryLoader:
    images, labels = fake_data(32)
    task = sslpipe.create_task(config.task, **config.task_options)
    return cls(images, labels, task.collator, config.batch_size, seed=config.seed)


def _stopped(config: TrainConfig, loader) -> BaseException | None:
    # a KeyboardInterrupt that escaped would end the whole pytest session: catch it here
    try:
        train(config, loader=loader)
    except KeyboardInterrupt as err:
        return err
    return None


def _assert_same_weights(a: Path, b: Path) -> None:
    x, y = load_file(str(a / "backbone.safetensors")), load_file(str(b / "backbone.safetensors"))
    assert x.keys() == y.keys()
    for key in x:
        torch.testing.assert_close(x[key], y[key], rtol=0, atol=1e-6, msg=key)


def test_sigint_during_a_step_stops_after_it_with_a_checkpoint(tmp_path, monkeypatch):
    full = _config(tmp_path, "full")
    train(full, loader=_loader(full))
    step = Trainer._step

    def step_then_ctrl_c(self, batch):  # the signal comes in while the step runs
        stats = step(self, batch)
        if self.step == 2:  # the third step (0-based 2)
            os.kill(os.getpid(), signal.SIGINT)
        return stats

    monkeypatch.setattr(Trainer, "_step", step_then_ctrl_c)
    part = _config(tmp_path, "part")
    stop = _stopped(part, _loader(part))
    assert isinstance(stop, TrainingInterrupted), stop
    assert stop.exit_code == 130 and stop.step == 3
    assert stop.checkpoint.endswith("step-00000003.pt")
    state = load_checkpoint(latest_checkpoint(part.out))
    assert (state["step"], state["epoch"], state["batch"]) == (3, 0, 3)
    assert not (tmp_path / "part" / "final.json").exists()
    monkeypatch.setattr(Trainer, "_step", step)
    resumed = part.replace(resume=True)
    assert train(resumed, loader=_loader(resumed)).steps == 8
    _assert_same_weights(tmp_path / "full", tmp_path / "part")


class _SignalWhileWaiting(MemoryLoader):
    """Sends SIGTERM to its process while the trainer waits for batch ``at`` of epoch 1."""

    signalled_at = 0.0
    at = 1

    def iter_from(self, start):
        for i, batch in enumerate(super().iter_from(start), start):
            if (self.epoch, i) == (1, self.at):
                self.signalled_at = time.perf_counter()
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)  # a slow batch: the stop must not wait for it
            yield batch


@pytest.mark.parametrize("at", [1, 0])
def test_sigterm_while_waiting_for_data_stops_at_once(tmp_path, at):
    config = _config(tmp_path)
    loader = _loader(config, _SignalWhileWaiting)
    loader.at = at
    stop = _stopped(config, loader)
    assert time.perf_counter() - loader.signalled_at < 8  # the checkpoint, not the batch
    assert isinstance(stop, TrainingInterrupted), stop
    assert stop.exit_code == 143 and stop.step == 4 + at  # epoch 0's 4 steps, `at` of epoch 1
    state = load_checkpoint(latest_checkpoint(config.out))
    assert (state["step"], state["epoch"], state["batch"]) == (4 + at, 1, at)
    # waiting for epoch 1's first batch is not having trained epoch 1
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [x["epoch"] for x in lines if x["event"] == "epoch"] == [0]
    assert [x["step"] for x in lines if x["event"] == "step"] == [4, 5][:1 + at]


class _Iterator:
    """An epoch's batches whose ``__del__`` takes a signal, like a DataLoader iterator shutting
    its workers down at the end of an epoch (Python ignores an exception raised in __del__)."""

    def __init__(self, batches) -> None:
        self.batches = iter(batches)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.batches)

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs here, inside __del__


class _SignalAtEpochEnd(MemoryLoader):
    """Epochs start at batch 0, where the trainer takes ``iter(loader)`` and drops that
    iterator at the epoch's end."""

    def __iter__(self):
        batches = MemoryLoader.iter_from(self, 0)
        return _Iterator(batches) if self.epoch == 0 else batches


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_signal_taken_inside_a_del_still_stops_the_run(tmp_path):
    # before: the KeyboardInterrupt raised in __del__ was printed as "Exception ignored" and
    # the run trained on to its end
    config = _config(tmp_path, epochs=3)
    stop = _stopped(config, _loader(config, _SignalAtEpochEnd))
    assert isinstance(stop, TrainingInterrupted), stop
    assert stop.step == 4  # the end of epoch 0
    assert load_checkpoint(latest_checkpoint(config.out))["epoch"] == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_to_the_process_group_exits_128_plus_it_and_resumes_exactly(
        tmp_path, sig):
    # Ctrl-C in a shell, or `kill -TERM -PGID` / a scheduler stopping the job: the signal
    # reaches the whole process group, DataLoader workers included (a worker that died of
    # SIGTERM used to fail the run with "DataLoader worker is killed by signal", no checkpoint)
    make_shards(str(tmp_path / "data"), 2, 16, size=(20, 20))
    args = [sys.executable, "-m", "sslpipe.cli", "train", "rotation", "--data",
            str(tmp_path / "data"), "--arch", "resnet18", "--small-input", "-o", "size=16",
            "-o", "mode=random", "--epochs", "3", "--batch-size", "8", "--lr", "0.05",
            "--num-workers", "2", "--log-every", "1", "--no-progress", "--device", "cpu",
            "--seed", "1", "--checkpoint-minutes", "0"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(args + ["--out", str(tmp_path / "reference")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "run"
    process = subprocess.Popen(args + ["--out", str(out)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        metrics = out / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.05)
        os.killpg(process.pid, sig)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 128 + sig, err[-2000:]
    assert f"{signal.Signals(sig).name}" in err and "--resume" in err
    state = load_checkpoint(latest_checkpoint(out))
    assert 2 <= state["step"] < 12
    done = subprocess.run(args + ["--out", str(out), "--resume"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_same_weights(tmp_path / "reference", out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_handlers_are_given_back_after_the_run(tmp_path, sig):
    before = signal.getsignal(sig)
    config = _config(tmp_path, max_steps=1)
    train(config, loader=_loader(config))
    assert signal.getsignal(sig) is before
