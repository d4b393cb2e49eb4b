"""Validation at an epoch end: the loss and the online probe's accuracy on ``config.val``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sslpipe.train.distributed import all_reduce_sum
from sslpipe.train.logging import RunLogger
from sslpipe.train.signals import StopSignals

__all__ = ["validate_epoch"]


def validate_epoch(module: nn.Module, task: Any, probe: Any, loader: Any, device: torch.device,
                   signals: StopSignals, distributed: bool, logger: RunLogger
                   ) -> dict[str, float]:
    """``{"val_loss", "val_probe_acc"}`` over every rank (one all-reduce, at the end), or
    ``{}`` when a signal stopped it (one process).

    ``module`` is the plain model, not its DDP wrapper: ranks may run different numbers of
    validation steps. A last batch shorter than ``task.min_batch_size`` is skipped, and said.
    """
    # the plain module, not the DDP wrapper: ranks may run different numbers of validation
    # steps, and DDP's forward would wait on the other ranks (buffer broadcast)
    module.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    images = probed = 0.0  # host counts: loss x n and probe acc x n are summed on the device
    loader.set_epoch(0)
    stopped = False
    with torch.no_grad():
        for batch in loader:
            if signals.signum is not None and not distributed:
                stopped = True  # the epoch's checkpoint is written: stop now
                break
            batch = batch.to(device, non_blocking=True)
            n = batch.batch_size
            if n < task.min_batch_size:  # a short last batch the loss cannot score
                logger.message(f"validation: skipped a last batch of {n} image(s): "
                               f"{task.name} needs {task.min_batch_size}")
                continue
            with probe.capture():
                outputs = module(batch.inputs)
            scores = probe.evaluate(task.probe_views(outputs, batch))
            loss = task.loss(outputs, batch).detach().double()
            sums[0] += loss * n
            if scores:
                sums[2] += scores["acc"].double() * n
                probed += n
            images += n
    module.train()
    if stopped:
        logger.message("validation: interrupted, not reported for this epoch")
        return {}
    sums[1], sums[3] = images, probed
    loss_sum, images, probe_acc, probe_n = all_reduce_sum(sums).tolist()
    out = {"val_loss": loss_sum / max(1.0, images)}
    if probe_n:
        out["val_probe_acc"] = probe_acc / probe_n
    return out
