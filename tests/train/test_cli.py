"""`sslpipe train` / `sslpipe export` on the embedded FashionMNIST sample, with create_loader."""

from __future__ import annotations

import json

from click.testing import CliRunner

from sslpipe.cli import main
from sslpipe.data import sample_path


def test_train_resume_export_on_embedded_sample(tmp_path):
    out = tmp_path / "run"
    args = ["train", "rotation", "--data", sample_path("train"), "--arch", "resnet18",
            "--small-input", "--batch-size", "8", "--epochs", "1", "-o", "size=32",
            "-o", "mode=random", "--backend", "cpu", "--num-workers", "0", "--out", str(out),
            "--no-progress", "--log-every", "1"]
    first = CliRunner().invoke(main, args + ["--max-steps", "2"])
    assert first.exit_code == 0, first.output
    # the summary says where the loader runs what (device_stage="auto" on the CPU: workers)
    assert "backend cpu (" in first.output and "0 workers, the whole collator in this " \
        "process" in first.output
    resumed = CliRunner().invoke(main, args + ["--max-steps", "3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    steps = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [s["step"] for s in steps if s["event"] == "step"] == [1, 2, 3]
    assert all(s["images"] == 8 and 0 <= s["data_wait"] <= 1 and s["img_per_s"] > 0
               for s in steps)
    config = json.loads((out / "config.json").read_text())
    assert config["task_options"] == {"size": 32, "mode": "random"}
    exported = CliRunner().invoke(main, ["export", str(out), "--out", str(tmp_path / "b.st")])
    assert exported.exit_code == 0 and (tmp_path / "b.st").is_file()


def test_train_streams_from_a_manifest_url(tmp_path):
    # data no node holds locally: the shards and their manifest behind a URL (fsspec memory://)
    import os

    import fsspec

    memory = fsspec.filesystem("memory")
    for name in os.listdir(sample_path("test")):
        with open(os.path.join(sample_path("test"), name), "rb") as f:
            memory.pipe(f"/remote/fm/{name}", f.read())
    try:
        out = tmp_path / "run"
        result = CliRunner().invoke(main, [
            "train", "rotation", "--data", "memory://remote/fm/manifest.json", "--arch",
            "resnet18", "--small-input", "--batch-size", "8", "--epochs", "1", "-o", "size=32",
            "-o", "mode=random", "--num-workers", "0", "--out", str(out), "--no-progress",
            "--max-steps", "2"])
        assert result.exit_code == 0, result.output
        assert (out / "backbone.safetensors").is_file()
        bad = CliRunner().invoke(main, ["train", "rotation", "--data",
                                        "memory://remote/none/manifest.json", "--arch",
                                        "resnet18", "--out", str(tmp_path / "x")])
        assert bad.exit_code != 0 and "cannot read the manifest" in bad.output
    finally:
        memory.rm("/remote", recursive=True)


def test_the_same_command_with_resume_continues_a_run_fitted_to_its_data(tmp_path):
    # 28 px images: the run trains at 32 px with the small stem, chosen for it (not given);
    # the resume used to compare the unfitted command with the run and refuse it
    import shutil

    from tests.data.loader_shards import make_shards

    make_shards(str(tmp_path / "d"), 2, 8, size=(28, 28))
    out = tmp_path / "run"
    args = ["train", "rotation", "--data", str(tmp_path / "d"), "--arch", "resnet18",
            "--batch-size", "4", "--epochs", "1", "--num-workers", "0", "--no-progress",
            "--log-every", "1", "--out", str(out)]
    runner = CliRunner()
    first = runner.invoke(main, args + ["--max-steps", "1"])
    assert first.exit_code == 0, first.output
    assert "images of at most 28 px" in first.stderr
    assert "4 steps of 4 per epoch x 1 epoch = 4 steps, stopping at 1" in first.stdout
    assert "1 process)" in first.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["small_input"] is True and config["task_options"] == {"size": 32}
    again = runner.invoke(main, args + ["--max-steps", "1", "--resume"])  # a finished run
    assert again.exit_code == 0, again.output
    # the short form keeps every setting of the run, its --max-steps too: nothing to do
    short = runner.invoke(main, ["train", "--out", str(out), "--resume", "--no-progress"])
    assert short.exit_code == 0, short.output
    assert "resuming" not in short.stdout and "final:" in short.stdout
    kept = json.loads((out / "config.json").read_text())
    assert kept["max_steps"] == 1 and kept["log_every"] == 1 and kept["num_workers"] == 0
    # --max-steps 0 lifts the limit: the run goes on to the end of its schedule
    resumed = runner.invoke(main, args + ["--resume", "--max-steps", "0"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming at step 1" in resumed.stdout
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").open()
            if json.loads(x)["event"] == "step"] == [1, 2, 3, 4]
    # a final.json older than the newest checkpoint (a run continued past its end, then
    # stopped) is not what a resume reports: the run is finished again from the checkpoint
    final = json.loads((out / "final.json").read_text())
    (out / "final.json").write_text(json.dumps({**final, "steps": 2}))
    stale = runner.invoke(main, ["train", "--out", str(out), "--resume", "--no-progress"])
    assert stale.exit_code == 0, stale.output
    assert json.loads((out / "final.json").read_text())["steps"] == 4
    # a given option that differs is still refused
    other = runner.invoke(main, args + ["--resume", "--no-small-input"])
    assert other.exit_code != 0 and "small_input: run has True, now False" in other.output
    # the finished run, moved: what is printed is where it is now, not final.json's old path
    moved = tmp_path / "moved"
    shutil.move(str(out), str(moved))
    done = runner.invoke(main, ["train", "--out", str(moved), "--resume", "--no-progress"])
    assert done.exit_code == 0, done.output
    assert f"run directory: {moved}\n" in done.stdout
    assert f"backbone: {moved / 'backbone.safetensors'}\n" in done.stdout


def test_an_early_ctrl_c_and_a_resume_of_nothing_say_what_happens(tmp_path, monkeypatch):
    import sslpipe.train.trainer as trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # before the trainer wrote anything

    monkeypatch.setattr(trainer, "train", interrupted)
    args = ["train", "rotation", "--data", sample_path("train"), "--arch", "resnet18",
            "--batch-size", "8", "--out", str(tmp_path / "run"), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 130
    assert "no checkpoint was written yet" in result.output  # not a promise of one
    result = CliRunner().invoke(main, [*args, "--resume"])
    assert "holds no run yet (no config.json): starting a new one" in result.output
