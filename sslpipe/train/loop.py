"""The :class:`Trainer`: one process' share of a run, its loop and its checkpoints.

Per step the trainer does only ``task.loss(model(batch.inputs), batch)``. The class holds the
run's state (step, epoch, the epoch's and the log window's sums, the stop and checkpoint flags)
and the methods that read and write it: the epoch loop, the step, the log read, checkpoint
save and resume. What needs none of that state lives beside it (see :mod:`sslpipe.train.trainer`).

Size: one class whose methods share the run's state; the loop, the step and the checkpoint
save/resume read and write the same fields, so splitting them would scatter one state machine
over several files. Everything without that state is already in its own module.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslpipe.atomic import atomic_write_text
from sslpipe.batch import Batch
from sslpipe.tasks.base import StepInfo
from sslpipe.train import checkpoint as ckpt
from sslpipe.train import footprint
from sslpipe.train.config import TrainConfig
from sslpipe.train.distributed import DistInfo, all_reduce_sum, barrier, under_torchrun
from sslpipe.train.export import export_networks, network_prefixes
from sslpipe.train.loading import MakeLoader, default_loader
from sslpipe.train.logging import RunLogger, write_config
from sslpipe.train.optim import create_optimizer, lr_at, set_lr
from sslpipe.train.probe import OnlineProbe
from sslpipe.train.rundir import TrainResult, prepare_run_dir, read_result, tidy_for_resume
from sslpipe.train.signals import StopSignals, TrainingInterrupted, WaitInterrupted, timed
from sslpipe.train.stepstats import (
    DivergenceWatch,
    StepStats,
    Sums,
    TrainingDiverged,
    device_scalar,
)
from sslpipe.train.summary import describe_run
from sslpipe.train.validation import validate_epoch

__all__ = ["Trainer"]


class Trainer:
    """One process' share of a run. Build it, then :meth:`fit`."""

    def __init__(self, config: TrainConfig, info: DistInfo | None = None, loader: Any = None,
                 make_loader: MakeLoader | None = None, fit_batch: bool = False) -> None:
        from sslpipe.models import create_backbone, freeze_until
        from sslpipe.registry import create_task

        self.config, self.info = config, info or DistInfo()
        if config.batch_size % self.info.world_size:
            raise ValueError(f"batch_size must be divisible by the number of processes "
                             f"({self.info.world_size}). Got {config.batch_size}")
        self.device = self.info.device
        self.run_dir = Path(config.out)
        self.dtype = _autocast_dtype(config.precision, self.device)
        torch.manual_seed(config.seed)
        self.task = create_task(config.task, **config.task_options)
        per_process = config.batch_size // self.info.world_size
        if per_process < self.task.min_batch_size:
            raise ValueError(
                f"batch_size: {config.task} needs at least {self.task.min_batch_size} images per "
                f"batch in each process (its loss or its heads' BatchNorm compare the images of "
                f"a batch). Got batch_size={config.batch_size} over {self.info.world_size} "
                f"process(es)")
        backbone = create_backbone(config.arch, small_input=config.small_input)
        if config.freeze_until:
            freeze_until(backbone, config.freeze_until)
        self.backbone = backbone
        model = self.task.build(backbone)
        # the backbone's copies: online, and the teacher's when a MomentumPair holds it
        self.prefixes = network_prefixes(model, backbone, self.task.eval_network)
        self.prefix = self.prefixes["online"]
        # measured on a CPU copy before the model moves: the device holds nothing extra
        self._footprint = (footprint.measure(self.task, model, self.dtype, config.optimizer,
                                             config.momentum)
                           if config.memory_check else None)
        # SyncBatchNorm runs on CUDA only: the default turns it on there for the tasks that
        # want it; asked for on CPU processes, it is an error
        sync_bn = (config.sync_bn if config.sync_bn is not None
                   else self.task.sync_bn and self.device.type == "cuda")
        if self.info.distributed and sync_bn and self.device.type != "cuda":
            raise ValueError("sync_bn: SyncBatchNorm works on CUDA devices only; pass "
                             "--no-sync-bn for CPU processes (--procs)")
        if self.info.distributed and sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.module = model
        self._injected = loader is not None
        if not config.resume:  # a resumed run keeps its batch: checked in fit(), unless done
            self.config = config = self._check_memory(fit_batch)
        make_loader = make_loader or default_loader
        self.loader = loader if loader is not None else make_loader(config, self.task, "train",
                                                                    self.info)
        self.val_loader = (make_loader(config, self.task, "val", self.info)
                           if config.val is not None else None)
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise ValueError("data: the loader yields no batch per epoch (too few samples for "
                             f"batch_size={config.batch_size})")
        self.model: nn.Module = model
        if self.info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if config.compile:
            self.model = torch.compile(self.model)  # type: ignore[assignment]
        self.optimizer = create_optimizer(config, [model])
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.dtype == torch.float16)
        self.probe = OnlineProbe.create(config, backbone, self.loader, self.info)
        self.step, self.epoch, self.start_batch = 0, 0, 0
        # the epoch's and the log window's sums: in checkpoints, so that the lines logged after
        # a resume mid-epoch equal an unbroken run's
        self._totals, self._window = Sums(self.device), Sums(self.device)
        self.last_checkpoint: str | None = None
        self._watch = DivergenceWatch(self.device)
        self._saved_at = time.monotonic()
        self.saved_step = -1  # the same on every rank, unlike last_checkpoint (rank 0 only)
        self._signals = StopSignals(immediate=not self.info.distributed)
        self._stopping = False  # a stop all ranks agreed on (one process: its own signal)
        self._due = False  # a checkpoint is due by the clock (agreed at the last log step)
        self._probe_note = False
        if self.info.main and under_torchrun() and not config.resume:
            prepare_run_dir(self.run_dir, config.resume, config.overwrite)
        if config.resume:
            last = ckpt.latest_checkpoint(self.run_dir)
            if last is not None:
                self._restore(last)
            if self.info.main:  # what a kill left: temporaries, metric lines to be relogged
                tidy_for_resume(self.run_dir, self.step)
        barrier()

    # ---------------------------------------------------------------- public
    def fit(self) -> TrainResult:
        """Run the remaining epochs; checkpoint, export the backbone, return the result.

        SIGINT (Ctrl-C) and SIGTERM stop the run after its current step (at once when it is
        waiting for data), with a checkpoint of that step: :class:`TrainingInterrupted`. A
        second signal stops it where it is (the newest checkpoint is kept). With several
        processes the ranks stop together, at the next log step.
        """
        config = self.config
        total = config.epochs * self.steps_per_epoch
        if config.max_steps:
            total = min(total, config.max_steps)
        final = self.run_dir / "final.json"
        if (config.resume and self.step >= total and final.is_file()
                and read_result(str(self.run_dir)).steps == self.step):
            # a finished run: its result stands (resuming must not rewrite it with nothing);
            # a final.json of an earlier step (a run continued past it) is written anew
            barrier()
            return read_result(str(self.run_dir))
        if config.resume:
            self._check_memory(fit_batch=False)
        if self.info.main:
            write_config(self.run_dir, config.to_dict())
        logger = RunLogger(self.run_dir, total, self.step, self.info.main, config.progress,
                           config.tensorboard)
        for line in self.summary(total):
            logger.message(line)
        summary: dict[str, float] = {}
        try:
            with self._signals:
                while (self.epoch < config.epochs and not self._done()
                       and not self._stop_requested()):
                    summary, completed = self._epoch(logger)
                    if completed:
                        epoch = self.epoch
                        self.epoch += 1
                        self._save()  # before validation, which must not be able to lose it
                        summary.update(self._validate(logger))
                        logger.log({"event": "epoch", "step": self.step, "epoch": epoch,
                                    **summary})
                        logger.message(f"epoch {epoch}: " + ", ".join(
                            f"{k} {v:.4g}" for k, v in summary.items()))
                if self.saved_step != self.step:
                    self._save()
                if self._stop_requested() and self.epoch < config.epochs and not self._done():
                    signum = self._signals.signum or signal.SIGINT
                    logger.message(f"stopped by {signal.Signals(signum).name} after step "
                                   f"{self.step}; checkpoint {self.last_checkpoint}")
                    raise TrainingInterrupted(signum, self.step, self.last_checkpoint)
        finally:
            logger.close()
        return self._finish(summary)

    def summary(self, total: int) -> list[str]:
        """What the run is about to do, in a few lines (printed when it starts)."""
        return describe_run(self, total)

    # ---------------------------------------------------------------- one epoch
    def _epoch(self, logger: RunLogger) -> tuple[dict[str, float], bool]:
        """Train the rest of the epoch, or until a stop; its summary, and whether it completed
        (a stop while waiting for its first batch leaves it not begun)."""
        config = self.config
        self.model.train()
        self.probe.train()
        if self.start_batch == 0:  # a new epoch (a resume mid-epoch restored both)
            self._totals, self._window = Sums(self.device), Sums(self.device)
        totals = self._totals
        t_last = time.perf_counter()
        due = False
        try:
            for batch, wait in timed(self._batches(), self._signals):
                if batch.batch_size < self.task.min_batch_size:  # a short last batch: no step
                    self.start_batch += 1
                    logger.message(f"skipped a last batch of {batch.batch_size} image(s): "
                                   f"{config.task} needs {self.task.min_batch_size} per batch")
                    continue
                lr = lr_at(config, self.step, self.steps_per_epoch)
                set_lr(self.optimizer, lr)
                stats = self._step(batch)
                if not stats.probed and self.probe.enabled and not self._probe_note:
                    self._probe_note = True  # said once: a probe announced is one that trains
                    logger.message(f"online probe: not trained on this batch: "
                                   f"{self.probe.unmatched}")
                self.step += 1
                self.start_batch += 1
                totals.add(stats, wait)
                self._window.add(stats, wait)
                logger.advance(1)  # every step; the numbers only at log steps (no host read)
                # one process stops after the step a signal came in; ranks agree at log steps
                stopping = self._signals.signum is not None and not self.info.distributed
                if (self.step % config.log_every == 0 or self.start_batch == self.steps_per_epoch
                        or self._done() or stopping):
                    # the one host read (and all-reduce) in log_every steps
                    now = time.perf_counter()
                    due = (config.checkpoint_minutes > 0 and
                           time.monotonic() - self._saved_at >= 60 * config.checkpoint_minutes)
                    self._log_window(logger, lr, now - t_last, due)
                    due = self._due
                    t_last = now
                if due or (config.checkpoint_every and self.step % config.checkpoint_every == 0):
                    self._save()
                due = False
                if self._done() or self._stopping:
                    break
        except WaitInterrupted:
            pass  # a signal while waiting for data: the model is at the end of its last step
        if self._window.steps:  # an early stop between log steps: its last steps are logged
            self._log_window(logger, lr_at(config, max(0, self.step - 1), self.steps_per_epoch),
                             time.perf_counter() - t_last, False)
            if self.saved_step == self.step:  # that checkpoint holds the steps just logged
                self.saved_step = -1
        completed = self.start_batch >= self.steps_per_epoch
        if completed:
            self.start_batch = 0
        summary = totals.read(None)
        summary.pop("nonfinite", None)
        summary.pop("checkpoint_due", None)
        summary.pop("stop", None)
        return summary, completed

    def _log_window(self, logger: RunLogger, lr: float, seconds: float, due: bool) -> None:
        """Read the steps since the last log (one all-reduce), act on a divergence, log them;
        sets ``_due`` (a rank's clock says checkpoint) and ``_stopping`` (a rank was
        signalled), which every rank then agrees on."""
        window = self._window
        if not window.steps:
            self._due = False
            return
        signalled = self._signals.signum is not None
        record = window.read(seconds, due, signalled)
        if record.pop("nonfinite", 0.0):
            self._diverged()
        self._due = bool(record.pop("checkpoint_due", 0.0))  # any rank's clock: all agree
        self._stopping = self._stopping or bool(record.pop("stop", 0.0))
        record["lr"] = lr
        logger.log({"event": "step", "step": self.step, "epoch": self.epoch, **record})
        logger.advance(0, {k: record[k] for k in ("loss", "lr", "img_per_s", "data_wait")})
        self._window = Sums(self.device)

    def _stop_requested(self) -> bool:
        if self.info.distributed:
            return self._stopping  # agreed at a log step
        return self._stopping or self._signals.signum is not None

    def _check_memory(self, fit_batch: bool) -> TrainConfig:
        """The config whose step fits in the device's memory (:func:`footprint.fit_config`)."""
        return footprint.fit_config(self.config, self._footprint, self.info, self._injected,
                                    self.task.min_batch_size, fit_batch)

    def _batches(self) -> Iterator[Batch]:
        self.loader.set_epoch(self.epoch)
        if self.start_batch and hasattr(self.loader, "iter_from"):
            yield from self.loader.iter_from(self.start_batch)
            return
        it = iter(self.loader)
        for _ in range(self.start_batch):  # replay the consumed batches: same seed, same order
            next(it)
        yield from it

    def _step(self, batch: Batch) -> StepStats:
        """Forward, loss, backward, optimizer step; nothing read back from the device.

        The step's numbers stay device tensors (summed by :class:`Sums` and read every
        ``log_every`` steps); a non-finite loss is recorded on the device (its first step and
        value) and acted on at the next read, before any checkpoint is written.
        """
        batch = batch.to(self.device, non_blocking=True)
        inputs = batch.inputs
        if self.config.channels_last:
            inputs = _channels_last(inputs)
        autocast = (torch.autocast(self.device.type, dtype=self.dtype)
                    if self.dtype is not None else contextlib.nullcontext())
        # the task's schedules and teachers: functions of the step, so resume is exact
        info = StepInfo(self.step, self.config.epochs * self.steps_per_epoch,
                        self.steps_per_epoch)
        self.task.begin_step(info)
        with self.probe.capture(), autocast:
            outputs = self.model(inputs)
            loss = self.task.loss(outputs, batch)
        metrics = self.task.metrics(outputs, batch)
        probe = self.probe.step(self.task.probe_views(outputs, batch))
        n = batch.batch_size
        value = loss.detach().float()
        self._watch.record(value, self.step, self.epoch)
        zero = value.new_zeros(())
        keys = ["loss", "nonfinite", "probe_loss", "probe_acc", *sorted(metrics)]
        vec = torch.stack(
            [value * n, (~torch.isfinite(value)).float(), probe.get("loss", zero) * n,
             probe.get("acc", zero) * n]
            + [device_scalar(metrics[k], value) * n for k in keys[4:]]).double()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.task.end_step(self.module, info)  # e.g. the EMA of a momentum teacher
        return StepStats(keys, vec, n, n if probe else 0)

    def _diverged(self) -> None:
        where = self.last_checkpoint or "none written yet"
        raise TrainingDiverged(
            f"{self._watch.describe(lambda step: lr_at(self.config, step, self.steps_per_epoch))}"
            f". Training stopped; last good checkpoint: {where}. Lower the lr, add warm-up or "
            "use bf16/fp32")

    # ---------------------------------------------------------------- val, save, restore
    def _validate(self, logger: RunLogger) -> dict[str, float]:
        if self.val_loader is None:
            return {}
        return validate_epoch(self.module, self.task, self.probe, self.val_loader, self.device,
                              self._signals, self.info.distributed, logger)

    def _done(self) -> bool:
        return bool(self.config.max_steps) and self.step >= self.config.max_steps

    def _save(self) -> None:
        if self.saved_step == self.step:
            return
        # a checkpoint is only ever written of finite weights: read the flag first (every rank)
        flag = all_reduce_sum(self._watch.flag().reshape(1)).item()
        if flag:
            self._diverged()
        # mid-epoch: the epoch's and the log window's sums so far, over every rank
        sums = ({"epoch": self._totals.state(), "window": self._window.state()}
                if self.start_batch else None)
        if self.info.main:
            state = {
                "model": self.module.state_dict(), "backbone_prefix": self.prefix,
                "teacher_prefix": self.prefixes.get("teacher"),
                "eval_network": self.task.eval_network,
                "probe": self.probe.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": ckpt.rng_state(),
                "step": self.step, "epoch": self.epoch, "batch": self.start_batch,
                "sums": sums, "config": self.config.to_dict(),
            }
            self.last_checkpoint = ckpt.save_checkpoint(self.run_dir, state, self.step,
                                                        self.config.keep_checkpoints)
        self.saved_step = self.step
        self._saved_at = time.monotonic()
        barrier()

    def _restore(self, path: str | None) -> None:
        if path is None:
            raise ValueError(f"resume: no checkpoint in {str(self.run_dir)!r}/checkpoints")
        state = ckpt.load_checkpoint(path)
        ckpt.check_resume_config(state["config"], self.config.to_dict(), path)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.probe.load_state_dict(state["probe"])
        ckpt.set_rng_state(state["rng"])
        self.step, self.epoch, self.start_batch = state["step"], state["epoch"], state["batch"]
        self.last_checkpoint, self.saved_step = path, self.step
        sums = state.get("sums")  # absent from checkpoints written before it was kept
        if sums and self.start_batch:
            # the sums are over every rank: rank 0 carries them on, the others start from 0
            self._totals.load(sums["epoch"], self.info.main)
            self._window.load(sums["window"], self.info.main)

    def _finish(self, summary: dict[str, float]) -> TrainResult:
        backbone = str(self.run_dir / "backbone.safetensors")
        if self.info.main:
            export_networks(self.module.state_dict(), self.prefixes, self.task.eval_network,
                            self.config.to_dict(), self.run_dir)
            final = {"metrics": summary, "steps": self.step, "backbone": backbone,
                     "run_dir": str(self.run_dir), "checkpoint": self.last_checkpoint}
            atomic_write_text(self.run_dir / "final.json", json.dumps(final, indent=2))
        barrier()
        return TrainResult(str(self.run_dir), summary, self.step, backbone)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def _channels_last(inputs: Any) -> Any:
    if isinstance(inputs, tuple):
        return tuple(_channels_last(x) for x in inputs)
    if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
        return inputs.contiguous(memory_format=torch.channels_last)
    return inputs
