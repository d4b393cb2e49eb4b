"""The two collator stages on the CPU: bytes to the device, host-stage speed, where to finish.

Four tables, every figure measured in this run beside its baseline:

1. **Bytes per image crossing to the device**, per task at 224 px: the finished float Batch
   (inputs and targets, what the workers shipped before the split) against the uint8 host batch
   (what they ship now).
2. **Host stage against the whole collator**, images/s on one core from JPEG bytes: what a
   DataLoader worker does per image when the GPU does the float work.
3. **Where the device stage runs on a CPU-only machine**: the cpu backend end to end with the
   device stage in the workers (``device_stage="workers"``) against in the main process
   (``"device"``), both with every core as a worker; the loader alone, and feeding a
   ResNet-18 training step (rotation at 64 px, SimCLR at 96 px) in the main process, which is
   what a CPU run does.
4. **SimCLR two views against per-image torchvision v2 transforms doing the same work**
   (random resized crop, flip, colour jitter p 0.8, grayscale p 0.2, normalise; with and
   without SimCLR's blur, p 0.5 with 23 taps), one core, from JPEG bytes: the collator alone,
   and end to end through one DataLoader worker reading the same shards (webdataset for
   torchvision). Only when ``--tasks`` includes simclr; tables 3 and 4 time only simclr and
   rotation.

Every ratio column says its direction (``main / workers``: above 1, the main process is
faster).

    python benchmarks/host_device.py                    # about six minutes on 2 cores
    python benchmarks/host_device.py --tasks simclr,rotation --images 64

Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from collators import make_corpus, task_options  # sibling scripts (benchmarks/ is on sys.path)
from input_pipeline import make_corpus as make_shards

import sslpipe
from sslpipe.batch import nbytes
from sslpipe.data import create_loader
from sslpipe.ops.color import IMAGENET_MEAN, IMAGENET_STD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--tasks", default="",
                        help="comma-separated task names; empty: every registered task")
    parser.add_argument("--images", type=int, default=64, help="images per timed batch")
    parser.add_argument("--iters", type=int, default=2, help="timed batches per figure")
    parser.add_argument("--loader-images", type=int, default=384,
                        help="images in the shards read by the loaders of table 3 (where the "
                        "device stage runs) and table 4 (SimCLR against torchvision v2)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="DataLoader workers of table 3")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [n for n in args.tasks.split(",") if n] or sslpipe.list_tasks()
    corpus = make_corpus(args.images, 224)["jpeg"]
    print(f"{len(corpus)} JPEG photos of 300-500 px (q90) per batch; one thread; torch "
          f"{torch.__version__}")

    rows = []
    for name in names:
        collator = sslpipe.create_collator(name, **task_options(name, 224), seed=0)
        host = collator.host_stage(corpus)
        batch = collator.device_stage(host)
        fused_bytes = nbytes((batch.inputs, batch.targets)) / len(corpus)
        rows.append((name, f"{fused_bytes / 1e3:,.0f}", f"{host.nbytes / len(corpus) / 1e3:,.0f}",
                     f"{fused_bytes / (host.nbytes / len(corpus)):.1f}"))
    _table("1. kB per image crossing to the device (224 px)",
           ("task", "float Batch", "uint8 host batch", "ratio float / uint8"), rows)

    rows = []
    for name in names:
        options = {**task_options(name, 224), "seed": 0}
        whole = _rate(sslpipe.create_collator(name, **options), corpus, args.iters)
        host = _rate(sslpipe.create_collator(name, **options).host_stage, corpus, args.iters)
        rows.append((name, f"{whole:,.0f}", f"{host:,.0f}", f"{host / whole:.2f}"))
    _table("2. images/s on one core: host stage alone against the whole collator",
           ("task", "whole collator", "host stage", "ratio host / whole"), rows)

    rows = []
    with tempfile.TemporaryDirectory() as directory:
        # at least one shard per worker, so that every worker reads (the loader fits its
        # workers to the shards)
        make_shards(directory, args.loader_images,
                    per_shard=max(1, min(64, args.loader_images // max(1, args.workers))))
        for name in [n for n in ("simclr", "rotation") if n in names]:
            task = sslpipe.create_task(name, **task_options(name, 224))
            rates = _both_rates(directory, task, args.workers)
            rows.append((f"{name} 224 px, loader alone", f"{rates['workers']:,.0f}",
                         f"{rates['device']:,.0f}", f"{rates['device'] / rates['workers']:.2f}"))
        for name, size in (("rotation", 64), ("simclr", 96)):
            if name not in names:
                continue
            task = sslpipe.create_task(name, size=size)
            rates = _both_rates(directory, task, args.workers, train=True)
            rows.append((f"{name} {size} px, feeding a ResNet-18 step", f"{rates['workers']:,.1f}",
                         f"{rates['device']:,.1f}", f"{rates['device'] / rates['workers']:.2f}"))
        workers = "/".join(str(n) for n in sorted(_WORKERS_RUN))  # what the loaders ran
        _WORKERS_RUN.clear()
        _table(f"3. cpu backend on the CPU, {workers} workers, images/s: where the "
               "device stage runs",
               ("run", "in the workers", "in the main process", "ratio main / workers"), rows)

        if "simclr" not in names:
            return
        rows = []
        for blur in (0.0, 0.5):
            ours = _rate(sslpipe.create_collator("simclr", size=224, blur=blur, seed=0), corpus,
                         args.iters)
            theirs = _rate(_torchvision_v2(blur), corpus, args.iters)
            rows.append((f"{blur:g}", "collator alone", f"{ours:,.0f}", f"{theirs:,.0f}",
                         f"{ours / theirs:.2f}"))
        for blur in (0.0, 0.5):  # end to end: shards read and decoded in one worker
            task = sslpipe.create_task("simclr", size=224, blur=blur)
            ours = _loader_rate(directory, task, "workers", 1)
            theirs = _v2_loader_rate(directory, blur)
            rows.append((f"{blur:g}", "through a DataLoader, 1 worker", f"{ours:,.0f}",
                         f"{theirs:,.0f}", f"{ours / theirs:.2f}"))
        _table("4. SimCLR two views at 224 px from JPEG bytes, one core, images/s",
               ("blur p", "how", "sslpipe", "torchvision v2 per image",
                "ratio sslpipe / torchvision"), rows)


_WORKERS_RUN: set[int] = set()


def _rate(fn: Callable[[Any], Any], samples: list[Any], iters: int) -> float:
    fn(samples)  # warm-up
    start = time.perf_counter()
    for _ in range(iters):
        fn(samples)
    return iters * len(samples) / (time.perf_counter() - start)


def _both_rates(directory: str, task: Any, workers: int, train: bool = False
                ) -> dict[str, float]:
    """Both placements, timed in the order workers, device, device, workers (the first run in
    a process is slower; the order cancels that and any drift), each the mean of its two."""
    rates: dict[str, list[float]] = {"workers": [], "device": []}
    for where in ("workers", "device", "device", "workers"):
        rates[where].append(_loader_rate(directory, task, where, workers, train=train))
    return {where: sum(r) / len(r) for where, r in rates.items()}


def _loader_rate(directory: str, task: Any, where: str, workers: int, train: bool = False
                 ) -> float:
    step: Callable[[Any], None] = lambda batch: None  # noqa: E731
    if train:
        import timm

        torch.set_num_threads(os.cpu_count() or 1)  # the main process of a CPU run
        model = task.build(timm.create_model("resnet18", num_classes=0))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

        def step(batch: Any) -> None:
            optimizer.zero_grad()
            task.loss(model(batch.inputs), batch).backward()
            optimizer.step()

    loader = create_loader(directory, task, 32, num_workers=workers, device_stage=where)
    _WORKERS_RUN.add(loader.num_workers)
    it = iter(loader)
    step(next(it))  # worker start-up, first step
    start, seen = time.perf_counter(), 0
    for batch in it:
        step(batch)
        seen += batch.batch_size
    torch.set_num_threads(1)
    return seen / (time.perf_counter() - start)


def _v2_loader_rate(directory: str, blur: float, batch: int = 32) -> float:
    """torchvision v2 per image in a DataLoader worker over the same shards (webdataset)."""
    import webdataset as wds
    from torch.utils.data import DataLoader

    urls = sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".tar"))
    views = _torchvision_v2(blur)
    data = (wds.WebDataset(urls, shardshuffle=False, nodesplitter=None)
            .to_tuple("jpg", "cls").batched(batch, collation_fn=lambda s: views(s)))
    loader = DataLoader(data, batch_size=None, num_workers=1)
    it = iter(loader)
    next(it)  # worker start-up
    start, seen = time.perf_counter(), 0
    for first, _ in it:
        seen += len(first)
    return seen / (time.perf_counter() - start)


def _torchvision_v2(blur: float) -> Callable[[list[Any]], Any]:
    """SimCLR's two views, one image at a time with torchvision.transforms.v2 on PIL."""
    import io

    from PIL import Image
    from torchvision.transforms import v2

    view = v2.Compose([
        v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8), v2.RandomGrayscale(0.2),
        v2.RandomApply([v2.GaussianBlur(23, (0.1, 2.0))], p=blur),
        v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])

    def collate(samples: list[Any]) -> Any:
        pairs = []
        for data, _ in samples:
            image = Image.open(io.BytesIO(data)).convert("RGB")
            pairs.append((view(image), view(image)))
        return torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])

    return collate




def _table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    print(f"\n## {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
