"""A training step's numbers, kept on the device: summed over steps and read once per log.

:class:`StepStats` is one step's image-weighted sums (a float64 vector on the device);
:class:`Sums` adds them up over a log window or an epoch and :meth:`Sums.read` is the only host
read (one all-reduce); :class:`DivergenceWatch` keeps the first non-finite loss on the device,
and the trainer raises :class:`TrainingDiverged` when a read finds one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sslpipe.train.distributed import all_reduce_sum

__all__ = ["DivergenceWatch", "StepStats", "Sums", "TrainingDiverged", "device_scalar"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclass
class StepStats:
    """One step's numbers: ``vec`` (float64 on the device, image-weighted sums by ``keys``)
    and the host-known counts."""

    keys: list[str]
    vec: torch.Tensor
    images: int
    probed: int


class Sums:
    """Steps' numbers summed on the device; :meth:`read` is the only host read."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.keys: list[str] = []
        self.vec: torch.Tensor | None = None
        self.images = self.probed = 0
        self.steps = 0
        self.wait = 0.0
        self.timed = 0  # images since this process started summing (a resume restarts it)

    def add(self, stats: StepStats, wait: float) -> None:
        self.keys = stats.keys
        self.vec = stats.vec if self.vec is None else self.vec + stats.vec
        self.images += stats.images
        self.probed += stats.probed
        self.steps += 1
        self.wait += wait
        self.timed += stats.images

    def read(self, seconds: float | None, due: bool = False,
             stop: bool = False) -> dict[str, float]:
        """Means per image over every rank (one all-reduce, one device sync), ``nonfinite``
        (the count of non-finite losses), ``checkpoint_due`` (how many ranks' clocks say a
        checkpoint is due), ``stop`` (how many ranks were signalled to stop), and with
        ``seconds`` the rate and the data wait."""
        if self.vec is None:
            return {}
        counts = torch.tensor([self.images, self.probed, float(due), float(stop)],
                              dtype=torch.float64)
        packed = torch.cat([self.vec, counts.to(self.device)])
        values = all_reduce_sum(packed).tolist()
        sums, (images, probed, due_ranks, stop_ranks) = (dict(zip(self.keys, values[:-4])),
                                                         values[-4:])
        per = max(1.0, images)
        out = {"loss": sums["loss"] / per, "images": images, "nonfinite": sums["nonfinite"],
               "checkpoint_due": due_ranks, "stop": stop_ranks}
        if probed:
            out.update(probe_loss=sums["probe_loss"] / per, probe_acc=sums["probe_acc"] / per)
        out.update({k: sums[k] / per for k in self.keys[4:]})
        if seconds:
            out["img_per_s"] = self.timed / seconds
            out["data_wait"] = min(1.0, self.wait / seconds)
        return out

    def state(self) -> dict[str, Any] | None:
        """The sums over every rank (an all-reduce: call it on every rank), for a checkpoint."""
        if self.vec is None:
            return None
        counts = torch.tensor([self.images, self.probed, self.steps], dtype=torch.float64)
        total = all_reduce_sum(torch.cat([self.vec, counts.to(self.device)])).cpu()
        return {"keys": list(self.keys), "vec": total[:-3], "images": int(total[-3]),
                "probed": int(total[-2]), "steps": int(self.steps)}

    def load(self, state: dict[str, Any] | None, main: bool) -> None:
        """Continue from :meth:`state`: the main rank takes the sums, the others zeros."""
        if state is None:
            return
        self.keys = list(state["keys"])
        vec = state["vec"].to(self.device, torch.float64)
        self.vec = vec if main else torch.zeros_like(vec)
        self.images = int(state["images"]) if main else 0
        self.probed = int(state["probed"]) if main else 0
        self.steps = int(state["steps"])


class DivergenceWatch:
    """The first non-finite loss of the run (its value, step and epoch), kept on the device."""

    def __init__(self, device: torch.device) -> None:
        self.step = torch.full((), -1, dtype=torch.int64, device=device)
        self.epoch = torch.full((), -1, dtype=torch.int64, device=device)
        self.value = torch.zeros((), device=device)

    def record(self, loss: torch.Tensor, step: int, epoch: int) -> None:
        first = ~torch.isfinite(loss) & (self.step < 0)
        self.step = torch.where(first, step, self.step)
        self.epoch = torch.where(first, epoch, self.epoch)
        self.value = torch.where(first, loss, self.value)

    def flag(self) -> torch.Tensor:
        """float64 0-dim: 1 when a non-finite loss was seen, on the device."""
        return (self.step >= 0).double()

    def describe(self, lr_at_step: Callable[[int], float]) -> str:
        """The step that made the loss non-finite, numbered as ``metrics.jsonl`` numbers steps
        (the steps done with it), with the lr that step ran at (``lr_at_step(index)``)."""
        index = int(self.step)
        if index < 0:
            return "loss is not finite on another rank"
        return (f"loss is {float(self.value)} at step {index + 1} (epoch {int(self.epoch)}, "
                f"lr {lr_at_step(index):.4g})")


def device_scalar(value: Any, like: torch.Tensor) -> torch.Tensor:
    # sslpipe's tasks return 0-dim device tensors; a float from a user's task costs a copy
    if isinstance(value, torch.Tensor):
        return value.detach().float().reshape(())
    return torch.as_tensor(float(value), device=like.device)
