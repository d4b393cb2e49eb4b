"""Crop-and-resize of a ragged batch (images of different sizes) on one device, three ways.

The nvjpeg and dali backends hand the collator a list of ``3 x H_i x W_i`` uint8 images on the
GPU. ``sslpipe.ops.resized_crop`` pads them into one tensor and runs one batched
``roi_align``; this compares the two paddings of ``sslpipe.ops.pad_ragged`` (one copy per
image, or ``torch.nested ... to_padded_tensor``: one concatenation and one padding kernel),
and both with a per-image ``F.interpolate`` loop (how a per-image GPU pipeline does it), at
the same boxes. ``resized_crop`` pads with nested tensors on CUDA and the loop elsewhere. The ratio
column is against the per-image loop, measured in the same run.

    python benchmarks/ragged_crop.py                          # CPU, small
    python benchmarks/ragged_crop.py --device cuda --batch 256 --iters 20

Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from sslpipe.ops.geometry import pad_ragged, random_resized_crop_boxes, resized_crop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    sizes = [(int(torch.randint(300, 501, (1,), generator=gen)),
              int(torch.randint(300, 501, (1,), generator=gen))) for _ in range(args.batch)]
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen).to(device)
              for h, w in sizes]
    boxes = random_resized_crop_boxes(sizes, gen, scale=(0.2, 1.0))
    out = args.size
    auto = "nested" if device.type == "cuda" else "loop"
    ways: dict[str, Callable[[], torch.Tensor]] = {
        "per-image interpolate": lambda: _per_image(images, boxes, out),
        "loop pad + roi_align": lambda: _roi_align(images, boxes, out, "loop"),
        "nested pad + roi_align": lambda: _roi_align(images, boxes, out, "nested"),
        f"resized_crop (sslpipe: {auto} pad)": lambda: resized_crop(images, boxes, out,
                                                                    "roi_align"),
    }
    rows = []
    for name, fn in ways.items():
        try:
            rows.append((name, _rate(fn, args.batch, args.iters, device)))
        except Exception as err:  # a way the device cannot run is reported, not fatal
            print(f"<!-- {name}: {type(err).__name__}: {err} -->")
            rows.append((name, float("nan")))
    base = rows[0][1]
    print(f"ragged batch of {args.batch} images 300-500 px -> {out} px on {device}\n")
    print("| way | images/s | vs per-image |")
    print("|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f} |")


def _per_image(images: list[torch.Tensor], boxes: torch.Tensor, out: int) -> torch.Tensor:
    crops = []
    for im, (x0, y0, x1, y1) in zip(images, boxes.round().long().tolist()):
        crop = im[None, :, y0:y1, x0:x1].float()
        crops.append(F.interpolate(crop, size=(out, out), mode="bilinear", antialias=True,
                                   align_corners=False)[0])
    return torch.stack(crops).round_().clamp_(0, 255).to(torch.uint8)


def _roi_align(images: list[torch.Tensor], boxes: torch.Tensor, out: int,
               pad: str) -> torch.Tensor:
    padded = pad_ragged(images, pad, fill="edge")
    idx = torch.arange(len(images), dtype=torch.float32)[:, None]
    rois = torch.cat([idx, boxes.float()], 1).to(padded.device)
    res = roi_align(padded, rois, (out, out), spatial_scale=1.0, sampling_ratio=0, aligned=True)
    return res.round_().clamp_(0, 255).to(torch.uint8)


def _rate(fn: Callable[[], torch.Tensor], batch: int, iters: int, device: torch.device) -> float:
    fn()  # warm-up (kernels, allocator)
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return batch * iters / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
