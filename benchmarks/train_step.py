"""A full training step fed by sslpipe's loader against the same step on synthetic inputs,
and sslpipe's trainer step against a plain hand-written loop.

The step is ``task.loss(model(batch.inputs), batch)``, backward and SGD, with a timm backbone
built by the task. The synthetic run repeats one Batch already on the device, so its rate is
the model's ceiling; the ratio says how much of it the input path keeps.

The second table runs ``Trainer._step`` (what ``sslpipe train`` runs per step: metrics summed
on the device, the non-finite watch, the learning-rate schedule) and a plain loop (forward,
loss, backward, step; no metrics) on the same model, optimizer and synthetic batch, the two
interleaved and the best of three rounds kept; on CUDA it counts the host syncs per step
(``torch.cuda.set_sync_debug_mode("warn")``), which must be zero between logging steps.

    python benchmarks/train_step.py          # CPU: ResNet-18 at 32 px, 1-4 minutes on 2 cores
    python benchmarks/train_step.py --device cuda --arch resnet50 --task simclr --size 224 \\
        --batch 256 --images 4096 --workers 16 --amp
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterable
from typing import Any

import timm
import torch
from input_pipeline import make_corpus  # the sibling script (benchmarks/ is on sys.path)

import sslpipe
from sslpipe.data import create_loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--task", default="rotation")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.task not in sslpipe.list_tasks():
        print(f"task {args.task!r} is not registered in this sslpipe; nothing to measure")
        return
    options = {"size": args.size} if args.task != "simclr" else {"size": args.size, "blur": 0.0}
    task = sslpipe.create_task(args.task, **options)
    model = task.build(timm.create_model(args.arch, num_classes=0)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with tempfile.TemporaryDirectory() as directory:
        make_corpus(directory, args.images)
        loader = create_loader(directory, task, args.batch, device=device, backend=args.backend,
                               num_workers=args.workers, shuffle_buffer=64)
        fed = rate(model, task, opt, loader, args, device)
        batch = next(iter(loader))
        synthetic = rate(model, task, opt, _repeat(batch, len(loader)), args, device)
    print(f"| step | {args.arch} {args.task} {args.size}px batch {args.batch} on {device} "
          f"({loader.backend} backend, {args.workers} workers) |")
    print("|---|---|")
    print(f"| synthetic inputs on the device | {synthetic:,.1f} img/s |")
    print(f"| fed by sslpipe.create_loader | {fed:,.1f} img/s |")
    print(f"| ratio | {fed / synthetic:.2f} |")
    trainer_vs_plain(args, device)


def trainer_vs_plain(args: argparse.Namespace, device: torch.device) -> None:
    """sslpipe's trainer step against a plain loop on the same model and synthetic batch."""
    from sslpipe.train import TrainConfig
    from sslpipe.train.distributed import DistInfo
    from sslpipe.train.memory import MemoryLoader
    from sslpipe.train.trainer import Trainer, _channels_last

    options = {"size": args.size} if args.task != "simclr" else {"size": args.size, "blur": 0.0}
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(
            task=args.task, arch=args.arch, batch_size=args.batch, out=out, progress=False,
            tensorboard=False, probe=False, log_every=10**9, task_options=options,
            precision="bf16" if args.amp else "fp32", channels_last=device.type == "cuda",
            device=device.type)
        task = sslpipe.create_task(args.task, **options)
        images = torch.randint(0, 256, (args.batch, 3, args.size + 32, args.size + 32),
                               dtype=torch.uint8)
        trainer = Trainer(config, DistInfo(device=device),
                          loader=MemoryLoader(images, None, task.collator, args.batch))
        batch = task.collator(images.to(device))
        model, opt = trainer.model, trainer.optimizer

        def plain() -> None:
            inputs = _channels_last(batch.inputs) if config.channels_last else batch.inputs
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                loss = task.loss(model(inputs), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps = max(args.steps, 10)
        best = {"plain": 0.0, "trainer": 0.0}
        for _ in range(3):
            for name, fn in (("plain", plain), ("trainer", lambda: trainer._step(batch))):
                best[name] = max(best[name], _steps_per_s(fn, steps, device) * args.batch)
        syncs = _syncs_per_step(lambda: trainer._step(batch), steps, device)
    print(f"\n| {args.arch} {args.task} {args.size}px batch {args.batch} on {device} | img/s |")
    print("|---|---|")
    print(f"| plain loop (forward, loss, backward, step) | {best['plain']:,.1f} |")
    print(f"| sslpipe trainer step | {best['trainer']:,.1f} |")
    print(f"| ratio | {best['trainer'] / best['plain']:.3f} |")
    print(f"| host syncs per trainer step (CUDA) | {syncs} |")


def _steps_per_s(fn: Any, steps: int, device: torch.device) -> float:
    fn()  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return steps / (time.perf_counter() - start)


def _syncs_per_step(fn: Any, steps: int, device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (CPU)"
    import warnings

    fn()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # every warning but torch's note that the debug mode is a prototype names a sync
    syncs = [w for w in caught if "prototype feature" not in str(w.message)]
    where = f" (first: {str(syncs[0].message)[:120]})" if syncs else ""
    return f"{len(syncs) / steps:g}{where}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(model: torch.nn.Module, task, opt, batches: Iterable, args, device) -> float:  # noqa: ANN001
    """Source images per second over ``args.steps`` steps after one warm-up step."""
    it = iter(batches)
    seen, start = 0, 0.0
    for step in range(args.steps + 1):
        batch = next(it)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            loss = task.loss(model(batch.inputs), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == 0:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        else:
            seen += batch.batch_size
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def _repeat(batch: sslpipe.Batch, n: int) -> Iterable[sslpipe.Batch]:
    for _ in range(n + 1):
        yield batch


if __name__ == "__main__":
    main()
