"""Turning one :class:`~sslpipe.data.sources.base.Record` into the bytes stored in a shard.

* No resize, target JPEG, and the file is already a complete RGB JPEG: its bytes are kept
  untouched. They are not decoded, only checked: libjpeg-turbo decodes the entropy-coded data
  at 1/8 scale (:func:`~sslpipe.ops.jpeg.jpeg_damage`, about half a decode), where damage shows.
* Anything else is decoded under the loader's decode policy (:mod:`sslpipe.ops.images`: EXIF
  orientation applied, CMYK, grayscale, 16-bit, palette and alpha images made 8-bit RGB; array
  sources keep grayscale), resized with the collators' uint8 kernel so that the shorter side
  is ``resize``, and encoded: what the loader would have decoded from the original file.
  JPEGs are decoded at the largest DCT reduction the resize allows.
* A file that cannot be read or decoded (zero bytes, truncated, not an image) gives a skip
  reason instead of bytes; the caller counts and lists it.
* A JPEG that libjpeg-turbo decodes only past damage (``"Corrupt JPEG data: 272 extraneous
  bytes before marker 0xd9"``; PIL passes over it in silence) gives its bytes (kept, or
  re-encoded from what was decoded) and the damage in ``Encoded.damage``; the caller keeps or
  skips it (``ShardOptions.damaged``) and names it either way.

:func:`encode_stream` encodes a shard set's records in worker processes, in input order (the
shards do not depend on the number of workers).
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import signal
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from sslpipe.data.sources.base import Record
from sslpipe.ops.crops import resized_crop
from sslpipe.ops.decoding import DamagedImageWarning, EncodedImage
from sslpipe.ops.jpeg import jpeg_damage, jpeg_reduction

if TYPE_CHECKING:
    from sslpipe.data.selection import RecordStream
    from sslpipe.data.sharding import ShardOptions

FORMATS = ("auto", "jpg", "png")
_EOI = b"\xff\xd9"


@dataclass(frozen=True)
class EncodeOptions:
    """How images are written.

    Attributes:
        resize: shorter side in pixels after resizing (aspect kept), or None to keep the size.
        image_format: ``"jpg"``, ``"png"`` or ``"auto"`` (JPEG for image files, PNG for array
            sources such as CIFAR or IDX, which are lossless at the source).
        quality: JPEG quality 1-100 when an image is (re-)encoded as JPEG.
    """

    resize: int | None = None
    image_format: str = "auto"
    quality: int = 90

    def __post_init__(self) -> None:
        if self.image_format not in FORMATS:
            raise ValueError(f"`format` must be one of {list(FORMATS)}. Got {self.image_format!r}")
        if self.resize is not None and self.resize <= 0:
            raise ValueError(f"`resize` must be > 0. Got {self.resize}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"`quality` must be in [1, 100]. Got {self.quality}")

    def target(self, record: Record) -> str:
        """The format (``jpg``/``png``) this record is written in."""
        if self.image_format != "auto":
            return self.image_format
        return "png" if record.array is not None else "jpg"


@dataclass(frozen=True)
class Encoded:
    """A record ready for a shard: ``data`` in ``ext`` format, or a ``reason`` it was skipped;
    ``damage`` is libjpeg-turbo's warning when the image decodes only past damage."""

    key: str
    label: int | None
    ext: str
    data: bytes | None
    reason: str | None
    where: str
    size: tuple[int, int] | None = None  # (H, W) as the loader will decode it
    damage: str | None = None


def encode_record(record: Record, options: EncodeOptions) -> Encoded:
    """Encode one record (see the module docstring); never raises for a bad image."""
    ext = options.target(record)
    where = record.path or record.key
    damage = None
    try:
        if record.array is not None:
            image = Image.fromarray(np.ascontiguousarray(record.array))
            data = _encode(_resized(image, options.resize), ext, options.quality)
        else:
            data, damage = _encode_file(str(record.path), ext, options)
    except _Skip as skip:
        return Encoded(record.key, record.label, ext, None, str(skip), where)
    shape = EncodedImage(data, where=where).shape  # the header only
    return Encoded(record.key, record.label, ext, data, None, where, (shape[1], shape[2]),
                   damage)


def encode_file_baseline(path: str, resize: int, quality: int = 90) -> bytes:
    """Plain PIL decode + RGB + resize (bilinear) + JPEG encode; the benchmark's reference."""
    with Image.open(path) as source:
        rgb = source.convert("RGB")
        rgb = rgb.resize(_shorter_side_size(rgb.size, resize), Image.Resampling.BILINEAR)
        return _encode(rgb, "jpg", quality)


class _Skip(Exception):
    """An image that cannot be written; the message is the reason recorded in the manifest."""


def _encode_file(path: str, ext: str, options: EncodeOptions) -> tuple[bytes, str | None]:
    """The bytes to store for the file at ``path``, and the damage libjpeg-turbo reported in
    it (None when there was none)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as error:
        raise _Skip(f"unreadable: {error.strerror or error}") from error
    if not raw:
        raise _Skip("empty file (0 bytes)")
    try:
        image = EncodedImage(raw, where=path)
    except ValueError as error:
        raise _Skip(f"not an image: {_reason(error, path)}") from error
    if (options.resize is None and ext == "jpg" and image.format == "JPEG"
            and _is_color_jpeg(raw) and _EOI in raw[-64:]):
        # the EXIF orientation stays with the bytes: every decoder applies it
        why = jpeg_damage(raw)
        if why is None:
            return raw, None
        # damaged, or worse: the loader's decoder tells which (and names the damage)
        return raw, _decode(image, 1, path)[1] or why
    reduce = 1
    if options.resize is not None and image.format == "JPEG":
        reduce = jpeg_reduction(min(image.raw_hw), options.resize)
    # the loader's decode policy (EXIF orientation, modes, damage), so that a re-encoded
    # image shows what the kept bytes would have shown
    pixels, damage = _decode(image, reduce, path)
    if options.resize is not None:
        h, w = pixels.shape[-2:]
        out_w, out_h = _shorter_side_size((w, h), options.resize)
        if (out_h, out_w) != (h, w):
            box = torch.tensor([[0.0, 0.0, w, h]])
            pixels = resized_crop([pixels], box, (out_h, out_w), method="interpolate")[0]
    return _encode(Image.fromarray(pixels.permute(1, 2, 0).numpy()), ext, options.quality), damage


def _decode(image: EncodedImage, reduce: int, path: str) -> tuple[torch.Tensor, str | None]:
    """Pixels under the loader's decode policy, and the damage the decoder read past."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DamagedImageWarning)
            pixels = image.decode(reduce)
    except ValueError as error:
        raise _Skip(f"corrupt image data: {_reason(error, path)}") from error
    damage = [w.message.why for w in caught if isinstance(w.message, DamagedImageWarning)]
    for w in caught:  # anything else is not this function's to keep
        if not isinstance(w.message, DamagedImageWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return pixels, (damage[0] if damage else None)


def _is_color_jpeg(raw: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(raw)) as image:
            return image.mode == "RGB"
    except Exception:
        return False


def _reason(error: Exception, path: str) -> str:
    """The decoder's message without the path it starts with (the manifest names the path)."""
    text = str(error)
    return text[len(path) + 2:] if text.startswith(path + ": ") else text


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "YCbCr"):
        return image
    if image.mode == "P" or image.mode.endswith("A") or "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def _resized(image: Image.Image, resize: int | None) -> Image.Image:
    if resize is None:
        return image
    size = _shorter_side_size(image.size, resize)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)


def _shorter_side_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    w, h = size
    if w <= h:
        return side, max(1, round(h * side / w))
    return max(1, round(w * side / h)), side


def _encode(image: Image.Image, ext: str, quality: int) -> bytes:
    out = io.BytesIO()
    if ext == "jpg":
        image.save(out, "JPEG", quality=quality)
    else:
        if image.mode == "YCbCr":
            image = image.convert("RGB")
        image.save(out, "PNG", compress_level=6)
    return out.getvalue()


def encode_stream(stream: RecordStream, options: ShardOptions, start: int) -> Iterator[Encoded]:
    """Encoded records from ``start`` on, in stream order; replacements the consumer queues
    while it reads (``stream.failed``) are encoded after the records, in turn."""
    work = partial(encode_record, options=options.encode)
    bar = _progress(len(stream.items), start, options.progress)
    threads = torch.get_num_threads()
    position = start
    try:
        # parallelism is across processes: torch's intra-op threads (the resize) would only
        # spin against the other workers
        torch.set_num_threads(1)
        pool: Any = None
        if options.workers > 1:
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            pool = context.Pool(options.workers, initializer=_worker_init)
        with pool if pool is not None else contextlib.nullcontext():
            while position < len(stream.items):
                batch = stream.items[position:]
                # imap keeps input order, so the shards do not depend on the number of workers
                results = (map(work, batch) if pool is None
                           else pool.imap(work, batch, chunksize=16))
                for result in results:
                    position += 1
                    yield result
                    bar.total = max(bar.total, len(stream.items))
                    bar.update()
    finally:
        torch.set_num_threads(threads)
        bar.close()


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: only the parent acts on it (it ends the pool);
    # workers that raised KeyboardInterrupt themselves could leave Pool.terminate waiting
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)


def _progress(total: int, start: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="img", disable=not enabled, smoothing=0.1,
                desc="shard", dynamic_ncols=True)
