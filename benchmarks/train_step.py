"""A full training step fed by sslpipe's loader against the same step on synthetic inputs.

The step is ``task.loss(model(batch.inputs), batch)``, backward and SGD, with a timm backbone
built by the task. The synthetic run repeats one Batch already on the device, so its rate is
the model's ceiling; the ratio says how much of it the input path keeps.

    python benchmarks/train_step.py                                   # CPU, tiny model
    python benchmarks/train_step.py --device cuda --arch resnet50 --task simclr --size 224 \\
        --batch 256 --images 4096 --workers 16 --amp
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterable

import timm
import torch
from input_pipeline import make_corpus  # the sibling script (benchmarks/ is on sys.path)

import sslpipe
from sslpipe.data import create_loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
