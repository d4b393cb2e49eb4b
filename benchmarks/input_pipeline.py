"""Input-path throughput: sslpipe's backends against the public ways of feeding SSL training.

One run, one JPEG corpus (skimage photos cropped and resized to 300-500 px, quality 90,
written as WebDataset shards in a temporary directory), images per second for:

* ``torchvision``: per-image PIL transforms in a DataLoader (how lightly and solo-learn do it);
* ``kornia``: CPU decode in DataLoader workers, then kornia's batched augmentation on the device;
* ``dali-native``: a DALI pipeline written as DALI's own examples write it (decode, random
  resized crop, colour twist, normalise), on the CPU without a GPU;
* ``sslpipe-<backend>``: :func:`sslpipe.data.create_loader` with each available backend;
  on CUDA also ``sslpipe-nvjpeg+cpu <share>``: nvJPEG with that share of the JPEGs decoded by
  the workers on the CPU at the same time (``--cpu-decode-shares``).

Tasks: SimCLR two views at 224 px (random resized crop, flip, colour jitter p=0.8, grayscale
p=0.2, no blur in any path) and rotation (centre square, 224 px, four rotations). On a CPU each
path runs with one worker/thread ("per core") and with all cores; on a GPU rates are absolute.

    python benchmarks/input_pipeline.py                    # short CPU run
    python benchmarks/input_pipeline.py --images 2048 --batch 256 --device cuda
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch
import webdataset as wds
from PIL import Image

import sslpipe
from sslpipe.data import create_loader
from sslpipe.data.dali_index import index_text, members_of_tar
from sslpipe.data.manifest import write_manifest

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=192, help="corpus size")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", default="simclr,rotation")
    parser.add_argument("--paths", default="torchvision,kornia,dali-native,sslpipe")
    parser.add_argument("--cpu-decode-shares", default="0.2,0.35",
                        help="on CUDA: nvjpeg runs with these shares of JPEGs decoded in the "
                             "workers (comma-separated)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                        help="workers/threads for the all-cores column")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as directory:
        make_corpus(directory, args.images)
        print(f"corpus: {args.images} JPEGs of 300-500 px, q90, in {directory}; batch "
              f"{args.batch}; device {device}; torch threads 1")
        for task in args.tasks.split(","):
            if task not in sslpipe.list_tasks():
                print(f"\n{task}: not registered in this sslpipe, skipped")
                continue
            report(task, directory, args, device)


def report(task: str, directory: str, args: argparse.Namespace, device: torch.device) -> None:
    columns = [1, args.cores] if device.type == "cpu" else [args.cores]
    print(f"\n## {task} ({'two views ' if task == 'simclr' else ''}224 px), images/s")
    head = " | ".join(("per core" if c == 1 else f"{c} workers") for c in columns)
    print(f"| path | {head} | vs torchvision (per core) |")
    print("|---|" + "---|" * (len(columns) + 1))
    base = None
    for name, make in paths(task, directory, args, device):
        rates = []
        for workers in columns:
            try:
                rates.append(measure(make(workers), args.images, args.batch))
            except (ImportError, ValueError, RuntimeError) as err:
                rates.append(float("nan"))
                print(f"<!-- {name} with {workers}: {type(err).__name__}: {err} -->")
        base = rates[0] if name == "torchvision" else base
        ratio = f"{rates[0] / base:.2f}" if base else "-"
        print(f"| {name} | " + " | ".join(f"{r:,.0f}" for r in rates) + f" | {ratio} |")


def paths(task: str, directory: str, args: argparse.Namespace, device: torch.device
          ) -> Iterable[tuple[str, Callable[[int], Iterable]]]:
    wanted = args.paths.split(",")
    urls = sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".tar"))
    if "torchvision" in wanted:
        yield "torchvision", lambda w: torchvision_loader(task, urls, args.batch, w)
    if "kornia" in wanted:
        yield "kornia", lambda w: kornia_loader(task, urls, args.batch, w, device)
    if "dali-native" in wanted:
        yield "dali-native", lambda w: dali_native(task, urls, args.batch, w, device, args.images)
    if "sslpipe" in wanted:
        options = {"size": 224, "blur": 0.0} if task == "simclr" else {"size": 224}
        backends = ["cpu", "dali"] + (["nvjpeg"] if device.type == "cuda" else [])
        for backend in backends:
            yield f"sslpipe-{backend}", lambda w, b=backend: create_loader(
                directory, sslpipe.create_task(task, **options), args.batch, device=device,
                backend=b, num_workers=w, shuffle_buffer=64)
        shares = [float(x) for x in args.cpu_decode_shares.split(",") if x] if (
            device.type == "cuda") else []
        for share in shares:  # nvJPEG on the GPU and libjpeg-turbo in the workers together
            yield f"sslpipe-nvjpeg+cpu {share:.2f}", lambda w, s=share: create_loader(
                directory, sslpipe.create_task(task, **options), args.batch, device=device,
                backend="nvjpeg", num_workers=w, shuffle_buffer=64, cpu_decode_share=s)


def measure(loader: Iterable, images: int, batch: int) -> float:
    """Images per second over one pass, after the first batch (worker start-up) is out."""
    it = iter(loader)
    next(it)
    start, seen = time.perf_counter(), 0
    for _ in range(images // batch - 1):
        out = next(it)
        seen += batch
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    del out
    return seen / (time.perf_counter() - start)


def torchvision_loader(task: str, urls: list[str], batch: int, workers: int) -> Iterable:
    from torchvision import transforms as T

    norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
    if task == "simclr":
        view = T.Compose([
            T.RandomResizedCrop(224), T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8), T.RandomGrayscale(0.2),
            *norm,
        ])

        def transform(pil: Image.Image) -> tuple:
            return view(pil), view(pil)
    else:
        square = T.Compose([T.Resize(224), T.CenterCrop(224), *norm])

        def transform(pil: Image.Image) -> tuple:
            x = square(pil)
            return tuple(torch.rot90(x, k, (1, 2)) for k in range(4))

    data = (wds.WebDataset(urls, shardshuffle=False, nodesplitter=None).repeat()
            .decode("pil").to_tuple("jpg").map(lambda s: transform(s[0])))
    return torch.utils.data.DataLoader(data, batch_size=batch, num_workers=workers)


def kornia_loader(task: str, urls: list[str], batch: int, workers: int,
                  device: torch.device) -> Iterable:
    import kornia.augmentation as K

    def decode(sample: tuple) -> torch.Tensor:
        pil = sample[0].convert("RGB").resize((256, 256), Image.BILINEAR)
        return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)

    data = (wds.WebDataset(urls, shardshuffle=False, nodesplitter=None).repeat()
            .decode("pil").to_tuple("jpg").map(decode))
    loader = torch.utils.data.DataLoader(data, batch_size=batch, num_workers=workers)
    norm = K.Normalize(torch.tensor(MEAN), torch.tensor(STD))
    if task == "simclr":
        aug = K.AugmentationSequential(
            K.RandomResizedCrop((224, 224)), K.RandomHorizontalFlip(),
            K.ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8), K.RandomGrayscale(p=0.2), norm).to(device)
    else:
        aug = K.AugmentationSequential(K.Resize((224, 224)), norm).to(device)
    for x in loader:
        x = x.to(device, non_blocking=True).float().div_(255)
        if task == "simclr":
            yield aug(x), aug(x)
        else:
            y = aug(x)
            yield torch.cat([torch.rot90(y, k, (2, 3)) for k in range(4)])


def dali_native(task: str, urls: list[str], batch: int, threads: int, device: torch.device,
                images: int) -> Iterable:
    from nvidia.dali import fn, pipeline_def, types

    gpu = device.type == "cuda"

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=0 if gpu else None)
    def pipe():  # type: ignore[no-untyped-def]
        jpegs = fn.readers.webdataset(paths=urls, index_paths=[u[:-4] + ".idx" for u in urls],
                                      ext=["jpg"], random_shuffle=True,
                                      initial_fill=64, name="reader")
        decoded = fn.decoders.image(jpegs, device="mixed" if gpu else "cpu",
                                    output_type=types.RGB)
        if task != "simclr":
            # the same work as the other rotation paths: centre square, then all 4 rotations
            square = fn.resize(decoded, resize_shorter=224)
            base = fn.crop_mirror_normalize(square, crop=(224, 224), output_layout="HWC",
                                            mean=[m * 255 for m in MEAN],
                                            std=[s * 255 for s in STD])
            return (base, *(fn.rotate(base, angle=a, keep_size=True) for a in (90, 180, 270)))
        views = []
        for _ in range(2):
            crop = fn.random_resized_crop(decoded, size=224)
            twist = fn.color_twist(crop, brightness=fn.random.uniform(range=[0.2, 1.8]),
                                   contrast=fn.random.uniform(range=[0.2, 1.8]),
                                   saturation=fn.random.uniform(range=[0.2, 1.8]),
                                   hue=fn.random.uniform(range=[-72.0, 72.0]))
            keep = fn.cast(fn.random.coin_flip(probability=0.8), dtype=types.FLOAT)
            gray = fn.color_twist(twist, saturation=keep)
            views.append(fn.crop_mirror_normalize(
                gray, mirror=fn.random.coin_flip(), mean=[m * 255 for m in MEAN],
                std=[s * 255 for s in STD]))
        return tuple(views)

    p = pipe()
    p.build()
    while True:
        yield p.run()


def photo_jpegs(count: int) -> list[bytes]:
    """``count`` JPEG crops of skimage photos, 300-500 px on the longer side, q90 (seeded)."""
    from skimage import data as photos

    rng = np.random.default_rng(0)
    sources = [_rgb(getattr(photos, name)()) for name in PHOTOS]
    out = []
    for i in range(count):
        photo = sources[i % len(sources)]
        h, w = photo.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1)), int(w * rng.uniform(0.6, 1))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        side = int(rng.integers(300, 501))
        pil = Image.fromarray(photo[y:y + ch, x:x + cw])
        pil = pil.resize((side, int(side * ch / cw)) if cw >= ch else
                         (int(side * cw / ch), side), Image.BICUBIC)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def make_corpus(directory: str, count: int, per_shard: int = 64) -> None:
    """``count`` JPEG crops of skimage photos (:func:`photo_jpegs`) as shards with a manifest."""
    jpegs = photo_jpegs(count)
    shards = []
    for s in range(0, count, per_shard):
        file = f"bench-{s // per_shard:06d}.tar"
        path = os.path.join(directory, file)
        with wds.TarWriter(path) as sink:
            for i in range(s, min(count, s + per_shard)):
                sink.write({"__key__": f"{i:08d}", "jpg": jpegs[i], "cls": b"0"})
        with open(path[:-4] + ".idx", "w") as f:
            f.write(index_text(members_of_tar(path)))
        shards.append({"file": file, "index_file": file[:-4] + ".idx",
                       "samples": min(count, s + per_shard) - s,
                       "bytes": os.path.getsize(path), "sha256": ""})
    write_manifest(directory, {
        "format": "sslpipe-shards", "version": 1, "name": "bench", "source": "skimage",
        "root": "", "split": "train", "classes": ["photo"], "labeled": True,
        "num_samples": count, "image_format": "jpg", "resize": None, "quality": 90,
        "subset": None, "counts_per_class": {"0": count}, "shards": shards, "skipped": [],
        # encoded here by PIL, none damaged: recorded as `sslpipe shard` records it, so the
        # GPU backends trust the record rather than check each JPEG (what shards made by
        # sslpipe get; shards without the record are checked in the workers)
        "damaged": [],
        "created_by": "benchmarks/input_pipeline.py",
    })


def _rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.stack([array] * 3, -1)
    if array.dtype != np.uint8:
        array = (255 * (array - array.min()) / max(1e-8, np.ptp(array))).astype(np.uint8)
    return array[..., :3]


if __name__ == "__main__":
    main()
