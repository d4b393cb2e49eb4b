"""Sharding throughput on ImageNet-like JPEGs (one process = one core).

    python benchmarks/shard.py [--images 200] [--size 256]

Makes ``--images`` JPEGs of about 500 x 375 at quality 90 from skimage photos, then measures
images/s for:

* the reference: a plain PIL loop (decode, RGB, bilinear resize of the shorter side, JPEG q90);
* sslpipe's encoder with ``--resize`` (DCT-scaled decode via PIL draft when the scale allows it,
  YCbCr throughout when the output is JPEG), at ``--size`` and at a smaller size where the DCT
  scaling applies;
* ``write_shards`` end to end with resizing, and with the original bytes kept (no decode).

Prints a table; never asserts timings.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from skimage import data as photos

from sslpipe.data import EncodeOptions, ShardOptions, open_source, write_shards
from sslpipe.data.encode import encode_file_baseline, encode_record
from sslpipe.data.sources.base import Record


def make_tree(root: str, count: int) -> list[str]:
    """``count`` ~500 x 375 q90 JPEGs cut from skimage photos, in 4 class folders."""
    sources = [photos.astronaut(), photos.coffee(), photos.chelsea(), photos.rocket()]
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        photo = sources[i % len(sources)]
        h, w = photo.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        size = (500, 375) if i % 3 else (375, 500)
        image = Image.fromarray(photo[y:y + ch, x:x + cw]).resize(size, Image.Resampling.BICUBIC)
        folder = os.path.join(root, "train", f"n{i % 4:08d}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"n{i % 4:08d}_{i}.JPEG")
        image.save(path, quality=90)
        paths.append(path)
    return paths


def rate(fn, items) -> float:
    """Images per CPU-second of ``fn`` over ``items`` (best of 3 passes).

    CPU time of this process, not wall time: the figure is per core and stays meaningful on a
    machine shared with other work.
    """
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for item in items:
            fn(item)
        best = min(best, time.process_time() - start)
    return len(items) / best


def main() -> None:
    parser = argparse.ArgumentParser(description="sslpipe shard throughput",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)  # per core, as `sslpipe shard` runs each worker process
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_tree(tmp, args.images)
        records = [Record(f"k{i}", 0, path=p) for i, p in enumerate(paths)]
        megabytes = sum(os.path.getsize(p) for p in paths) / 1e6
        rows = []
        for size in (args.size, args.size // 2):
            base = rate(lambda p, s=size: encode_file_baseline(p, s), paths)
            options = EncodeOptions(resize=size)
            ours = rate(lambda r, o=options: encode_record(r, o), records)
            rows.append((f"PIL decode+resize+encode -> {size}", base, 1.0))
            rows.append((f"sslpipe encode -> {size}", ours, ours / base))
        source = open_source("imagenet", tmp, "train")
        walls: list[float] = []
        for label, encode in (("write_shards resize 256", EncodeOptions(resize=args.size)),
                              ("write_shards keep bytes", EncodeOptions())):
            out = os.path.join(tmp, f"out{len(rows)}")
            start, wall = time.process_time(), time.perf_counter()
            write_shards(source, out, ShardOptions(encode=encode, workers=1, progress=False))
            rows.append((label, len(paths) / (time.process_time() - start), None))
            walls.append(time.perf_counter() - wall)
        print(f"{args.images} JPEGs ~500x375 q90 ({megabytes:.1f} MB), one process, CPU time\n")
        print(f"{'path':<38} {'img/s/core':>10} {'vs PIL':>8}")
        for name, value, ratio in rows:
            print(f"{name:<38} {value:>10.0f} {'' if ratio is None else f'{ratio:.2f}x':>8}")
        print(f"\nkeep bytes, wall clock: {len(paths) / walls[-1]:.0f} images/s, "
              f"{megabytes / walls[-1]:.0f} MB/s (includes fsync of each shard)")


if __name__ == "__main__":
    main()
