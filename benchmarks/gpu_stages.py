"""Where a device-decoding backend's time goes: each stage alone, then the whole backend.

On one corpus (skimage photos, 300-500 px, q90, as shards), images per second of:

* ``read``: the DataLoader workers reading and grouping encoded batches (no decode);
* ``decode``: the batched JPEG decoder alone on batches already read (nvImageCodec or
  torchvision's nvJPEG, whichever :func:`sslpipe.data.backends.nvjpeg.jpeg_decoder` picks);
* ``collate``: the task's collator alone (crops, colour, pseudo-labels) on batches already
  decoded on the device;
* ``backend``: ``create_loader(backend="nvjpeg")`` end to end, the two stages overlapped.

The backend can go no faster than its slowest stage; the table says which one that is.

    python benchmarks/gpu_stages.py --device cuda --images 2048 --batch 256
    python benchmarks/gpu_stages.py                       # CPU, nvImageCodec's CPU decoder

Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from input_pipeline import make_corpus  # the sibling script (benchmarks/ is on sys.path)

import sslpipe
from sslpipe.data import create_loader
from sslpipe.data.backends.cpu import _worker_loader
from sslpipe.data.backends.nvjpeg import decode_encoded, jpeg_decoder
from sslpipe.data.backends.workers import BatchStream
from sslpipe.data.reading import ReadPlan, resolve_shards, steps_per_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tasks", default="simclr,rotation")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's top operators of one collate per task")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as directory:
        make_corpus(directory, args.images)
        source = resolve_shards(directory)
        plan = ReadPlan(source, args.batch, steps_per_epoch(args.images, args.batch, 1, True),
                        args.images, shuffle_buffer=64)
        plan.check_readers(args.workers)
        stream = BatchStream(plan, None, "skip", cpu_decode_share=0.0)
        start = time.perf_counter()
        encoded = [e for e, _ in _worker_loader(stream, args.workers, False) if e is not None]
        read = sum(len(e.data) for e in encoded) / (time.perf_counter() - start)
        decoder = jpeg_decoder(device)
        decoded = [decode_encoded(e.data, device)[0] for e in encoded[:1]]  # warm-up
        _sync(device)
        start = time.perf_counter()
        decoded = [decode_encoded(e.data, device)[0] for e in encoded]
        _sync(device)
        decode = sum(len(d) for d in decoded) / (time.perf_counter() - start)
        print(f"{args.images} JPEGs of 300-500 px in batches of {args.batch} on {device}; "
              f"decoder {decoder.name}; {args.workers} workers\n")
        profiles: list[tuple[str, str]] = []
        print("| task | read | decode | collate | backend | slowest stage |")
        print("|---|---|---|---|---|---|")
        for name in args.tasks.split(","):
            options = {"size": 224, "blur": 0.0} if name == "simclr" else {"size": 224}
            task = sslpipe.create_task(name, **options)
            collate = _rate(functools.partial(_collate, task), decoded, device)
            loader = create_loader(directory, task, args.batch, device=device,
                                   backend="nvjpeg" if device.type == "cuda" else "cpu",
                                   num_workers=args.workers, shuffle_buffer=64)
            whole = _rate(lambda batch: batch, loader, device, already=True)
            rates = {"read": read, "decode": decode, "collate": collate}
            slowest = min(rates, key=rates.__getitem__)
            print(f"| {name} | {read:,.0f} | {decode:,.0f} | {collate:,.0f} | {whole:,.0f} | "
                  f"{slowest} |")
            if args.profile:
                profiles.append((name, _profile(task, decoded[0], device)))
        for name, table in profiles:
            print(f"\n### {name}: one collate of {args.batch} decoded images\n\n{table}")


def _collate(task: Any, images: list[Any]) -> Any:
    return task.collator([(x, 0) for x in images])


def _profile(task: Any, images: list[Any], device: torch.device) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    task.collator([(x, 0) for x in images])
    with profile(activities=activities) as prof:
        task.collator([(x, 0) for x in images])
        _sync(device)
    return str(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))


def _rate(fn: Callable[[Any], Any], batches: Any, device: torch.device,
          already: bool = False) -> float:
    """Images per second of ``fn`` over ``batches`` (a loader when ``already``: timed from
    its second batch)."""
    seen, start = 0, None
    for batch in batches:
        out = batch if already else fn(batch)
        if start is None:  # warm-up: the first batch
            _sync(device)
            start = time.perf_counter()
            continue
        seen += out.batch_size
    _sync(device)
    return seen / (time.perf_counter() - start) if start and seen else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
