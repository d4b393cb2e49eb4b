"""A conformance corpus of odd image files, and what each must decode to under sslpipe's decode
policy (:mod:`sslpipe.ops.images`).

Every entry is ``(bytes, ext, expected)``: ``expected`` is the ``H x W x 3`` uint8 image as it
is meant to be seen, computed here independently of sslpipe (PIL decodes, the EXIF rotation
and the mode rules written out with numpy), or None for a file every path must refuse with a
ValueError. ``tolerance(name)`` is the largest difference a path may show: JPEG decoders may
differ by IDCT rounding, lossless formats not at all.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

ORIENT_OPS = {  # EXIF orientation -> the numpy view that shows the stored image upright
    1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: a.transpose(1, 0, 2)[:, ::-1],
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1], 8: lambda a: a.transpose(1, 0, 2)[::-1],
}


def photo(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    """A smooth colour image (a crop of scikit-image's astronaut, resized)."""
    from skimage import data

    source = data.astronaut()
    y, x = 60 + 7 * seed, 150 + 11 * seed
    crop = Image.fromarray(source[y:y + 4 * h, x:x + 4 * w])
    return np.asarray(crop.resize((w, h), Image.BICUBIC))


def corpus() -> dict[str, tuple[bytes, str, np.ndarray | None]]:
    out: dict[str, tuple[bytes, str, np.ndarray | None]] = {}
    rgb = photo()

    def jpeg(array: np.ndarray, **kw: object) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, "JPEG", quality=90, **kw)
        return buf.getvalue()

    def pil_jpeg(data: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    for name, data in (("jpeg_420", jpeg(rgb)), ("jpeg_444", jpeg(rgb, subsampling=0)),
                       ("jpeg_progressive", jpeg(rgb, progressive=True)),
                       ("jpeg_gray", jpeg(rgb[:, :, 1]))):
        out[name] = (data, "jpg", pil_jpeg(data))
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        data = jpeg(photo(30, 44, o), exif=exif.tobytes())
        out[f"jpeg_exif_{o}"] = (data, "jpg", np.ascontiguousarray(ORIENT_OPS[o](pil_jpeg(data))))
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG", quality=90)
    out["jpeg_cmyk"] = (buf.getvalue(), "jpg", pil_jpeg(buf.getvalue()))
    out["jpeg_1px"] = (jpeg(rgb[:1, :1]), "jpg", pil_jpeg(jpeg(rgb[:1, :1])))

    def png(image: Image.Image, **kw: object) -> bytes:
        buf = io.BytesIO()
        image.save(buf, "PNG", **kw)
        return buf.getvalue()

    rgba = np.dstack([rgb, np.arange(rgb.shape[0] * rgb.shape[1], dtype=np.uint8)
                      .reshape(rgb.shape[:2])])
    gray = rgb[:, :, 0]
    out["png_rgb"] = (png(Image.fromarray(rgb)), "png", rgb)
    out["png_rgba"] = (png(Image.fromarray(rgba)), "png", rgb)  # alpha dropped
    out["png_gray"] = (png(Image.fromarray(gray)), "png", np.dstack([gray] * 3))
    la = Image.fromarray(np.dstack([gray, gray[::-1]]), "LA")
    out["png_la"] = (png(la), "png", np.dstack([gray] * 3))
    palette = Image.fromarray(rgb).quantize(16)
    expected_p = np.asarray(palette.convert("RGB"))
    out["png_palette"] = (png(palette), "png", expected_p)
    out["png_palette_transparency"] = (png(palette, transparency=3), "png", expected_p)
    bilevel = Image.fromarray(gray > 128)
    out["png_1bit"] = (png(bilevel), "png", np.dstack([np.where(gray > 128, 255, 0)] * 3)
                       .astype(np.uint8))
    wide = (np.arange(40 * 56, dtype=np.uint32).reshape(40, 56) * 29).astype(np.uint16)
    out["png_16bit_gray"] = (png(Image.fromarray(wide)), "png",
                             np.dstack([((wide.astype(np.int64) * 255 + 32767) // 65535)] * 3)
                             .astype(np.uint8))
    wide_rgb = np.dstack([wide, wide[::-1], 65535 - wide])
    out["png_16bit_rgb"] = (_png16_rgb(wide_rgb), "png",
                            ((wide_rgb.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    out["png_exif_6"] = (png(Image.fromarray(rgb), exif=exif.tobytes()), "png",
                         np.ascontiguousarray(ORIENT_OPS[6](rgb)))
    out["png_1px"] = (png(Image.fromarray(rgb[:1, :1])), "png", rgb[:1, :1])
    # damage inside the pixel data: zlib's "broken data stream", and a file cut mid-IDAT;
    # PIL decoded both past the damage in silence when asked for EXIF before the pixels
    whole = png(Image.fromarray(rgb))
    idat = whole.index(b"IDAT") + 4
    broken = bytearray(whole)
    broken[idat + (len(whole) - idat) // 2] ^= 0xFF
    out["png_broken_stream"] = (bytes(broken), "png", None)
    out["png_cut"] = (whole[: idat + (len(whole) - idat) // 2], "png", None)

    def webp(frames: list[np.ndarray], **kw: object) -> bytes:
        buf = io.BytesIO()
        images = [Image.fromarray(f) for f in frames]
        # exact: keep the colour under transparent pixels (the alpha is dropped, not composited)
        images[0].save(buf, "WEBP", lossless=True, exact=True, save_all=len(images) > 1,
                       append_images=images[1:], **kw)
        return buf.getvalue()

    out["webp_rgb"] = (webp([rgb]), "webp", rgb)
    out["webp_rgba"] = (webp([rgba]), "webp", rgb)
    out["webp_animated"] = (webp([rgb, rgb[::-1].copy()], duration=100), "webp", rgb)
    out["bomb_png"] = (_png_header_only(20_000, 20_000), "png", None)
    out["bomb_jpeg"] = (_jpeg_with_size(jpeg(rgb), 30_000, 30_000), "jpg", None)
    out["empty"] = (b"", "jpg", None)
    out["not_an_image"] = (b"this is not an image" * 10, "png", None)
    return out


def tolerance(name: str) -> int:
    """Largest pixel difference between paths: JPEG decoders round their IDCTs differently;
    PIL reads 16-bit RGB PNGs by their high byte (within 1 of the policy's rounding)."""
    if name.startswith("jpeg"):
        return 2
    return 1 if name == "png_16bit_rgb" else 0


def _png16_rgb(array: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (PIL cannot write one)."""
    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))
    return _png_chunks(struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0), zlib.compress(raw))


def _png_header_only(w: int, h: int) -> bytes:
    """A valid-looking 8-bit RGB PNG header for a ``w x h`` image (its data is one row)."""
    raw = b"\x00" + bytes(3 * w)
    return _png_chunks(struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0), zlib.compress(raw))


def _png_chunks(ihdr: bytes, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_with_size(data: bytes, w: int, h: int) -> bytes:
    """``data`` with its frame header (SOF0) claiming ``w x h``."""
    at = data.index(b"\xff\xc0")
    return data[:at + 5] + struct.pack(">HH", h, w) + data[at + 9:]
