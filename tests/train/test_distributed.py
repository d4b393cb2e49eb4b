"""Two CPU processes (gloo DDP): global batch, identical replicas, all-reduced metrics."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from sslpipe.train import MemoryLoader, TrainConfig, train
from sslpipe.train.checkpoint import latest_checkpoint, load_checkpoint
from tests.train.conftest import fake_data


class RankLoader:
    """Picklable make_loader: each rank reads its own half of the same 32 images."""

    def __call__(self, config, task, split, info):
        images, labels = fake_data(32)
        return MemoryLoader(images, labels, task.collator, config.batch_size // info.world_size,
                            seed=config.seed, rank=info.rank, world_size=info.world_size)


def test_two_process_gloo_run(tmp_path):
    config = TrainConfig(task="rotation", arch="resnet18", epochs=1, batch_size=8, procs=2,
                         task_options={"size": 32, "mode": "random"}, out=str(tmp_path / "ddp"),
                         log_every=1, progress=False, num_classes=10)
    result = train(config, make_loader=RankLoader())
    # 32 images, global batch 8 -> 4 steps of 4 images on each of 2 ranks
    assert result.steps == 4
    steps = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").open()]
    steps = [s for s in steps if s["event"] == "step"]
    assert [s["images"] for s in steps] == [8.0] * 4
    assert result.metrics["images"] == 32.0
    state = load_checkpoint(latest_checkpoint(config.out))
    assert state["step"] == 4 and "module." not in next(iter(state["model"]))
    backbone = load_file(str(tmp_path / "ddp" / "backbone.safetensors"))
    assert torch.isfinite(backbone["conv1.weight"]).all()


def test_validation_reads_every_sample_once_over_ranks_with_uneven_steps(tmp_path):
    import sslpipe
    from sslpipe.train.distributed import DistInfo
    from sslpipe.train.trainer import default_loader
    from tests.data.loader_shards import make_shards

    val = str(tmp_path / "val")
    make_shards(val, 3, [9, 2, 5], size=(32, 32))  # rank 0 gets shards 0 and 2, rank 1 shard 1
    make_shards(str(tmp_path / "train"), 4, 8, size=(32, 32))
    config = TrainConfig(task="rotation", arch="resnet18", epochs=1, batch_size=8, procs=2,
                         task_options={"size": 32, "mode": "random"}, out=str(tmp_path / "ddp"),
                         log_every=1, progress=False, num_classes=32, num_workers=0,
                         data=str(tmp_path / "train"), val=val, small_input=True)
    task = sslpipe.create_task("rotation", size=32, mode="random")
    seen, steps = [], []
    for rank in range(2):
        info = DistInfo(rank=rank, world_size=2, local_rank=rank, device=torch.device("cpu"))
        loader = default_loader(config, task, "val", info)
        batches = list(loader)
        steps.append(len(batches))
        seen += [i for b in batches for i in b.labels.tolist()]
    assert sorted(seen) == list(range(16)) and steps == [4, 1]
    # the two processes run 4 and 1 validation steps and still meet at the end
    result = train(config)
    assert result.steps == 4 and "val_loss" in result.metrics


def test_two_process_simclr_gathers_its_negatives(tmp_path):
    # nt_xent all-gathers the embeddings inside the DDP step (and the memory estimate does
    # not): the run finishes with a finite loss on every step
    config = TrainConfig(task="simclr", arch="resnet18", epochs=1, batch_size=8, procs=2,
                         task_options={"size": 32, "hidden_dim": 64, "projection_dim": 16},
                         out=str(tmp_path / "ddp"), log_every=1, progress=False, probe=False)
    result = train(config, make_loader=RankLoader())
    assert result.steps == 4
    steps = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").open()]
    losses = [s["loss"] for s in steps if s["event"] == "step"]
    assert len(losses) == 4 and all(0 < loss < 10 for loss in losses)


def test_sync_bn_defaults_follow_the_authors_and_need_cuda(tmp_path):
    import pytest

    import sslpipe

    # SimCLR's global BN and VICReg's SyncBatchNorm: on by default under DDP on GPUs
    assert [sslpipe.create_task(n).sync_bn for n in ("simclr", "vicreg", "rotation",
                                                     "rotation+simclr")] == [
        True, True, False, True]
    assert TrainConfig().sync_bn is None
    config = TrainConfig(task="rotation", arch="resnet18", epochs=1, batch_size=8, procs=2,
                         task_options={"size": 32, "mode": "random"}, sync_bn=True,
                         out=str(tmp_path / "cpu"), progress=False, probe=False)
    with pytest.raises(Exception, match="SyncBatchNorm works on CUDA devices only"):
        train(config, make_loader=RankLoader())
