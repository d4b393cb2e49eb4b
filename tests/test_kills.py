"""Kill at any moment, resume to the same result: ``sslpipe shard`` and ``sslpipe train`` run as
users run them (a subprocess), stopped at random instants by SIGKILL, SIGTERM or SIGINT, then
resumed with ``--resume``; the shards must equal an uninterrupted run's byte for byte, the
weights to 1e-6, and an interrupt must end the process promptly."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.data.loader_shards import make_shards

SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
PROMPT = 30.0  # seconds an interrupted run may take to end


def _sslpipe(*args: str) -> list[str]:
    return [sys.executable, "-m", "sslpipe.cli", *args]


def _run(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return time.perf_counter() - start


def _interrupt(cmd: list[str], cwd: Path, delay: float, sig: int) -> int | None:
    """Send ``sig`` after ``delay`` seconds; the exit status, None when it ended before."""
    process = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(delay)
    if process.poll() is not None:
        return None
    # a shell's Ctrl-C goes to the whole process group (workers too); kill -TERM to one
    if sig == signal.SIGINT:
        os.killpg(process.pid, sig)
    else:
        process.send_signal(sig)
    try:
        return process.wait(timeout=PROMPT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"{signal.Signals(sig).name} after {delay:.2f}s: the process did not end "
                    f"within {PROMPT:.0f}s")
    finally:
        with contextlib.suppress(ProcessLookupError):  # pool workers a SIGKILL orphaned
            os.killpg(process.pid, signal.SIGKILL)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"class{c}").mkdir()
        for i in range(30):
            small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            image = Image.fromarray(small).resize((160, 120), Image.BILINEAR)
            image.save(root / f"class{c}" / f"{i:03d}.jpg", quality=90)
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_shard_killed_at_random_instants_resumes_to_identical_files(photos, tmp_path, workers):
    args = ["shard", "imagefolder", str(photos), "--resize", "64", "--shard-size", "16",
            "-j", str(workers), "--no-progress", "--name", "p"]
    seconds = _run(_sslpipe(*args, "--out", str(tmp_path / "reference")), tmp_path)
    reference = _files(tmp_path / "reference")
    rng = random.Random(workers)
    for trial in range(3 if workers == 1 else 2):
        out = tmp_path / f"run{trial}"
        sig = rng.choice(SIGNALS)
        _interrupt(_sslpipe(*args, "--out", str(out)), tmp_path, rng.uniform(0.2, seconds), sig)
        _run(_sslpipe(*args, "--out", str(out), "--resume"), tmp_path)
        assert _files(out) == reference, (trial, signal.Signals(sig).name)


def test_ctrl_c_ends_a_parallel_shard_run_promptly(photos, tmp_path):
    # Ctrl-C used to hang in the worker pool's terminate about one run in four
    args = ["shard", "imagefolder", str(photos), "--resize", "64", "-j", "2", "--no-progress"]
    for trial in range(5):
        _interrupt(_sslpipe(*args, "--out", str(tmp_path / f"c{trial}")), tmp_path,
                   1.0 + 0.3 * trial, signal.SIGINT)


def test_train_killed_at_random_instants_resumes_to_the_same_weights(tmp_path):
    make_shards(str(tmp_path / "data"), 4, 16, size=(20, 20))
    args = ["train", "rotation", "--data", str(tmp_path / "data"), "--arch", "resnet18",
            "--small-input", "-o", "size=16", "-o", "mode=random", "--epochs", "2",
            "--batch-size", "8", "--lr", "0.05", "--num-workers", "0", "--checkpoint-every", "1",
            "--log-every", "1", "--no-progress", "--device", "cpu", "--seed", "1"]
    seconds = _run(_sslpipe(*args, "--out", str(tmp_path / "reference")), tmp_path)
    reference = load_file(str(tmp_path / "reference" / "backbone.safetensors"))
    rng = random.Random(0)
    for trial in range(2):
        out = tmp_path / f"run{trial}"
        sig = rng.choice(SIGNALS)
        delay = rng.uniform(1.0, seconds)
        status = _interrupt(_sslpipe(*args, "--out", str(out)), tmp_path, delay, sig)
        finished = (out / "final.json").exists()  # the signal met the process's exit
        if status is not None and not finished:
            # Ctrl-C and SIGTERM stop the run with a checkpoint: 128 + the signal's number
            assert status == (-sig if sig == signal.SIGKILL else 128 + sig), (sig, status)
        _run(_sslpipe(*args, "--out", str(out), "--resume"), tmp_path)
        weights = load_file(str(out / "backbone.safetensors"))
        assert weights.keys() == reference.keys()
        for key in reference:
            torch.testing.assert_close(weights[key], reference[key], rtol=0, atol=1e-6, msg=key)
        steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()
                 if json.loads(line)["event"] == "step"]
        assert steps == sorted(set(steps)), "a resumed run logged steps twice"
        leftovers = [p.name for p in out.rglob("*.tmp")]
        assert not leftovers, leftovers
