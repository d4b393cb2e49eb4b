"""``sslpipe bench``: can the input path keep up with the model, on this machine and these shards?

For one task on the user's shards it measures, in the same run, the images per second of
``create_loader`` with each decode backend, and of a training step of the model on synthetic
input already on the device (one real batch, repeated). The ratio says whether the input keeps
up: at 1.0 or more the loader makes batches at least as fast as the step consumes them. With
``--fed`` it also times the training step fed by each backend: its ratio to the synthetic step
is the share of the model's speed that the input path keeps.

::

    sslpipe bench simclr --data shards/in60k --arch resnet50 --batch-size 256 --device cuda
    sslpipe bench rotation --data sslpipe/assets/fashion_mnist_sample/train -o size=32 \\
        --arch resnet18 --small-input --batch-size 64 --steps 5

The Python side is :func:`bench_loader` and :func:`bench_model_step`.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from sslpipe.batch import Batch
from sslpipe.devices import default_workers

BACKENDS = ("cpu", "nvjpeg", "dali")


@dataclass
class Rate:
    """One measured path: ``images_per_s`` is NaN where it could not run (``note`` says why)."""

    path: str
    images_per_s: float
    note: str = ""


def bench_loader(
    data: str, task: Any, batch_size: int, steps: int, device: torch.device,
    backends: Iterable[str] = BACKENDS, num_workers: int | None = None, seed: int = 0,
    progress: Callable[[str], None] | None = None, **loader_options: Any,
) -> list[Rate]:
    """Images per second of ``create_loader`` over ``data`` with each backend in ``backends``.

    Each loader is timed over ``steps`` batches after its first one (worker start-up, DALI's
    pipeline build), with the device synchronised at the end. A backend that cannot run here
    (no CUDA, DALI not installed, remote shards for DALI) gives a NaN rate and the reason.
    ``loader_options`` go to ``create_loader`` (``hw_decoder_load``, ``cpu_decode_share``);
    ``progress`` is told each result as it comes (a backend can take minutes).
    """
    say = progress or (lambda line: None)
    rates = []
    for backend in backends:
        say(f"  {backend}: timing {steps} batches of {batch_size} ...")
        try:
            loader = _loader(data, task, batch_size, steps, device, backend, num_workers,
                             seed=seed, **loader_options)
            rate = _images_per_s(iter(loader), steps, device)
        except (ImportError, ValueError, RuntimeError) as err:
            rates.append(Rate(backend, math.nan, f"{type(err).__name__}: {err}".splitlines()[0]))
            say(f"  {backend}: cannot run here ({rates[-1].note})")
            continue
        workers = num_workers if num_workers is not None else default_workers()
        rates.append(Rate(backend, rate, f"workers: {workers}"))
        say(f"  {backend}: {rate:,.0f} images/s")
    return rates


def bench_model_step(
    model: torch.nn.Module, task: Any, batches: Iterable[Batch], steps: int,
    device: torch.device, precision: str = "auto", fed_by: str = "synthetic input",
) -> Rate:
    """Images per second of a training step (forward, loss, backward, SGD) of ``model``.

    Args:
        batches: at least ``steps + 1`` Batches: one real batch repeated
            (``itertools.repeat(batch.to(device))``: the rate an input path has to keep up
            with), or a loader (the step as the input path feeds it).
        fed_by: what feeds the step, for the row's name.
    """
    model = model.to(device).train()
    dtype = _autocast_dtype(precision, device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(batch: Batch) -> int:
        batch = batch.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = task.loss(model(batch.inputs), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return batch.batch_size

    it = iter(batches)
    step(next(it))  # warm-up: kernels, allocator, autotuning, loader start-up
    _sync(device)
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        seen += step(next(it))
    _sync(device)
    name = f"model step ({precision_name(dtype)}, {fed_by})"
    return Rate(name, seen / (time.perf_counter() - start))


def precision_name(dtype: torch.dtype | None) -> str:
    """``"bf16"``, ``"fp16"`` or ``"fp32"`` for an autocast dtype (None: no autocast)."""
    if dtype is torch.bfloat16:
        return "bf16"
    return "fp16" if dtype is torch.float16 else "fp32"


def _loader(data: str, task: Any, batch_size: int, steps: int, device: torch.device,
            backend: str, num_workers: int | None, **options: Any) -> Any:
    """A loader of ``steps + 1`` batches (one to warm up), shards drawn with replacement so
    that any shard count serves any number of workers."""
    from sslpipe.data import create_loader

    return create_loader(data, task, batch_size, device=device, backend=backend,
                         num_workers=num_workers, epoch_size=batch_size * (steps + 1),
                         resample=True, **options)


def _images_per_s(batches: Iterator[Batch], steps: int, device: torch.device) -> float:
    next(batches)
    _sync(device)
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        seen += next(batches).batch_size
    _sync(device)
    return seen / (time.perf_counter() - start)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_rates(task: Any, arch: str, small_input: bool, data: str, batch_size: int,
                steps: int, device: torch.device, precision: str, fed_by: list[str],
                num_workers: int | None, options: dict[str, Any],
                progress: Callable[[str], None] | None = None) -> list[Rate]:
    """The synthetic-input step, then the step fed by each backend in ``fed_by``."""
    say = progress or (lambda line: None)
    from sslpipe.data import create_loader
    from sslpipe.models import create_backbone

    batch = next(iter(create_loader(data, task, batch_size, backend="cpu", num_workers=0,
                                    epoch_size=batch_size, resample=True)))
    model = task.build(create_backbone(arch, small_input=small_input))
    say(f"  {arch} step on synthetic input ...")
    rates = [bench_model_step(model, task, itertools.repeat(batch.to(device)), steps, device,
                              precision)]
    for backend in fed_by:
        say(f"  {arch} step fed by {backend} ...")
        loader = _loader(data, task, batch_size, steps, device, backend, num_workers, **options)
        rates.append(bench_model_step(model, task, loader, steps, device, precision,
                                      fed_by=f"fed by {backend}"))
    for rate in rates:
        rate.path = f"{arch} {rate.path}"
    return rates


def table(rates: list[Rate], step: float | None) -> str:
    lines = ["| path | images/s | " + ("vs model step |" if step else "") + " note |",
             "|---|---|" + ("---|" if step else "") + "---|"]
    for r in rates:
        ratio = "" if not step else (" - |" if math.isnan(r.images_per_s)
                                     else f" {r.images_per_s / step:.2f} |")
        value = "n/a" if math.isnan(r.images_per_s) else f"{r.images_per_s:,.0f}"
        lines.append(f"| {r.path} | {value} |{ratio} {r.note} |")
    return "\n".join(lines)
