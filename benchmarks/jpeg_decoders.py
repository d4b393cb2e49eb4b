"""JPEG decoders side by side: pixel agreement with Pillow and images per second.

Every decode path sslpipe can take (or could take) on one corpus of JPEG photos (skimage's
samples, 300-500 px, quality 90, 4:2:0 chroma): Pillow is the reference (libjpeg-turbo,
"fancy" triangular chroma upsampling, what torchvision's CPU transforms and DALI's CPU decoder
give). For each decoder the table gives the largest and the mean absolute difference to
Pillow over the corpus, whether it applied an EXIF orientation tag (one image is written
with orientation 6), and images per second decoding the corpus in batches.

* ``simplejpeg`` (sslpipe's CPU decoder) and ``simplejpeg fastupsample`` (nearest chroma);
* ``torchvision cuda`` (``decode_jpeg(list, device="cuda")``: nvJPEG with its default
  flags);
* ``nvimgcodec <backend>``: nvImageCodec's batched decoder with ``:fancy_upsampling=1``
  (``cpu``, ``gpu``: CUDA nvJPEG, ``hw``: the hardware JPEG engine, ``hybrid``: its default
  mix), where nvImageCodec is installed.

    python benchmarks/jpeg_decoders.py                   # CPU decoders only
    python benchmarks/jpeg_decoders.py --device cuda --images 2048 --batch 256

Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import numpy as np
import torch
from input_pipeline import photo_jpegs  # the sibling script (benchmarks/ is on sys.path)
from PIL import Image

Decoder = Callable[[list[bytes]], list[np.ndarray | None]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    corpus, rotated = make_corpus(args.images)
    reference = [np.asarray(Image.open(io.BytesIO(d)).convert("RGB")) for d in corpus]
    upright = np.asarray(_exif_transpose(Image.open(io.BytesIO(rotated))).convert("RGB"))
    print(f"corpus: {len(corpus)} JPEGs of 300-500 px, q90, 4:2:0; batch {args.batch}; "
          f"reference: Pillow {Image.__version__}")
    print("\n| decoder | max abs diff | mean abs diff | EXIF applied | images/s |")
    print("|---|---|---|---|---|")
    for name, decode in decoders(torch.device(args.device)):
        try:
            out = decode(corpus[: args.batch])  # warm-up (CUDA contexts, handles)
            out = [x for d in range(0, len(corpus), args.batch)
                   for x in decode(corpus[d:d + args.batch])]
            diffs = [np.abs(a.astype(np.int16) - b) for a, b in zip(out, reference)
                     if a is not None and a.shape == b.shape]
            if len(diffs) != len(corpus):
                raise RuntimeError(f"{len(corpus) - len(diffs)} images failed or changed shape")
            turned = decode([rotated])[0]
            exif = "yes" if turned is not None and turned.shape == upright.shape else "no"
            rate = _rate(decode, corpus, args.batch, args.device)
        except Exception as err:  # a decoder the machine lacks is a row, not a crash
            print(f"| {name} | - | - | - | {type(err).__name__}: {str(err)[:80]} |")
            continue
        worst = max(int(d.max()) for d in diffs)
        mean = float(np.mean([d.mean() for d in diffs]))
        print(f"| {name} | {worst} | {mean:.3f} | {exif} | {rate:,.0f} |")
    if args.device.startswith("cuda"):
        _probe_nvimgcodec_on_device(corpus[0], torch.device(args.device))


def _probe_nvimgcodec_on_device(data: bytes, device: torch.device) -> None:
    """What the nvjpeg backend needs of nvImageCodec beyond pixels: a zero-copy handover to
    torch, and what it returns for damaged data."""
    try:
        from nvidia import nvimgcodec as nv

        decoder = nv.Decoder(device_id=device.index or 0, options=":fancy_upsampling=1")
        bad = bytearray(data)
        bad[len(bad) // 2: len(bad) // 2 + 16] = bytes(16)
        images = decoder.decode([nv.CodeStream(data), nv.CodeStream(bytes(bad)),
                                 nv.CodeStream(b"\xff\xd8\xff" + bytes(64))])
        ok = images[0]
        t = torch.as_tensor(ok, device=device)
        d = torch.from_dlpack(ok)
        print(f"\nnvimgcodec on {device}: image {ok.shape} buffer {ok.buffer_kind}; "
              f"torch.as_tensor {tuple(t.shape)} {t.dtype} {t.device}; from_dlpack {d.device} "
              f"same memory: {t.data_ptr() == d.data_ptr()}")
        print(f"flipped bytes -> {'None' if images[1] is None else 'decoded'}; "
              f"truncated -> {'None' if images[2] is None else 'decoded'}")
    except Exception as err:
        print(f"\nnvimgcodec probe failed: {type(err).__name__}: {err}")


def decoders(device: torch.device) -> list[tuple[str, Decoder]]:
    import simplejpeg

    out: list[tuple[str, Decoder]] = [
        ("simplejpeg", lambda b: [simplejpeg.decode_jpeg(d) for d in b]),
        ("simplejpeg fastupsample",
         lambda b: [simplejpeg.decode_jpeg(d, fastupsample=True) for d in b]),
    ]
    if device.type == "cuda":
        out.append(("torchvision cuda", _torchvision(device)))
    for backend in (("cpu", "gpu", "hw", "hybrid") if device.type == "cuda" else ("cpu",)):
        out.append((f"nvimgcodec {backend}", _nvimgcodec(backend, device)))
    return out


def _torchvision(device: torch.device) -> Decoder:
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(batch: list[bytes]) -> list[np.ndarray | None]:
        tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in batch]
        images = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
        return [x.permute(1, 2, 0).cpu().numpy() for x in images]

    return decode


def _nvimgcodec(backend: str, device: torch.device) -> Decoder:
    def decode(batch: list[bytes]) -> list[np.ndarray | None]:
        from nvidia import nvimgcodec as nv

        kinds = {"cpu": nv.CPU_ONLY, "gpu": nv.GPU_ONLY, "hw": nv.HW_GPU_ONLY}
        key = (backend, str(device))
        if key not in _NV_DECODERS:
            backends = [nv.Backend(kinds[backend])] if backend in kinds else None
            dev = nv.NVIMGCODEC_DEVICE_CPU_ONLY if device.type == "cpu" else (device.index or 0)
            _NV_DECODERS[key] = nv.Decoder(device_id=dev, backends=backends,
                                           options=":fancy_upsampling=1")
        images = _NV_DECODERS[key].decode([nv.CodeStream(d) for d in batch],
                                          params=nv.DecodeParams(apply_exif_orientation=True))
        return [None if im is None else np.asarray(im.cpu()) for im in images]

    return decode


_NV_DECODERS: dict[tuple[str, str], object] = {}


def _rate(decode: Decoder, corpus: list[bytes], batch: int, device: str) -> float:
    start = time.perf_counter()
    for d in range(0, len(corpus), batch):
        decode(corpus[d:d + batch])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(corpus) / (time.perf_counter() - start)


def make_corpus(count: int) -> tuple[list[bytes], bytes]:
    """``count`` JPEG crops of skimage photos (300-500 px, q90), and one with EXIF orientation
    6 (stored sideways, shown rotated 90 degrees clockwise)."""
    from skimage import data as photos

    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(photos.astronaut()[:300, :400]).save(buf, format="JPEG", quality=90,
                                                         exif=exif)
    return photo_jpegs(count), buf.getvalue()


def _exif_transpose(image: Image.Image) -> Image.Image:
    from PIL import ImageOps

    return ImageOps.exif_transpose(image)




if __name__ == "__main__":
    main()
