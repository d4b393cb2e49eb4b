"""The training loop: ``train(config)`` and the :class:`Trainer` behind it.

Per step the trainer does only ``task.loss(model(batch.inputs), batch)`` with
``model = task.build(backbone)``: everything task-specific lives in the task. Around it: mixed
precision, DDP, the learning-rate schedule, an online linear probe on the dataset labels,
NaN/inf detection, checkpoints and logging.

Run directory::

    RUN_DIR/config.json, config.yaml   the resolved TrainConfig
    RUN_DIR/metrics.jsonl              one JSON line per log step and per epoch
    RUN_DIR/checkpoints/step-*.pt      the last ``keep_checkpoints`` checkpoints
    RUN_DIR/backbone.safetensors       the final backbone (plain timm state dict)
    RUN_DIR/final.json                 last epoch's metrics, steps, paths
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslpipe.atomic import atomic_write_text
from sslpipe.batch import Batch
from sslpipe.train import checkpoint as ckpt
from sslpipe.train import footprint
from sslpipe.train.config import TrainConfig
from sslpipe.train.distributed import (
    DistInfo,
    all_reduce_min,
    all_reduce_sum,
    barrier,
    launch,
    under_torchrun,
)
from sslpipe.train.export import backbone_prefix, export_state
from sslpipe.train.logging import RunLogger, write_config
from sslpipe.train.optim import create_optimizer, lr_at, set_lr
from sslpipe.train.probe import OnlineProbe
from sslpipe.train.rundir import prepare_run_dir, tidy_for_resume

__all__ = ["TrainResult", "Trainer", "TrainingDiverged", "TrainingInterrupted", "train",
           "default_loader"]

# make_loader(config, task, split, info) -> loader; split is "train" or "val"
MakeLoader = Callable[[TrainConfig, Any, str, DistInfo], Any]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM stopped the run after its last whole step, and a checkpoint
    of that step was written: ``--resume`` continues as if never stopped.

    Attributes:
        signum: the signal; ``exit_code`` is ``128 + signum`` (130 for Ctrl-C), as a shell
            reports a process a signal ended.
        step: the steps done; ``checkpoint``: the checkpoint written (or kept) at that step.
    """

    def __init__(self, signum: int, step: int, checkpoint: str | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum
        super().__init__(f"{signal.Signals(signum).name} at step {step}: checkpoint "
                         f"{checkpoint or 'none written yet'}; the same command with --resume "
                         "continues the run")


@dataclass
class TrainResult:
    """What :func:`train` returns: the run directory, the final metrics and the step count."""

    run_dir: str
    metrics: dict[str, float]
    steps: int
    backbone: str


def train(config: TrainConfig, loader: Any = None,
          make_loader: MakeLoader | None = None, *, fit_batch: bool = False) -> TrainResult:
    """Train ``config.task`` on ``config.arch``; returns a :class:`TrainResult`.

    Args:
        config: the run's settings.
        loader: an already built loader (one process only): an iterable of Batches with
            ``len()`` and ``set_epoch(epoch)``, optionally ``iter_from(start)`` for free resume.
        make_loader: ``make_loader(config, task, split, info)`` building each rank's loader
            (must be picklable for ``procs``/``gpus`` > 1); default :func:`default_loader`,
            which reads ``config.data`` with :func:`sslpipe.data.create_loader`.
        fit_batch: when a step of ``config.batch_size`` would not fit in memory
            (``config.memory_check``), train with the largest power of two that fits, and
            say so, instead of refusing (the CLI's choice when ``--batch-size`` is not given).

    Raises:
        ValueError: bad input, found before any work starts (unknown arch or task, a data
            directory without manifest, a batch size not divisible by the processes, a
            resume whose config differs from the run's, a step that would not fit in
            memory).
        TrainingDiverged: the loss became NaN or inf.
        TrainingInterrupted: SIGINT or SIGTERM stopped the run (after a checkpoint).
    """
    validate(config, loader is not None or make_loader is not None)
    if loader is not None and (config.world_size > 1 or under_torchrun()):
        raise ValueError("loader: an injected loader serves one process; pass make_loader for "
                         f"{config.world_size} processes")
    use_cuda = _use_cuda(config)
    if config.world_size > 1 or under_torchrun():
        launch(_run_rank, config.world_size, use_cuda, (config, make_loader, fit_batch))
        return _read_result(config.out)
    device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    return Trainer(config, DistInfo(device=device), loader=loader, make_loader=make_loader,
                   fit_batch=fit_batch).fit()


def validate(config: TrainConfig, has_loader: bool) -> None:
    """Check what can be checked before any work starts (see :func:`train`)."""
    from sslpipe.models import check_arch
    from sslpipe.registry import create_task

    check_arch(config.arch)
    create_task(config.task, **config.task_options)
    if not has_loader:
        if config.data is None:
            raise ValueError("data: a shard directory is required (or inject a loader)")
        from sslpipe.data.shard_source import load_manifest

        for path in (config.data, config.val):
            if path is not None:
                load_manifest(path)
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' asked for but CUDA is not available")
    if config.gpus and not torch.cuda.is_available():
        raise ValueError(f"gpus: {config.gpus} asked for but CUDA is not available; on CPU use "
                         "procs")
    if config.resume:  # a run killed before its first checkpoint resumes from the start
        saved = ckpt.saved_config(config.out)
        if saved is not None:
            ckpt.check_resume_config(saved, config.to_dict(), config.out)
    elif not under_torchrun():  # under torchrun, rank 0 checks (Trainer)
        prepare_run_dir(config.out, config.resume, config.overwrite)


def default_loader(config: TrainConfig, task: Any, split: str, info: DistInfo) -> Any:
    """``sslpipe.data.create_loader`` over ``config.data`` (or ``config.val``) for this rank."""
    from sslpipe.data import create_loader

    train = split == "train"
    data = config.data if train else config.val
    per_rank = config.batch_size // info.world_size
    drop_last = config.drop_last
    if train and drop_last:
        from sslpipe.data.shard_source import resolve_shards

        samples = resolve_shards(data).num_samples
        if samples is not None and samples // info.world_size < per_rank:
            drop_last = False
            if info.main:
                print(f"data: {plural(samples, 'sample')} hold less than one batch of "
                      f"{per_rank} per process: drop_last (--drop-last) would leave no step, so "
                      "this run trains in partial batches (drop_last off)", flush=True)
    # validation reads every sample once (ranks may then run different step counts, which
    # _validate allows: it reduces over ranks once, at the end)
    return create_loader(
        data, task, per_rank,
        device=info.device, backend=config.backend, num_workers=config.num_workers,
        seed=config.seed, rank=info.rank, world_size=info.world_size, drop_last=drop_last,
        single_pass=not train, shuffle_buffer=1000 if train else 0,
        hw_decoder_load=config.hw_decoder_load, cpu_decode_share=config.cpu_decode_share,
    )


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
        backbone = create_backbone(config.arch, small_input=config.small_input)
        if config.freeze_until:
            freeze_until(backbone, config.freeze_until)
        self.backbone = backbone
        model = self.task.build(backbone)
        self.prefix = backbone_prefix(model, backbone)
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
        self._totals, self._window = _Sums(self.device), _Sums(self.device)
        self.last_checkpoint: str | None = None
        self._watch = _DivergenceWatch(self.device)
        self._saved_at = time.monotonic()
        self.saved_step = -1  # the same on every rank, unlike last_checkpoint (rank 0 only)
        self._signals = _StopSignals(immediate=not self.info.distributed)
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
        if config.resume and self.step >= total and final.is_file():
            # a finished run: its result stands (resuming must not rewrite it with nothing)
            barrier()
            return _read_result(str(self.run_dir))
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
        config, loader = self.config, self.loader
        params = sum(p.numel() for p in self.module.parameters())
        stem = ", small-input stem" if config.small_input else ""
        precision = {None: "fp32", torch.bfloat16: "bf16 autocast",
                     torch.float16: "fp16 autocast"}[self.dtype]
        samples = getattr(getattr(loader, "_plan", None), "source", None)
        count = getattr(samples, "num_samples", None)
        data = config.data or "an injected loader"
        backend = getattr(loader, "backend", None)
        workers = getattr(loader, "num_workers", None)
        stage = {"device": f"the collator's float work on {self.device}",
                 "workers": "the collator's float work in the workers" if workers else
                 "the whole collator in this process"}.get(
                     getattr(loader, "device_stage", ""), "")
        where = (f"backend {backend} ({loader.reason}), {plural(workers or 0, 'worker')}"
                 + (f", {stage}" if stage else "") if backend else type(loader).__name__)
        probe = (f"on ({self.probe.num_classes} classes)" if self.probe.enabled else
                 "off (--no-probe)" if not config.probe else
                 "off (no class labels known: pass --num-classes)")
        saves = ["each epoch end"]
        if config.checkpoint_every:
            saves.append(f"every {plural(config.checkpoint_every, 'step')}")
        if config.checkpoint_minutes:
            saves.append(f"every {config.checkpoint_minutes:g} min")
        planned = config.epochs * self.steps_per_epoch
        done = f", stopping at {total} (--max-steps)" if total < planned else ""
        done += f", resuming at step {self.step}" if self.step else ""
        processes = plural(self.info.world_size, "process", "processes")
        return [
            f"sslpipe train {config.task}: {config.arch}{stem}, {params / 1e6:.1f}M parameters, "
            f"on {self.device} ({precision}, {processes})",
            f"  data {data}: {f'{count:,} samples, ' if count else ''}"
            f"{plural(self.steps_per_epoch, 'step')} of {config.batch_size} per epoch x "
            f"{plural(config.epochs, 'epoch')} = {plural(planned, 'step')}{done}",
            f"  loader: {where}",
            f"  online probe: {probe}",
            f"  writing {self.run_dir} (checkpoints {', '.join(saves)}; metrics every "
            f"{plural(config.log_every, 'step')})",
        ]

    # ---------------------------------------------------------------- one epoch
    def _epoch(self, logger: RunLogger) -> tuple[dict[str, float], bool]:
        """Train the rest of the epoch, or until a stop; its summary, and whether it completed
        (a stop while waiting for its first batch leaves it not begun)."""
        config = self.config
        self.model.train()
        self.probe.train()
        if self.start_batch == 0:  # a new epoch (a resume mid-epoch restored both)
            self._totals, self._window = _Sums(self.device), _Sums(self.device)
        totals = self._totals
        t_last = time.perf_counter()
        due = False
        try:
            for batch, wait in _timed(self._batches(), self._signals):
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
        except _WaitInterrupted:
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
        self._window = _Sums(self.device)

    def _stop_requested(self) -> bool:
        if self.info.distributed:
            return self._stopping  # agreed at a log step
        return self._stopping or self._signals.signum is not None

    def _check_memory(self, fit_batch: bool) -> TrainConfig:
        """The config whose step fits in the device's memory: this one, or with
        ``fit_batch`` one with a smaller batch (said in one line); else a ValueError naming
        the estimate, the memory available and what to change."""
        config, fp = self.config, self._footprint
        if fp is None:
            return config
        world = self.info.world_size
        on_cpu = self.device.type == "cpu"
        if self._injected:
            fp = dataclasses.replace(fp, in_flight=1)
        elif on_cpu:  # float batches wait in the workers' queues (shared memory)
            from sslpipe.devices import default_workers

            workers = config.num_workers if config.num_workers is not None else default_workers()
            fp = dataclasses.replace(fp, in_flight=footprint.PREFETCH * workers + 1,
                                     workers=workers * footprint.WORKER_BYTES)
        else:  # copied and augmented ahead on the device (run_ahead, prefetch_to_device)
            fp = dataclasses.replace(fp, in_flight=3)
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", world)) if on_cpu else 1
        available = footprint.available_memory(self.device, processes)
        per_rank = config.batch_size // world
        if available is None:
            return config
        budget = footprint.USABLE * available
        smallest = max(1, self.task.min_batch_size)
        fits = footprint.fitting_batch(fp, per_rank, budget, smallest)
        if self.info.distributed:  # every rank the same answer (each has its own memory)
            fits = int(all_reduce_min(torch.tensor([float(fits)], dtype=torch.float64,
                                                   device=self.device)).item())
        if fits == per_rank:
            return config
        gb = footprint.gigabytes
        share = f" ({per_rank} per process)" if world > 1 else ""
        what = (f"a step of batch {config.batch_size}{share} ({config.task} on {config.arch}) "
                f"needs about {gb(fp.need(per_rank))} on {self.device.type} (activations "
                f"{gb(footprint.BACKWARD_FACTOR * fp.activations * per_rank)}, gradients and "
                f"optimizer state {gb(fp.state)}"
                + (f", loader {gb(fp.inputs * per_rank * fp.in_flight + fp.workers)}"
                   if on_cpu and not self._injected else "")
                + f"); {gb(available)} available")
        if fits and fit_batch and not self._injected:
            if self.info.main:
                print(f"memory: {what}: training with batch {fits * world} instead (about "
                      f"{gb(fp.need(fits))}). --batch-size chooses the batch (one that does not "
                      "fit is refused); --no-memory-check skips this check", file=sys.stderr,
                      flush=True)
            return config.replace(batch_size=fits * world)
        hint = (f"{fits * world} fits: about {gb(fp.need(fits))}" if fits else
                f"not even {plural(smallest, 'image')} per process fit")
        raise ValueError(
            f"memory: {what}. Pass a smaller --batch-size ({hint}), a smaller --arch or -o "
            "size=...," + (" fewer --num-workers," if on_cpu and not self._injected else "")
            + " or --no-memory-check to try anyway")

    def _batches(self) -> Iterator[Batch]:
        self.loader.set_epoch(self.epoch)
        if self.start_batch and hasattr(self.loader, "iter_from"):
            yield from self.loader.iter_from(self.start_batch)
            return
        it = iter(self.loader)
        for _ in range(self.start_batch):  # replay the consumed batches: same seed, same order
            next(it)
        yield from it

    def _step(self, batch: Batch) -> _StepStats:
        """Forward, loss, backward, optimizer step; nothing read back from the device.

        The step's numbers stay device tensors (summed by :class:`_Sums` and read every
        ``log_every`` steps); a non-finite loss is recorded on the device (its first step and
        value) and acted on at the next read, before any checkpoint is written.
        """
        batch = batch.to(self.device, non_blocking=True)
        inputs = batch.inputs
        if self.config.channels_last:
            inputs = _channels_last(inputs)
        autocast = (torch.autocast(self.device.type, dtype=self.dtype)
                    if self.dtype is not None else contextlib.nullcontext())
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
            + [_device_scalar(metrics[k], value) * n for k in keys[4:]]).double()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return _StepStats(keys, vec, n, n if probe else 0)

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
        # the plain module, not the DDP wrapper: ranks may run different numbers of validation
        # steps, and DDP's forward would wait on the other ranks (buffer broadcast)
        self.module.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        images = probed = 0.0  # host counts: loss x n and probe acc x n are summed on the device
        self.val_loader.set_epoch(0)
        stopped = False
        with torch.no_grad():
            for batch in self.val_loader:
                if self._signals.signum is not None and not self.info.distributed:
                    stopped = True  # the epoch's checkpoint is written: stop now
                    break
                batch = batch.to(self.device, non_blocking=True)
                n = batch.batch_size
                if n < self.task.min_batch_size:  # a short last batch the loss cannot score
                    logger.message(f"validation: skipped a last batch of {n} image(s): "
                                   f"{self.config.task} needs {self.task.min_batch_size}")
                    continue
                with self.probe.capture():
                    outputs = self.module(batch.inputs)
                probe = self.probe.evaluate(self.task.probe_views(outputs, batch))
                loss = self.task.loss(outputs, batch).detach().double()
                sums[0] += loss * n
                if probe:
                    sums[2] += probe["acc"].double() * n
                    probed += n
                images += n
        self.module.train()
        if stopped:
            logger.message("validation: interrupted, not reported for this epoch")
            return {}
        sums[1], sums[3] = images, probed
        loss_sum, images, probe_acc, probe_n = all_reduce_sum(sums).tolist()
        out = {"val_loss": loss_sum / max(1.0, images)}
        if probe_n:
            out["val_probe_acc"] = probe_acc / probe_n
        return out

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
            export_state(self.module.state_dict(), self.prefix, self.config.to_dict(), backbone)
            final = {"metrics": summary, "steps": self.step, "backbone": backbone,
                     "run_dir": str(self.run_dir), "checkpoint": self.last_checkpoint}
            atomic_write_text(self.run_dir / "final.json", json.dumps(final, indent=2))
        barrier()
        return TrainResult(str(self.run_dir), summary, self.step, backbone)


@dataclass
class _StepStats:
    """One step's numbers: ``vec`` (float64 on the device, image-weighted sums by ``keys``)
    and the host-known counts."""

    keys: list[str]
    vec: torch.Tensor
    images: int
    probed: int


class _Sums:
    """Steps' numbers summed on the device; :meth:`read` is the only host read."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.keys: list[str] = []
        self.vec: torch.Tensor | None = None
        self.images = self.probed = 0
        self.steps = 0
        self.wait = 0.0
        self.timed = 0  # images since this process started summing (a resume restarts it)

    def add(self, stats: _StepStats, wait: float) -> None:
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


class _DivergenceWatch:
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


class _WaitInterrupted(KeyboardInterrupt):
    """A stop signal that came while the trainer waited for a batch: nothing to finish."""


class _StopSignals:
    """SIGINT and SIGTERM while a run trains: recorded, not raised mid-step.

    Python's own SIGINT handling raises KeyboardInterrupt wherever the main thread is, and
    where that is a ``__del__`` or a finalizer (a DataLoader iterator shutting its workers
    down at each epoch end) Python prints "Exception ignored" and carries on: an interrupted
    run trained on, sometimes to its end. Here the first signal sets ``signum``, which the
    loop reads after every step (one process) or at the next log step (every rank together);
    a signal that comes while the loop waits for data stops it at once (``immediate``), as
    does a second signal. A forked loader worker ignores them: its process ends it.
    """

    def __init__(self, immediate: bool) -> None:
        self.immediate = immediate
        self.signum: int | None = None
        self.waiting = False
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def wait(self) -> Iterator[None]:
        """Around a wait for data: a signal (an earlier one too) ends it at once."""
        self.waiting = self.immediate
        try:
            if self.waiting and self.signum is not None:
                raise _WaitInterrupted
            yield
        finally:
            self.waiting = False

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker: the trainer stops it
            return
        if self.signum is not None:
            raise KeyboardInterrupt  # a second signal: stop where it is
        self.signum = signum
        if self.waiting:
            raise _WaitInterrupted


def _device_scalar(value: Any, like: torch.Tensor) -> torch.Tensor:
    # sslpipe's tasks return 0-dim device tensors; a float from a user's task costs a copy
    if isinstance(value, torch.Tensor):
        return value.detach().float().reshape(())
    return torch.as_tensor(float(value), device=like.device)


def _timed(batches: Iterator[Batch], signals: _StopSignals) -> Iterator[tuple[Batch, float]]:
    # The time spent in next() is the data wait: the share of a step the model sat idle.
    while True:
        t0 = time.perf_counter()
        try:
            with signals.wait():
                batch = next(batches)
        except StopIteration:
            return
        yield batch, time.perf_counter() - t0


def _run_rank(info: DistInfo, config: TrainConfig, make_loader: MakeLoader | None,
              fit_batch: bool = False) -> None:
    Trainer(config, info, make_loader=make_loader, fit_batch=fit_batch).fit()


def _read_result(run_dir: str) -> TrainResult:
    # the directory as it is now: final.json's paths are where the run was written (it may
    # have been moved or reached by another path since)
    final = json.loads((Path(run_dir) / "final.json").read_text())
    return TrainResult(str(run_dir), final["metrics"], final["steps"],
                       str(Path(run_dir) / "backbone.safetensors"))


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 step"``, ``"3 steps"`` (``many``: the plural when it is not ``word + "s"``)."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def _use_cuda(config: TrainConfig) -> bool:
    if config.device == "cpu" or config.procs > 1:
        return False
    return config.device == "cuda" or config.gpus > 0 or torch.cuda.is_available()


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
