"""Trainer: exact resume, NaN stop, bad input before work, export round trip through timm."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import sslpipe
from sslpipe.cli import main
from sslpipe.models import create_backbone
from sslpipe.train import MemoryLoader, TrainConfig, TrainingDiverged, train
from sslpipe.train.checkpoint import latest_checkpoint, load_checkpoint
from tests.train.conftest import fake_data

OPTIONS = {"size": 32, "mode": "random"}


def _config(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(task="rotation", arch="resnet18", epochs=2, batch_size=8, lr=0.05,
                warmup_epochs=0.5, task_options=OPTIONS, out=str(tmp_path / name), log_every=1,
                progress=False, num_classes=10, seed=3)
    return TrainConfig(**{**base, **kw})


def _loader(config: TrainConfig, n: int = 32) -> MemoryLoader:
    images, labels = fake_data(n)
    task = sslpipe.create_task(config.task, **config.task_options)
    return MemoryLoader(images, labels, task.collator, config.batch_size, seed=config.seed)


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    full = _config(tmp_path, "full")
    train(full, loader=_loader(full))
    part = _config(tmp_path, "part", max_steps=5)  # stops mid-epoch 1 (4 steps per epoch)
    assert train(part, loader=_loader(part)).steps == 5
    ckpt = load_checkpoint(latest_checkpoint(part.out))
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (1, 1, 5)
    resumed = part.replace(max_steps=0, resume=True)
    assert train(resumed, loader=_loader(resumed)).steps == 8
    a = load_file(str(tmp_path / "full" / "backbone.safetensors"))
    b = load_file(str(tmp_path / "part" / "backbone.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    probe_a = load_checkpoint(latest_checkpoint(full.out))["probe"]["linear"]["weight"]
    probe_b = load_checkpoint(latest_checkpoint(part.out))["probe"]["linear"]["weight"]
    torch.testing.assert_close(probe_a, probe_b, rtol=0, atol=1e-6)


def test_resume_with_a_different_config_is_refused(tmp_path):
    config = _config(tmp_path, max_steps=1)
    train(config, loader=_loader(config))
    changed = config.replace(lr=0.5, resume=True)
    with pytest.raises(ValueError, match="lr: run has 0.05, now 0.5"):
        train(changed, loader=_loader(changed))


class _PoisonedLoader(MemoryLoader):
    """Batch 2 of each epoch has NaN inputs."""

    def iter_from(self, start):
        for i, batch in enumerate(super().iter_from(start), start):
            if i == 2:
                batch.inputs = batch.inputs * float("nan")
            yield batch


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path):
    config = _config(tmp_path, checkpoint_every=1)
    images, labels = fake_data(32)
    task = sslpipe.create_task("rotation", **OPTIONS)
    loader = _PoisonedLoader(images, labels, task.collator, 8, seed=3)
    # the third step (step 3 in metrics.jsonl) made the loss NaN; the checkpoint after step 2
    # is the last good one
    with pytest.raises(TrainingDiverged,
                       match=r"loss is nan at step 3 \(epoch 0, lr .*step-00000002"):
        train(config, loader=loader)
    last = latest_checkpoint(config.out)
    assert last.endswith("step-00000002.pt")
    state = load_checkpoint(last)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_divergence_names_the_lr_of_the_step_that_made_it(tmp_path):
    # warm-up over the first epoch: lr 0.0125, 0.025, 0.0375 (the NaN step), 0.05; with
    # log_every=4 the NaN is read at step 4, whose lr is not the one that made it
    config = _config(tmp_path, warmup_epochs=1.0, log_every=4, checkpoint_minutes=0)
    images, labels = fake_data(32)
    task = sslpipe.create_task("rotation", **OPTIONS)
    loader = _PoisonedLoader(images, labels, task.collator, 8, seed=3)
    with pytest.raises(TrainingDiverged,
                       match=r"loss is nan at step 3 \(epoch 0, lr 0.0375\).*none written yet"):
        train(config, loader=loader)


def _lines(run_dir, event: str) -> list[dict]:
    """metrics.jsonl's lines of ``event``, without the timings (which vary run to run)."""
    out = []
    for line in (run_dir / "metrics.jsonl").open():
        record = json.loads(line)
        if record["event"] == event:
            out.append({k: v for k, v in record.items() if k not in ("img_per_s", "data_wait")})
    return out


class _CrashLoader(MemoryLoader):
    """Dies fetching batch ``index`` of epoch ``epoch``: a kill at that instant."""

    crash_at = (1, 2)

    def iter_from(self, start):
        for i, batch in enumerate(super().iter_from(start), start):
            if (self.epoch, i) == self.crash_at:
                raise RuntimeError("killed")
            yield batch


def test_metric_lines_after_a_resume_mid_epoch_equal_an_unbroken_runs(tmp_path):
    # 4 steps per epoch, a line every 3 steps and at epoch ends: lines at steps 3, 4, 6, 8. The
    # crashed run's last checkpoint is step 5, one step into the window of the line at 6 and
    # into epoch 1, whose line must still count all of its 32 images
    full = _config(tmp_path, "full", log_every=3)
    train(full, loader=_loader(full))
    part = _config(tmp_path, "part", log_every=3, checkpoint_every=5)
    images, labels = fake_data(32)
    task = sslpipe.create_task("rotation", **OPTIONS)
    with pytest.raises(RuntimeError, match="killed"):
        train(part, loader=_CrashLoader(images, labels, task.collator, 8, seed=3))
    assert latest_checkpoint(part.out).endswith("step-00000005.pt")
    resumed = part.replace(resume=True)
    train(resumed, loader=_loader(resumed))
    for event in ("step", "epoch"):
        expected, got = _lines(tmp_path / "full", event), _lines(tmp_path / "part", event)
        assert [x["step"] for x in got] == [x["step"] for x in expected]
        for a, b in zip(got, expected):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-9), (event, a, b)
    assert [x["images"] for x in _lines(tmp_path / "part", "epoch")] == [32, 32]


def test_the_last_step_is_logged_at_a_max_steps_stop(tmp_path):
    for max_steps, expected in ((1, [1]), (3, [2, 3])):
        config = _config(tmp_path, f"max{max_steps}", log_every=2, max_steps=max_steps)
        train(config, loader=_loader(config))
        lines = _lines(tmp_path / f"max{max_steps}", "step")
        assert [x["step"] for x in lines] == expected
        assert lines[-1]["images"] == 8 and lines[-1]["lr"] > 0
    # resumed, the run's next line covers the steps after the stop's (no step twice)
    resumed = config.replace(max_steps=0, resume=True)
    train(resumed, loader=_loader(resumed))
    lines = _lines(tmp_path / "max3", "step")
    assert [x["step"] for x in lines] == [2, 3, 4, 6, 8]
    assert [x["images"] for x in lines] == [16, 8, 8, 16, 16]


def test_bad_input_fails_before_work(tmp_path):
    runner = CliRunner()
    cases = [
        (["train", "rotaton", "--data", str(tmp_path)], "Did you mean: rotation"),
        (["train", "rotation", "--arch", "resnet1", "--data", str(tmp_path)], "resnet18"),
        (["train", "rotation", "--arch", "resnet18", "--data", str(tmp_path)], "manifest.json"),
        (["train", "rotation", "--batch-size", "7", "--procs", "2"], "divisible"),
        (["train", "rotation", "--arch", "resnet18", "--data", str(tmp_path), "--resume",
          "--out", str(tmp_path / "none")], None),
    ]
    for args, message in cases:
        result = runner.invoke(main, args)
        assert result.exit_code != 0, args
        if message:
            assert message in result.output, (args, result.output)
    assert not (tmp_path / "none").exists()


def test_export_round_trips_through_timm(tmp_path):
    config = _config(tmp_path, arch="alexnet_bn", freeze_until="conv2", max_steps=2,
                     task_options={"size": 64, "mode": "random"})
    images, labels = fake_data(32, size=64)
    task = sslpipe.create_task("rotation", size=64, mode="random")
    train(config, loader=MemoryLoader(images, labels, task.collator, 8, seed=0))
    out = tmp_path / "backbone.safetensors"
    result = CliRunner().invoke(main, ["export", config.out, "--out", str(out)])
    assert result.exit_code == 0, result.output
    loaded = timm.create_model("alexnet_bn", pretrained=True, num_classes=0,
                               pretrained_cfg_overlay=dict(file=str(out))).eval()
    state = load_checkpoint(latest_checkpoint(config.out))
    expected = create_backbone("alexnet_bn")
    expected.load_state_dict({k[len("backbone."):]: v for k, v in state["model"].items()
                              if k.startswith("backbone.")}, strict=False)
    expected.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected(x), rtol=0, atol=0)
    trained = state["model"]["backbone.conv4.0.weight"]
    assert torch.equal(loaded.conv4[0].weight, trained)
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["steps"] == 2


@pytest.mark.gpu
@pytest.mark.parametrize("name", sslpipe.list_tasks())
def test_training_steps_between_logs_never_wait_on_the_host(tmp_path, name):
    # torch's sync debug mode raises on every operation that makes the host wait for the GPU
    # (.item(), float(), a device-to-host copy, a blocking host-to-device copy, nonzero, ...)
    from sslpipe.train.distributed import DistInfo
    from sslpipe.train.trainer import Trainer
    from tests.train.conftest import tiny_options

    size = tiny_options(name).get("size", 32)
    images, labels = fake_data(16, size=max(size, 32))
    options = tiny_options(name, tmp_path)
    config = _config(tmp_path, task=name, task_options=options, log_every=1000, device="cuda")
    task = sslpipe.create_task(name, **options)
    trainer = Trainer(config, DistInfo(device=torch.device("cuda", 0)),
                      loader=MemoryLoader(images, labels, task.collator, 8, seed=0))
    batches = [task.collator([(im.cuda(), int(y)) for im, y in zip(images[i:i + 8],
                                                                  labels[i:i + 8])])
               for i in (0, 8)]
    trainer._step(batches[0])  # first step: lazy initialisation (cuDNN, allocator) may wait
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches * 2:
            trainer._step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
