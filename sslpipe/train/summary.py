"""The few lines a run prints when it starts: model, data, loader, probe, what it writes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sslpipe.train.logging import plural

if TYPE_CHECKING:
    from sslpipe.train.trainer import Trainer

__all__ = ["describe_run"]


def describe_run(trainer: Trainer, total: int) -> list[str]:
    """What ``trainer``'s run is about to do (``total`` steps), in a few lines."""
    config, loader = trainer.config, trainer.loader
    params = sum(p.numel() for p in trainer.module.parameters())
    stem = ", small-input stem" if config.small_input else ""
    precision = {None: "fp32", torch.bfloat16: "bf16 autocast",
                 torch.float16: "fp16 autocast"}[trainer.dtype]
    samples = getattr(getattr(loader, "_plan", None), "source", None)
    count = getattr(samples, "num_samples", None)
    data = config.data or "an injected loader"
    backend = getattr(loader, "backend", None)
    workers = getattr(loader, "num_workers", None)
    stage = {"device": f"the collator's float work on {trainer.device}",
             "workers": "the collator's float work in the workers" if workers else
             "the whole collator in this process"}.get(
                 getattr(loader, "device_stage", ""), "")
    where = (f"backend {backend} ({loader.reason}), {plural(workers or 0, 'worker')}"
             + (f", {stage}" if stage else "") if backend else type(loader).__name__)
    probe = (f"on ({trainer.probe.num_classes} classes)" if trainer.probe.enabled else
             "off (--no-probe)" if not config.probe else
             "off (no class labels known: pass --num-classes)")
    saves = ["each epoch end"]
    if config.checkpoint_every:
        saves.append(f"every {plural(config.checkpoint_every, 'step')}")
    if config.checkpoint_minutes:
        saves.append(f"every {config.checkpoint_minutes:g} min")
    planned = config.epochs * trainer.steps_per_epoch
    done = f", stopping at {total} (--max-steps)" if total < planned else ""
    done += f", resuming at step {trainer.step}" if trainer.step else ""
    processes = plural(trainer.info.world_size, "process", "processes")
    return [
        f"sslpipe train {config.task}: {config.arch}{stem}, {params / 1e6:.1f}M parameters, "
        f"on {trainer.device} ({precision}, {processes})",
        f"  data {data}: {f'{count:,} samples, ' if count else ''}"
        f"{plural(trainer.steps_per_epoch, 'step')} of {config.batch_size} per epoch x "
        f"{plural(config.epochs, 'epoch')} = {plural(planned, 'step')}{done}",
        f"  loader: {where}",
        f"  online probe: {probe}",
        f"  writing {trainer.run_dir} (checkpoints {', '.join(saves)}; metrics every "
        f"{plural(config.log_every, 'step')})",
    ]
