"""Files are written whole or not at all, with the umask's mode; a full disk is one line that
names the file, leaves no partial file behind, and the run resumes once space is freed."""

from __future__ import annotations

import errno
import os
import pathlib
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from sslpipe.atomic import (
    WriteError,
    atomic_write,
    atomic_write_text,
    remove_temporaries,
    temporary_path,
)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask_and_replace_whole(tmp_path, monkeypatch, umask, mode):
    import sslpipe.atomic as atomic

    monkeypatch.setattr(atomic, "_UMASK", umask)  # read from the process once, at import
    atomic_write_text(tmp_path / "a.json", "{}")
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == mode
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a.json", lambda tmp: (pathlib.Path(tmp).write_text("half"),
                                                       (_ for _ in ()).throw(RuntimeError())))
    assert (tmp_path / "a.json").read_text() == "{}"  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def _dead_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporaries_a_killed_writer_left_are_removed(tmp_path):
    # what SIGKILL during atomic_write leaves: the temporary, named after the dead process
    dead, other = _dead_pid(), os.getppid()  # the parent (pytest's launcher) still runs
    made = [f".j.json.{dead}.tmp", f".m.json.{os.getpid()}.tmp",  # a dead writer, this one
            f".w.json.{other}.tmp",  # another writer, running
            "keep.tmp", ".keep.tmp", "a.json"]  # not temporaries of atomic_write
    for name in made:
        (tmp_path / name).write_text("half")
    assert temporary_path(tmp_path / "m.json") == str(tmp_path / f".m.json.{os.getpid()}.tmp")
    removed = remove_temporaries(tmp_path)
    assert sorted(os.path.basename(p) for p in removed) == sorted(
        [f".j.json.{dead}.tmp", f".m.json.{os.getpid()}.tmp"])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([".keep.tmp", f".w.json.{other}.tmp", "a.json", "keep.tmp"])
    # a directory one job owns: every temporary is stale (a reused PID included)
    assert remove_temporaries(tmp_path, exclusive=True) == [str(tmp_path / f".w.json.{other}.tmp")]
    assert remove_temporaries(tmp_path / "missing") == []


def _full(tmp: str) -> None:
    with open(tmp, "wb") as f:
        f.write(b"x" * 1000)
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_file_and_leaves_nothing(tmp_path):
    with pytest.raises(WriteError, match=r"cannot write .*ckpt\.pt: the disk is full .*MB free"):
        atomic_write(tmp_path / "ckpt.pt", _full)
    assert list(tmp_path.iterdir()) == []
    # torch.save's zip writer says "unexpected pos" when it runs out of space
    def torch_full(tmp: str) -> None:
        pathlib.Path(tmp).write_bytes(b"x")
        raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 64 vs 0")

    with pytest.raises(WriteError, match="the disk is full"):
        atomic_write(tmp_path / "ckpt.pt", torch_full)
    assert list(tmp_path.iterdir()) == []
    atomic_write_text(tmp_path / "ok.txt", "fine")


def test_checkpoint_on_a_full_disk_then_resume(tmp_path, monkeypatch):
    import sslpipe
    from sslpipe.train import MemoryLoader, TrainConfig, train
    from sslpipe.train import checkpoint as ckpt
    from tests.train.conftest import fake_data

    config = TrainConfig(task="rotation", arch="resnet18", small_input=True, epochs=2,
                         batch_size=8, lr=0.05, task_options={"size": 16, "mode": "random"},
                         out=str(tmp_path / "run"), log_every=1, progress=False,
                         tensorboard=False, seed=3)
    images, labels = fake_data(16, size=16)

    def loader():
        task = sslpipe.create_task("rotation", size=16, mode="random")
        return MemoryLoader(images, labels, task.collator, 8, seed=3)

    real, saves = torch.save, []

    def failing_save(obj, f, *args, **kw):  # the second checkpoint finds the disk full
        saves.append(f)
        if len(saves) == 2:
            pathlib.Path(f).write_bytes(b"partial")
            raise RuntimeError("unexpected pos 1024 vs 0")
        return real(obj, f, *args, **kw)

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    with pytest.raises(WriteError, match=r"checkpoints/step-00000004\.pt: the disk is full"):
        train(config, loader=loader())
    assert not list((tmp_path / "run").rglob("*.tmp"))
    monkeypatch.setattr(ckpt.torch, "save", real)  # space freed
    result = train(config.replace(resume=True), loader=loader())
    reference = train(config.replace(out=str(tmp_path / "ref")), loader=loader())
    assert result.steps == reference.steps == 4


def test_a_full_disk_while_sharding_names_the_shard_and_resumes(tmp_path, monkeypatch):
    from sslpipe.data import ShardOptions, open_source, write_shards, writer

    for i in range(12):
        (tmp_path / "src" / "c").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 20, 3), 20 * i, np.uint8)).save(tmp_path / "src" / "c" /
                                                                    f"{i}.png")
    source = open_source("imagefolder", str(tmp_path / "src"), "")
    options = ShardOptions(shard_size=4, workers=1, progress=False, name="s")
    reference = write_shards(source, str(tmp_path / "ref"), options)
    real_open = open
    written = [0]

    class Filling:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            written[0] += len(data)
            if written[0] > 12_000:  # the disk fills during the second shard
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(writer, "open", lambda *a, **k: Filling(real_open(*a, **k)),
                        raising=False)
    with pytest.raises(WriteError, match=r"s-00000\d\.tar\.tmp: the disk is full"):
        write_shards(source, str(tmp_path / "out"), options)
    assert not list((tmp_path / "out").glob("*.tmp"))
    monkeypatch.setattr(writer, "open", real_open, raising=False)
    resumed = write_shards(source, str(tmp_path / "out"),
                           ShardOptions(**{**options.__dict__, "resume": True}))
    assert resumed == reference
