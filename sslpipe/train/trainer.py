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
import json
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
from sslpipe.train.config import TrainConfig
from sslpipe.train.distributed import DistInfo, all_reduce_sum, barrier, launch, under_torchrun
from sslpipe.train.export import backbone_prefix, export_state
from sslpipe.train.logging import RunLogger, write_config
from sslpipe.train.optim import create_optimizer, lr_at, set_lr
from sslpipe.train.probe import OnlineProbe
from sslpipe.train.rundir import prepare_run_dir, tidy_for_resume

__all__ = ["TrainResult", "Trainer", "TrainingDiverged", "train", "default_loader"]

# make_loader(config, task, split, info) -> loader; split is "train" or "val"
MakeLoader = Callable[[TrainConfig, Any, str, DistInfo], Any]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclass
class TrainResult:
    """What :func:`train` returns: the run directory, the final metrics and the step count."""

    run_dir: str
    metrics: dict[str, float]
    steps: int
    backbone: str


def train(config: TrainConfig, loader: Any = None,
          make_loader: MakeLoader | None = None) -> TrainResult:
    """Train ``config.task`` on ``config.arch``; returns a :class:`TrainResult`.

    Args:
        config: the run's settings.
        loader: an already built loader (one process only): an iterable of Batches with
            ``len()`` and ``set_epoch(epoch)``, optionally ``iter_from(start)`` for free resume.
        make_loader: ``make_loader(config, task, split, info)`` building each rank's loader
            (must be picklable for ``procs``/``gpus`` > 1); default :func:`default_loader`,
            which reads ``config.data`` with :func:`sslpipe.data.create_loader`.

    Raises:
        ValueError: bad input, found before any work starts (unknown arch or task, a data
            directory without manifest, a batch size not divisible by the processes, a
            resume whose config differs from the run's).
        TrainingDiverged: the loss became NaN or inf.
    """
    validate(config, loader is not None or make_loader is not None)
    if loader is not None and (config.world_size > 1 or under_torchrun()):
        raise ValueError("loader: an injected loader serves one process; pass make_loader for "
                         f"{config.world_size} processes")
    use_cuda = _use_cuda(config)
    if config.world_size > 1 or under_torchrun():
        launch(_run_rank, config.world_size, use_cuda, (config, make_loader))
        return _read_result(config.out)
    device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    return Trainer(config, DistInfo(device=device), loader=loader, make_loader=make_loader).fit()


def validate(config: TrainConfig, has_loader: bool) -> None:
    """Check what can be checked before any work starts (see :func:`train`)."""
    from sslpipe.models import check_arch
    from sslpipe.registry import create_task

    check_arch(config.arch)
    create_task(config.task, **config.task_options)
    if not has_loader:
        if config.data is None:
            raise ValueError("data: a shard directory is required (or inject a loader)")
        from sslpipe.data.reading import load_manifest

        for path in (config.data, config.val):
            if path is not None:
                load_manifest(path)
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' asked for but CUDA is not available")
    if config.gpus and not torch.cuda.is_available():
        raise ValueError(f"gpus: {config.gpus} asked for but CUDA is not available; on CPU use "
                         "procs")
    if config.resume:  # a run killed before its first checkpoint resumes from the start
        last = ckpt.latest_checkpoint(config.out)
        saved_file = Path(config.out) / "config.json"
        saved = (json.loads(saved_file.read_text()) if saved_file.is_file()
                 else ckpt.load_checkpoint(last)["config"] if last is not None else None)
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
        from sslpipe.data.reading import resolve_shards

        samples = resolve_shards(data).num_samples
        if samples is not None and samples // info.world_size < per_rank:
            drop_last = False
            if info.main:
                print(f"data: {samples} sample(s) hold less than one batch of {per_rank} per "
                      "process: training in partial batches (drop_last off)", flush=True)
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
                 make_loader: MakeLoader | None = None) -> None:
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
        if self.info.distributed and config.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.module = model
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
        self.last_checkpoint: str | None = None
        self._watch = _DivergenceWatch(self.device)
        self._saved_at = time.monotonic()
        self.saved_step = -1  # the same on every rank, unlike last_checkpoint (rank 0 only)
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
        """Run the remaining epochs; checkpoint, export the backbone, return the result."""
        config = self.config
        total = config.epochs * self.steps_per_epoch
        if config.max_steps:
            total = min(total, config.max_steps)
        final = self.run_dir / "final.json"
        if config.resume and self.step >= total and final.is_file():
            # a finished run: its result stands (resuming must not rewrite it with nothing)
            barrier()
            return _read_result(str(self.run_dir))
        if self.info.main:
            write_config(self.run_dir, config.to_dict())
        logger = RunLogger(self.run_dir, total, self.step, self.info.main, config.progress,
                           config.tensorboard)
        for line in self.summary(total):
            logger.message(line)
        summary: dict[str, float] = {}
        try:
            while self.epoch < config.epochs and not self._done():
                summary = self._epoch(logger)
                if self.start_batch == 0:  # the epoch completed
                    epoch = self.epoch
                    self.epoch += 1
                    self._save()  # before validation, which must not be able to lose the epoch
                    summary.update(self._validate(logger))
                    logger.log({"event": "epoch", "step": self.step, "epoch": epoch,
                                **summary})
                    logger.message(f"epoch {epoch}: " + ", ".join(
                        f"{k} {v:.4g}" for k, v in summary.items()))
            if self.saved_step != self.step:
                self._save()
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
        workers = getattr(getattr(loader, "_impl", None), "num_workers", None)
        where = (f"backend {backend} ({loader.reason}), {workers} worker(s)" if backend
                 else type(loader).__name__)
        probe = (f"on ({self.probe.num_classes} classes)" if self.probe.enabled else
                 "off (--no-probe)" if not config.probe else
                 "off (no class labels known: pass --num-classes)")
        saves = ["each epoch end"]
        if config.checkpoint_every:
            saves.append(f"every {config.checkpoint_every} steps")
        if config.checkpoint_minutes:
            saves.append(f"every {config.checkpoint_minutes:g} min")
        planned = config.epochs * self.steps_per_epoch
        done = f", stopping at {total} (--max-steps)" if total < planned else ""
        done += f", resuming at step {self.step}" if self.step else ""
        return [
            f"sslpipe train {config.task}: {config.arch}{stem}, {params / 1e6:.1f}M parameters, "
            f"on {self.device} ({precision}, {self.info.world_size} process(es))",
            f"  data {data}: {f'{count:,} samples, ' if count else ''}"
            f"{self.steps_per_epoch} steps of {config.batch_size} per epoch x {config.epochs} "
            f"epoch(s) = {planned} steps{done}",
            f"  loader: {where}",
            f"  online probe: {probe}",
            f"  writing {self.run_dir} (checkpoints {', '.join(saves)}; metrics every "
            f"{config.log_every} steps)",
        ]

    # ---------------------------------------------------------------- one epoch
    def _epoch(self, logger: RunLogger) -> dict[str, float]:
        config = self.config
        self.model.train()
        self.probe.train()
        totals = _Sums(self.device)
        window = _Sums(self.device)
        t_last = time.perf_counter()
        due = False
        for batch, wait in _timed(self._batches()):
            if batch.batch_size < self.task.min_batch_size:  # a short last batch: no step
                self.start_batch += 1
                logger.message(f"skipped a last batch of {batch.batch_size} image(s): "
                               f"{config.task} needs {self.task.min_batch_size} per batch")
                continue
            lr = lr_at(config, self.step, self.steps_per_epoch)
            set_lr(self.optimizer, lr)
            stats = self._step(batch)
            self.step += 1
            self.start_batch += 1
            totals.add(stats, wait)
            window.add(stats, wait)
            logger.advance(1)  # every step; the numbers only at log steps (no host read)
            if self.step % config.log_every == 0 or self.start_batch == self.steps_per_epoch:
                # the one host read (and all-reduce) in log_every steps
                now = time.perf_counter()
                due = (config.checkpoint_minutes > 0 and
                       time.monotonic() - self._saved_at >= 60 * config.checkpoint_minutes)
                record = window.read(now - t_last, due)
                if record.pop("nonfinite", 0.0):
                    self._diverged()
                due = bool(record.pop("checkpoint_due", 0.0))  # any rank's clock: all agree
                record["lr"] = lr
                logger.log({"event": "step", "step": self.step, "epoch": self.epoch, **record})
                logger.advance(0, {k: record[k] for k in ("loss", "lr", "img_per_s",
                                                          "data_wait")})
                window, t_last = _Sums(self.device), now
            if due or (config.checkpoint_every and self.step % config.checkpoint_every == 0):
                self._save()
            due = False
            if self._done():
                break
        if self.start_batch >= self.steps_per_epoch:
            self.start_batch = 0
        summary = totals.read(None)
        summary.pop("nonfinite", None)
        summary.pop("checkpoint_due", None)
        return summary

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
        probe = self.probe.step(batch)
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
            f"{self._watch.describe()} (lr {self.optimizer.param_groups[0]['lr']:.4g}). "
            f"Training stopped; last good checkpoint: {where}. Lower the lr, add warm-up or "
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
        with torch.no_grad():
            for batch in self.val_loader:
                batch = batch.to(self.device, non_blocking=True)
                n = batch.batch_size
                if n < self.task.min_batch_size:  # a short last batch the loss cannot score
                    logger.message(f"validation: skipped a last batch of {n} image(s): "
                                   f"{self.config.task} needs {self.task.min_batch_size}")
                    continue
                with self.probe.capture():
                    outputs = self.module(batch.inputs)
                probe = self.probe.evaluate(batch)
                loss = self.task.loss(outputs, batch).detach().double()
                sums[0] += loss * n
                if probe:
                    sums[2] += probe["acc"].double() * n
                    probed += n
                images += n
        self.module.train()
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
        if self.info.main:
            state = {
                "model": self.module.state_dict(), "backbone_prefix": self.prefix,
                "probe": self.probe.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": ckpt.rng_state(),
                "step": self.step, "epoch": self.epoch, "batch": self.start_batch,
                "config": self.config.to_dict(),
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

    def add(self, stats: _StepStats, wait: float) -> None:
        self.keys = stats.keys
        self.vec = stats.vec if self.vec is None else self.vec + stats.vec
        self.images += stats.images
        self.probed += stats.probed
        self.steps += 1
        self.wait += wait

    def read(self, seconds: float | None, due: bool = False) -> dict[str, float]:
        """Means per image over every rank (one all-reduce, one device sync), ``nonfinite``
        (the count of non-finite losses), ``checkpoint_due`` (how many ranks' clocks say a
        checkpoint is due), and with ``seconds`` the rate and the data wait."""
        if self.vec is None:
            return {}
        counts = torch.tensor([self.images, self.probed, float(due)], dtype=torch.float64)
        packed = torch.cat([self.vec, counts.to(self.device)])
        values = all_reduce_sum(packed).tolist()
        sums, (images, probed, due_ranks) = dict(zip(self.keys, values[:-3])), values[-3:]
        per = max(1.0, images)
        out = {"loss": sums["loss"] / per, "images": images, "nonfinite": sums["nonfinite"],
               "checkpoint_due": due_ranks}
        if probed:
            out.update(probe_loss=sums["probe_loss"] / per, probe_acc=sums["probe_acc"] / per)
        out.update({k: sums[k] / per for k in self.keys[4:]})
        if seconds:
            out["img_per_s"] = self.images / seconds
            out["data_wait"] = min(1.0, self.wait / seconds)
        return out


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

    def describe(self) -> str:
        step = int(self.step)
        if step < 0:
            return "loss is not finite on another rank"
        return f"loss is {float(self.value)} at epoch {int(self.epoch)}, step {step}"


def _device_scalar(value: Any, like: torch.Tensor) -> torch.Tensor:
    # sslpipe's tasks return 0-dim device tensors; a float from a user's task costs a copy
    if isinstance(value, torch.Tensor):
        return value.detach().float().reshape(())
    return torch.as_tensor(float(value), device=like.device)


def _timed(batches: Iterator[Batch]) -> Iterator[tuple[Batch, float]]:
    # The time spent in next() is the data wait: the share of a step the model sat idle.
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            return
        yield batch, time.perf_counter() - t0


def _run_rank(info: DistInfo, config: TrainConfig, make_loader: MakeLoader | None) -> None:
    Trainer(config, info, make_loader=make_loader).fit()


def _read_result(run_dir: str) -> TrainResult:
    final = json.loads((Path(run_dir) / "final.json").read_text())
    return TrainResult(final["run_dir"], final["metrics"], final["steps"], final["backbone"])


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
