"""Fast JPEG decoding: libjpeg-turbo through simplejpeg, with PIL as the fallback.

simplejpeg decodes to the same pixels as PIL (both are libjpeg-turbo with the same IDCT and
"fancy" chroma upsampling), in about 60% of PIL's time, reads a header in microseconds instead
of PIL's ~0.1 ms ``Image.open``, and decodes at 1/2, 1/4 or 1/8 DCT scale like PIL's
``draft``. :func:`decode_jpeg` returns None for what it does not handle (simplejpeg missing,
CMYK/YCCK JPEGs whose Adobe inversion PIL knows) and raises :class:`JpegWarning` where
libjpeg-turbo reports damage (a warning that PIL would pass over in silence), so the caller
can say so. :func:`jpeg_damage` asks libjpeg-turbo the same question of bytes that another
decoder will decode (nvJPEG and DALI's decoders pass damage over in silence, and ``sslpipe
shard`` keeps bytes without decoding them). :func:`exif_orientation` reads the EXIF Orientation
tag from the bytes.
"""

from __future__ import annotations

import math

import numpy as np

try:  # an install dependency; the fallback keeps a broken wheel from breaking decoding
    import simplejpeg
except ImportError:  # pragma: no cover - exercised only without the wheel
    simplejpeg = None

_SOI = b"\xff\xd8"
_DIRECT = ("YCbCr", "Gray", "RGB")  # colour spaces decoded to RGB exactly as PIL does


def is_jpeg(data: bytes | memoryview) -> bool:
    """True when ``data`` starts like a JPEG file (SOI marker, then another marker)."""
    return bytes(data[:3]) == b"\xff\xd8\xff"


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(H, W)`` of a JPEG this module can decode, read from its header; None otherwise."""
    if simplejpeg is None or not data.startswith(_SOI):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (int(height), int(width)) if colorspace in _DIRECT else None


def jpeg_reduction(side: int, min_side: int | None) -> int:
    """The largest DCT reduction (1, 2, 4, 8) that keeps an image ``side`` at least
    ``min_side`` (1 when ``min_side`` is None)."""
    if min_side is None:
        return 1
    return next((r for r in (8, 4, 2) if side // r >= max(1, min_side)), 1)


class JpegWarning(ValueError):
    """libjpeg-turbo found the JPEG damaged (its message says how); PIL may still decode it."""


def decode_jpeg(data: bytes, reduce: int = 1) -> np.ndarray | None:
    """Decode a JPEG to an ``H' x W' x 3`` uint8 RGB array at ``1 / reduce`` DCT scale.

    ``reduce`` is 1, 2, 4 or 8 and ``H' = ceil(H / reduce)`` (libjpeg's rounding, the same as
    PIL's ``draft``). The EXIF orientation is not applied (see :func:`exif_orientation`).
    Returns None when the data is not a JPEG this module handles (see the module docstring):
    decode those with PIL.

    Raises:
        JpegWarning: libjpeg-turbo reported the data damaged (corrupt or truncated entropy
            data, extraneous bytes, ...); its message is the error's.
    """
    size = jpeg_size(data)
    if size is None:
        return None
    height, width = size
    try:
        if reduce == 1:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        return simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_height=math.ceil(height / reduce),
            min_width=math.ceil(width / reduce), min_factor=reduce,
        )
    except ValueError as err:  # libjpeg-turbo's warnings are errors in simplejpeg
        raise JpegWarning(str(err)) from err


def jpeg_damage(data: bytes) -> str | None:
    """libjpeg-turbo's complaint about a JPEG's data, or None when it decodes cleanly.

    The complaint is the message :func:`decode_jpeg` would raise as :class:`JpegWarning`
    (``"Corrupt JPEG data: 272 extraneous bytes before marker 0xd9"``, ``"Premature end of
    JPEG file"``, ...) or the error of data libjpeg-turbo cannot decode at all: damage shows
    in the entropy-coded data, which is decoded whole at any DCT scale, so the check decodes
    at 1/8 scale (about half the time of a full baseline decode, nearly all of it for a
    progressive JPEG). None too for what cannot be checked here: not a JPEG, an unreadable
    header (every decoder refuses that and says why), or simplejpeg missing. CMYK and YCCK
    JPEGs are checked like the others.
    """
    if simplejpeg is None or not data.startswith(_SOI):
        return None
    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
    except ValueError:
        return None
    try:
        simplejpeg.decode_jpeg(
            data, colorspace="CMYK" if colorspace in ("CMYK", "YCCK") else "RGB",
            fastdct=True, fastupsample=True, min_height=1, min_width=1, min_factor=8,
        )
    except ValueError as err:  # libjpeg-turbo's warnings are errors in simplejpeg
        return str(err)
    return None


_ORIENTATION_TAG = 0x0112


def exif_orientation(data: bytes) -> int:
    """The EXIF Orientation (1-8) of JPEG bytes, 1 when there is none or it cannot be read.

    Reads only the markers before the image data (APP1 ``Exif``, IFD0): microseconds, against
    PIL's ``getexif`` on an opened image. 1 is upright; 6 means "rotate 90 degrees clockwise
    to display" (:func:`sslpipe.ops.images.orient` applies it).
    """
    if not data.startswith(_SOI):
        return 1
    pos, end = 2, len(data)
    while pos + 4 <= end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # image data or end: no EXIF before it
            return 1
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
            return _tiff_orientation(data[pos + 10:pos + 2 + length])
        pos += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)  # type: ignore[arg-type]
    if ifd + 2 > len(tiff):
        return 1
    count = int.from_bytes(tiff[ifd:ifd + 2], order)  # type: ignore[arg-type]
    for i in range(count):
        entry = tiff[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
        if len(entry) < 12:
            return 1
        if int.from_bytes(entry[:2], order) == _ORIENTATION_TAG:  # type: ignore[arg-type]
            value = int.from_bytes(entry[8:10], order)  # type: ignore[arg-type]  # a SHORT
            return value if 1 <= value <= 8 else 1
    return 1
