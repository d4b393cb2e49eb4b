"""Images per second of every registered collator on one CPU thread, beside a per-image reference.

The reference does each task the way VISSL / lightly / solo-learn do it: PIL and torchvision
transforms on one image at a time in the dataset, then ``default_collate``. Both run in the same
process, on the same images, one after the other, so their ratio is meaningful even on a busy
machine (absolute numbers are not). Inputs: JPEG bytes (decode included in both) and decoded
images (uint8 tensors for sslpipe, PIL images for the reference), at 32 px (CIFAR-like) and at
224 px outputs from 300-500 px photos.

It also times one ResNet-50 training step (forward, backward, SGD step; CPU, fp32) on the batch
each collator made, at the smallest size, to put the pseudo-label cost next to what it feeds.

    python benchmarks/collators.py                       # every task, about 2-3 minutes
    python benchmarks/collators.py --tasks simclr --sizes 224 --iters 5 --batch-size 64
    python benchmarks/collators.py --tasks dino --sizes 224 --iters 3 --no-train-step

DINO's row is multi-crop (2 x 224 + 6 x 96 at 224 px) against the official per-image
``DataAugmentationDINO`` written with torchvision v2 (RandomResizedCrop and the same colour
ops, per crop).

Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import io
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import default_collate

import sslpipe
import sslpipe.tasks.dino  # noqa: F401  (registers "dino" where the registry does not load it)
from sslpipe.ops.color import IMAGENET_MEAN, IMAGENET_STD
from sslpipe.ops.multicrop import local_size_for

KNOWN_TASKS = ("rotation", "jigsaw", "relative_patch", "counting", "colorization",
               "context_encoder", "simclr", "vicreg", "supervised", "dino")
Reference = Callable[[Image.Image, random.Random], Any]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--tasks", default="", help="comma-separated task names (default: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iters", type=int, default=2, help="timed batches per measurement")
    parser.add_argument("--sizes", default="32,224", help="comma-separated output sizes")
    parser.add_argument("--no-train-step", action="store_true",
                        help="skip the ResNet-50 training-step comparison")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [n for n in args.tasks.split(",") if n] or sorted(set(KNOWN_TASKS) | set(
        sslpipe.list_tasks()))
    registered = set(sslpipe.list_tasks())
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[tuple[str, ...]] = []
    steps: list[tuple[str, ...]] = []
    for name in names:
        if name not in registered:
            print(f"skip {name}: no task module registered under this name yet")
            continue
        for size in sizes:
            corpus = make_corpus(args.batch_size, size)
            try:
                task = sslpipe.create_task(name, **task_options(name, size), seed=0)
                reference = make_reference(name, task)
            except (ValueError, KeyError) as err:
                print(f"skip {name} at {size} px: {err}")
                continue
            for kind in ("jpeg", "tensor"):
                ours = time_collator(task.collator, corpus[kind], args.iters)
                ref = time_reference(reference, corpus[f"{kind}_ref"], args.iters)
                rows.append((name, str(size), kind, f"{ours:,.0f}", f"{ref:,.0f}",
                             f"{ours / ref:.2f}"))
                print("  ".join(rows[-1]), flush=True)
            if size == min(sizes) and not args.no_train_step:
                steps.append(train_step_row(name, task, corpus["tensor"]))
    print_table(("task", "px", "input", "sslpipe img/s", "per-image img/s", "ratio"), rows)
    if steps:
        print_table(("task", "px", "collate ms", "resnet50 step ms", "collate / step"), steps)


def task_options(name: str, size: int) -> dict[str, Any]:
    """``size`` means the output side for most tasks; the patch- and tile-based tasks get the
    patch side that makes their whole layout about ``size`` px."""
    if name == "relative_patch":
        return {"size": max(4, size // 5)}
    if name == "counting":
        return {"size": max(4, size // 2)}
    return {"size": size}


def make_corpus(n: int, size: int) -> dict[str, Any]:
    """JPEG bytes and decoded images: ``size`` px squares for small sizes, 300-500 px photos
    (random crops of scikit-image's samples) otherwise."""
    import skimage.data as data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(),
              data.immunohistochemistry(), data.hubble_deep_field()]
    rng = np.random.default_rng(0)
    jpegs, pils = [], []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = (min(h, int(rng.integers(300, 501))), min(w, int(rng.integers(300, 501))))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        image = Image.fromarray(photo[y:y + ch, x:x + cw])
        if size <= 64:
            image = image.resize((size, size), Image.BILINEAR)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        jpegs.append(buf.getvalue())
        pils.append(Image.open(io.BytesIO(jpegs[-1])).convert("RGB"))
    tensors = [TF.pil_to_tensor(p) for p in pils]
    # labelled as a DataLoader hands them (the supervised task needs labels; the others
    # pass them through), decoded tensors of one size are stacked as one uint8 batch by collect
    labels = [i % 10 for i in range(n)]
    return {"jpeg": list(zip(jpegs, labels)), "jpeg_ref": jpegs,
            "tensor": list(zip(tensors, labels)), "tensor_ref": pils}


def time_collator(collator: Callable[[Any], Any], samples: Any, iters: int) -> float:
    collator(samples)  # warm-up
    start = time.perf_counter()
    for _ in range(iters):
        collator(samples)
    return iters * len(samples) / (time.perf_counter() - start)


def time_reference(reference: Reference, samples: list[Any], iters: int) -> float:
    rng = random.Random(0)

    def one_batch() -> Any:
        out = []
        for s in samples:
            image = Image.open(io.BytesIO(s)).convert("RGB") if isinstance(s, bytes) else s
            out.append(reference(image, rng))
        return default_collate(out)

    one_batch()
    start = time.perf_counter()
    for _ in range(iters):
        one_batch()
    return iters * len(samples) / (time.perf_counter() - start)


def train_step_row(name: str, task: Any, samples: Any) -> tuple[str, ...]:
    """Collator time for one batch against one ResNet-50 SGD step on that batch."""
    import timm

    start = time.perf_counter()
    batch = task.collator(samples)
    collate_ms = (time.perf_counter() - start) * 1e3
    first = samples[0][0]
    size = f"{first.shape[-1]}" if isinstance(first, torch.Tensor) else "mixed"
    try:
        model = task.build(timm.create_model("resnet50", num_classes=0))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        start = time.perf_counter()
        loss = task.loss(model(batch.inputs), batch)
        loss.backward()
        optimizer.step()
        step_ms = (time.perf_counter() - start) * 1e3
    except (ValueError, RuntimeError) as err:
        return (name, size, f"{collate_ms:.0f}", f"n/a ({str(err).splitlines()[0][:60]})", "")
    return (name, size, f"{collate_ms:.0f}", f"{step_ms:.0f}", f"{collate_ms / step_ms:.3f}")


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


# ---- per-image references, from the papers' descriptions ------------------------------------

_TO_TENSOR = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def make_reference(name: str, task: Any) -> Reference:
    """The per-image pipeline of ``name``, with the geometry of ``task``'s options."""
    o = task.options
    builders: dict[str, Callable[[], Reference]] = {
        "rotation": lambda: _rotation(o.size),
        "simclr": lambda: _two_views(o.size, o.view_augments()),
        "vicreg": lambda: _two_views(o.size, o.view_augments()),
        "supervised": lambda: _supervised(o.size),
        "jigsaw": lambda: _jigsaw(o.size, o.grid),
        "relative_patch": lambda: _relative_patch(o.size, task.options.gap
                                                  if o.gap is not None else round(o.size / 2)),
        "counting": lambda: _counting(o.size),
        "colorization": lambda: _colorization(o.size),
        "context_encoder": lambda: _context_encoder(o.size),
        "dino": lambda: _dino(o),
    }
    if name not in builders:
        raise KeyError(f"no per-image reference written for {name!r}")
    return builders[name]()


def _square(image: Image.Image, size: int) -> Image.Image:
    return ImageOps.fit(image, (size, size), Image.BILINEAR)


def _rotation(size: int) -> Reference:
    def ref(image: Image.Image, rng: random.Random) -> Any:
        x = _TO_TENSOR(_square(image, size))
        return torch.stack([torch.rot90(x, k, (1, 2)) for k in range(4)]), torch.arange(4)
    return ref


def _two_views(size: int, specs: Any) -> Reference:
    def view(spec: Any) -> Callable[[Image.Image], torch.Tensor]:
        b, c, s, h = spec.jitter

        def blur(image: Image.Image) -> Image.Image:  # lightly / solo-learn: PIL's blur
            return image.filter(ImageFilter.GaussianBlur(random.uniform(*spec.blur_sigma)))

        return T.Compose([
            T.RandomResizedCrop(size, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(spec.flip),
            T.RandomApply([T.ColorJitter(b, c, s, h)], p=spec.jitter_p),
            T.RandomGrayscale(spec.grayscale),
            T.RandomApply([blur], p=spec.blur),
            T.RandomSolarize(128, p=spec.solarize),
            _TO_TENSOR,
        ])
    views = [view(spec) for spec in specs]
    return lambda image, rng: tuple(v(image) for v in views)


def _supervised(size: int) -> Reference:
    pipe = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), _TO_TENSOR])
    return lambda image, rng: pipe(image)


def _jigsaw(size: int, grid: int) -> Reference:
    perms = [np.random.default_rng(i).permutation(grid * grid) for i in range(100)]

    def ref(image: Image.Image, rng: random.Random) -> Any:
        # sslpipe's defaults: centre square, 64/85 tiles, 30 % of puzzles gray (RGB average),
        # each channel cut up to 2 px from the others, one mean and std per tile
        image = T.CenterCrop(size)(T.Resize(size)(image))
        cell = size // grid
        tile = max(1, round(cell * 64 / 85))
        jitter = min(2, cell - tile)
        x = TF.to_tensor(image)
        if rng.random() < 0.3:
            x = x.mean(0, keepdim=True).expand(3, -1, -1)
        tiles = []
        for k in range(grid * grid):
            y0 = (k // grid) * cell + rng.randint(0, cell - tile - jitter)
            x0 = (k % grid) * cell + rng.randint(0, cell - tile - jitter)
            t = torch.stack([
                x[c, y0 + dy:y0 + dy + tile, x0 + dx:x0 + dx + tile]
                for c, (dy, dx) in enumerate(
                    (rng.randint(0, jitter), rng.randint(0, jitter)) for _ in range(3))
            ])
            tiles.append((t - t.mean()) / (t.std() + 1e-5))
        index = rng.randrange(len(perms))
        return torch.stack([tiles[j] for j in perms[index]]), index
    return ref


def _relative_patch(size: int, gap: int) -> Reference:
    side = 3 * (size + gap)

    def ref(image: Image.Image, rng: random.Random) -> Any:
        image = _square(image, side)
        pos = rng.randrange(8)
        cell = [0, 1, 2, 3, 5, 6, 7, 8][pos]

        def patch(k: int) -> torch.Tensor:
            y0 = (k // 3) * (size + gap) + rng.randint(0, gap)
            x0 = (k % 3) * (size + gap) + rng.randint(0, gap)
            p = TF.to_tensor(image.crop((x0, y0, x0 + size, y0 + size)))
            keep = rng.randrange(3)  # colour dropping: keep one channel, noise in the others
            noise = torch.randn_like(p) * 0.01
            p = torch.where(torch.arange(3).view(3, 1, 1) == keep, p, noise)
            return TF.normalize(p, IMAGENET_MEAN, IMAGENET_STD)
        return patch(4), patch(cell), pos
    return ref


def _counting(size: int) -> Reference:
    def ref(image: Image.Image, rng: random.Random) -> Any:
        image = _square(image, 2 * size)
        whole = _TO_TENSOR(image.resize((size, size), Image.BILINEAR))
        tiles = [_TO_TENSOR(image.crop((x, y, x + size, y + size)))
                 for y in (0, size) for x in (0, size)]
        return whole, torch.stack(tiles)
    return ref


def _colorization(size: int) -> Reference:
    from skimage.color import rgb2lab

    from sslpipe.ops.lab import ab_bins

    centres = ab_bins().numpy().astype(np.float64)  # the same 313 bins as sslpipe

    def ref(image: Image.Image, rng: random.Random) -> Any:
        # as Zhang et al.'s released code: Lab per image, then a nearest-neighbour soft
        # encoding of the ab targets (NNEncLayer: 10 nearest of the 313 bins, Gaussian sigma 5,
        # ab point-sampled every 4 pixels), the work sslpipe's default collator does
        lab = rgb2lab(np.asarray(_square(image, size)))
        light = torch.from_numpy(lab[:, :, :1]).permute(2, 0, 1).float() / 50 - 1
        ab = lab[::4, ::4, 1:].reshape(-1, 2)  # targets at a quarter of the input side
        d2 = ((ab[:, None, :] - centres[None]) ** 2).sum(-1)
        nearest = np.argpartition(d2, 10, axis=1)[:, :10]
        w = np.exp(-np.take_along_axis(d2, nearest, 1) / (2 * 5.0**2))
        w /= w.sum(1, keepdims=True)
        return light, torch.from_numpy(nearest), torch.from_numpy(w)
    return ref


def _context_encoder(size: int) -> Reference:
    def ref(image: Image.Image, rng: random.Random) -> Any:
        x = _TO_TENSOR(_square(image, size))
        lo, hi = size // 4, size - size // 4
        target = x[:, lo:hi, lo:hi].clone()
        x[:, lo:hi, lo:hi] = 0.0  # the dataset mean after normalisation
        return x, target
    return ref


def _dino(options: Any) -> Reference:
    """The official ``DataAugmentationDINO`` (facebookresearch/dino ``main_dino.py``) with
    torchvision v2 on PIL, one crop at a time: RandomResizedCrop (bilinear with antialias, as
    sslpipe; the official code uses bicubic), flip, colour jitter p 0.8, grayscale 0.2, blur
    (p 1.0 / 0.1 / 0.5, sigma 0.1-2, 13 taps: 3 sigma), solarisation p 0.2 on global 2."""
    from torchvision.transforms import v2

    o = options
    local_side = o.local_size or local_size_for(o.size)

    def crop(size: int, scale: tuple[float, float], blur: float, solarize: float) -> Any:
        return v2.Compose([
            v2.RandomResizedCrop(size, scale=scale, antialias=True),
            v2.RandomHorizontalFlip(o.flip),
            v2.RandomApply([v2.ColorJitter(*o.jitter)], p=o.jitter_p),
            v2.RandomGrayscale(o.grayscale),
            v2.RandomApply([v2.GaussianBlur(13, o.blur_sigma)], p=blur),
            v2.RandomSolarize(128, p=solarize),
            v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    global1 = crop(o.size, o.global_scale, o.blur[0], o.solarize[0])
    global2 = crop(o.size, o.global_scale, o.blur[1], o.solarize[1])
    local = crop(local_side, o.local_scale, o.local_blur, 0.0)
    return lambda image, rng: (global1(image), global2(image),
                               *(local(image) for _ in range(o.local_crops)))


if __name__ == "__main__":
    main()
