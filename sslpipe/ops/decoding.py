"""Decoding image bytes and PIL images to uint8 ``3 x H x W`` RGB, under one policy.

One decode policy for every path (the collators from bytes, ``sslpipe shard``, and the cpu,
nvjpeg and dali backends):

* the EXIF Orientation tag is applied (the image as it is meant to be seen), for JPEG, PNG and
  WebP bytes and for PIL images opened from files;
* JPEG chroma is upsampled with libjpeg's "fancy" (triangular) filter, as Pillow, torchvision's
  CPU decoder and DALI's CPU decoder do;
* modes other than 8-bit RGB/L become 8-bit RGB: 16- and 32-bit integer images are read as
  16-bit samples scaled to 0..255 (``round(v / 257)``), float images are clipped to 0..255,
  palettes are expanded, alpha is dropped (not composited), CMYK/YCCK JPEGs are converted by
  PIL (with Adobe's inversion); an animated GIF/WebP gives its first frame;
* an image of more than ``max_pixels`` pixels (default :data:`DEFAULT_MAX_PIXELS`, PIL's own
  decompression-bomb limit) is refused from its header, before any pixel is decoded;
* every decoder failure, of any exception type, is a ValueError naming the sample; damage a
  decoder reads past (libjpeg-turbo's "Corrupt JPEG data", which PIL ignores) is a
  :class:`DamagedImageWarning` naming the sample, which the loader counts as ``damaged``.

:class:`EncodedImage` keeps the bytes with the size read from the header, so that a collator
can decode each image at the reduced DCT scale its crops allow (:meth:`EncodedImage.decode_for`).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from sslpipe.ops.jpeg import (
    JpegWarning,
    decode_jpeg,
    exif_orientation,
    jpeg_damage,
    jpeg_reduction,
    jpeg_size,
)

__all__ = ["DEFAULT_MAX_PIXELS", "DamagedImageWarning", "EncodedImage", "decode", "orient",
           "pil_to_tensor", "rgb8", "upright"]

# PIL's decompression-bomb error threshold (2 x Image.MAX_IMAGE_PIXELS): 13,377 x 13,377
DEFAULT_MAX_PIXELS = 178_956_970


class DamagedImageWarning(UserWarning):
    """A decoder reported damage and the image was decoded past it (parts may be garbage).

    Attributes:
        where: the sample (``"samples[3]"``, or the name a caller gave).
        why: the decoder's message (``"Corrupt JPEG data: 114 extraneous bytes ..."``).
    """

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: damaged image, decoded anyway: {why}")
        self.where = where
        self.why = why


def decode(data: bytes, where: str = "image", *, min_side: int | None = None,
           max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode JPEG/PNG/WebP/... bytes to ``3 x H x W`` uint8 RGB under the module's policy.

    With ``min_side``, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose
    shorter side is still at least ``min_side``: much cheaper than a full decode and a resize.

    Raises:
        ValueError: empty, unreadable, larger than ``max_pixels``, or undecodable data; the
            message names ``where``.

    Warns:
        DamagedImageWarning: the decoder reported damage and decoded past it.
    """
    return EncodedImage(data, where, max_pixels=max_pixels).decode_for(min_side)


def orient(x: torch.Tensor, orientation: int) -> torch.Tensor:
    """``C x H x W`` (or ``... x H x W``) as displayed under EXIF ``orientation`` (1-8): 2
    mirrors, 3 turns 180 degrees, 4 flips, 5 transposes, 6 turns 90 degrees clockwise, 7
    transverses, 8 turns 90 degrees counter-clockwise (as ``PIL.ImageOps.exif_transpose``).
    A view where no flip is needed; works on any device."""
    if orientation in (5, 6, 7, 8):
        x = x.transpose(-2, -1)
    flips = {2: (-1,), 3: (-2, -1), 4: (-2,), 6: (-1,), 7: (-2, -1), 8: (-2,)}.get(orientation)
    return x.flip(flips) if flips else x


class EncodedImage:
    """Encoded image bytes whose size is read from the header; pixels are decoded on demand.

    Kept by ``collect(..., decode=False)`` so that a collator can choose, per image, how much
    of a JPEG to decode (see :meth:`decode`). ``shape`` (``(3, H, W)``, as displayed: after
    the EXIF orientation) and ``device`` (CPU) mirror a decoded tensor's, so
    :meth:`Images.sizes` works unchanged.

    Raises (on construction):
        ValueError: empty data, an unreadable header, or more than ``max_pixels`` pixels.
    """

    __slots__ = ("_pil", "data", "format", "height", "orientation", "raw_hw", "width", "where")

    def __init__(self, data: bytes, where: str = "image", *,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if len(data) == 0:
            raise ValueError(f"{where}: encoded image is empty (0 bytes)")
        self.data = data
        self.where = where
        self._pil: Image.Image | None = None
        size = jpeg_size(data)  # microseconds, against ~0.1 ms for PIL's Image.open
        if size is not None:
            self.format = "JPEG"
            self.orientation = exif_orientation(data)
        else:
            pil = _open(data, where)
            # Image.open parses only the header; the open image is kept for decode(), since
            # for small images a second open costs as much as the decode itself.
            self._pil = pil
            size = (pil.size[1], pil.size[0])
            self.format = pil.format or ""
            self.orientation = _pil_orientation(pil, header_only=True)
        self.raw_hw = size
        h, w = size
        if h * w > max_pixels:
            self._pil = None
            raise ValueError(
                f"{where}: image is {w} x {h} = {h * w:,} pixels, more than max_pixels="
                f"{max_pixels:,}; raise max_pixels to read it"
            )
        self.height, self.width = (w, h) if self.orientation in (5, 6, 7, 8) else (h, w)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.height, self.width)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def decode_for(self, min_side: int | None) -> torch.Tensor:
        """Decode at the largest DCT reduction keeping the shorter side >= ``min_side``."""
        if min_side is None or self.format != "JPEG":
            return self.decode(1)
        return self.decode(jpeg_reduction(min(self.raw_hw), min_side))

    def decode(self, reduce: int = 1) -> torch.Tensor:
        """Decode to uint8 ``3 x H' x W'`` RGB, a JPEG at ``1 / reduce`` DCT scale, upright.

        ``reduce`` is 1, 2, 4 or 8; ``H' = ceil(H / reduce)`` (libjpeg's rounding) for JPEGs,
        other formats are always decoded at full size. The result is a channels-last view of
        the decoded ``H' x W' x 3`` array where it can be (no transposing copy): the fast layout
        for :func:`torch.nn.functional.interpolate` on uint8. Call ``.contiguous()`` for
        ``C x H x W`` memory order.

        Raises:
            ValueError: the data cannot be decoded (the message names the sample).

        Warns:
            DamagedImageWarning: libjpeg-turbo reported damage that PIL decoded past.
        """
        if reduce not in (1, 2, 4, 8):
            raise ValueError(f"reduce must be 1, 2, 4 or 8. Got {reduce!r}")
        damage = None
        if self._pil is None and self.format == "JPEG":
            try:
                fast = decode_jpeg(self.data, reduce)
            except JpegWarning as err:
                damage = str(err)  # PIL may decode past it: say so if it does
            else:
                if fast is not None:
                    return orient(torch.from_numpy(fast).permute(2, 0, 1), self.orientation)
        elif self.format == "JPEG":  # CMYK / YCCK: PIL decodes, libjpeg-turbo checks
            damage = jpeg_damage(self.data)
        kept, self._pil = self._pil, None  # a kept image decodes once; later calls reopen
        try:
            if kept is None and damage is not None:
                try:
                    kept = _open(self.data, self.where)
                except ValueError as err:  # libjpeg-turbo's own message says more
                    raise ValueError(f"{self.where}: cannot decode image ({len(self.data)} "
                                     f"bytes): {damage}") from err
            with kept if kept is not None else _open(self.data, self.where) as pil:
                if reduce > 1 and pil.format == "JPEG":
                    h, w = self.raw_hw
                    pil.draft("RGB", (max(1, w // reduce), max(1, h // reduce)))
                pil.load()
                array = rgb8(pil)
        except ValueError:
            raise
        except Exception as err:  # whatever a PIL plugin raises
            why = damage or f"{type(err).__name__}: {err}"
            raise ValueError(
                f"{self.where}: cannot decode image ({len(self.data)} bytes): {why}"
            ) from err
        if damage is not None:
            warnings.warn(DamagedImageWarning(self.where, damage), stacklevel=2)
        return orient(torch.from_numpy(array).permute(2, 0, 1), self.orientation)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"EncodedImage({self.format} {self.width}x{self.height}, {len(self.data)} bytes)"


def rgb8(image: Image.Image) -> np.ndarray:
    """A loaded PIL image (any mode) as a writable ``H x W x 3`` uint8 RGB array, under the
    module's mode policy (16/32-bit integers as 16-bit scaled to 8, floats clipped, palettes
    expanded, alpha dropped)."""
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        values = np.asarray(image).astype(np.int64)
        gray = np.clip((values * 255 + 32767) // 65535, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        gray = np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image)
    return array if array.flags.writeable else array.copy()


def _open(data: bytes, where: str) -> Image.Image:
    """``Image.open`` (header only), every failure a ValueError naming ``where``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise ValueError(f"{where}: image refused as a decompression bomb: {err}") from err
    except UnidentifiedImageError as err:  # its message holds an object address: not kept
        raise ValueError(
            f"{where}: cannot decode image ({len(data)} bytes): not a recognised image format"
        ) from err
    except Exception as err:  # SyntaxError, struct errors, ... from a PIL plugin
        raise ValueError(
            f"{where}: cannot decode image ({len(data)} bytes): unreadable header: "
            f"{type(err).__name__}: {err}"
        ) from err


def _pil_orientation(image: Image.Image, header_only: bool = False) -> int:
    """The EXIF orientation tag (1-8) of ``image``, 1 when it has none.

    ``header_only``: an image opened but not decoded. PIL looks for a PNG's eXIf chunk by
    decoding the whole image when the chunk does not precede the pixels, and a broken data
    stream met there would be swallowed with the EXIF error (the image then decodes black
    past the break, unreported): such a PNG is taken as upright instead, and the decode
    reports the broken stream.
    """
    if header_only and image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block: show the image as stored
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(image: Image.Image, where: str) -> Image.Image:
    """A PIL image with its EXIF orientation applied (the same image when it has none)."""
    orientation = _pil_orientation(image)
    if orientation == 1:
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception as err:
        raise ValueError(f"{where}: cannot apply the EXIF orientation: {err}") from err


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image (any mode) as ``3 x H x W`` uint8 RGB under the module's mode policy (no
    orientation: see :func:`to_chw_uint8`)."""
    # Kept in HWC memory (a channels-last view): uint8 resizes run ~3x faster on it.
    return torch.from_numpy(rgb8(image)).permute(2, 0, 1)
