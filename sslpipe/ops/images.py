"""Turning what a DataLoader hands a collator into uint8 image tensors.

A collator accepts (DESIGN.md, "Collator"):

* a ``B x C x H x W`` uint8 tensor on any device, or
* a list of samples, each ``image`` or ``(image, label)`` (also ``{"image"|"jpg"|"png": ...,
  "cls"|"label": ...}`` as webdataset gives them), where ``image`` is a PIL image, an
  ``H x W x C`` or ``H x W`` uint8 numpy array, a ``C x H x W`` uint8 tensor, or encoded
  JPEG/PNG bytes. Sizes may differ within a batch.

:func:`collect` returns :class:`Images`: a uint8 ``B x 3 x H x W`` tensor when every image has
the same size, else a list of ``3 x H_i x W_i`` uint8 tensors ("ragged"), plus labels.
Grayscale becomes 3 channels, alpha is dropped.

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
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

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

# a uint8 B x 3 x H x W batch, or a ragged list (EncodedImage: bytes kept for lazy decoding)
ImageList: TypeAlias = "torch.Tensor | list[torch.Tensor | EncodedImage]"

_IMAGE_KEYS = ("image", "jpg", "jpeg", "png", "webp", "img")
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
_LABEL_KEYS = ("cls", "label", "target")


@dataclass
class Images:
    """uint8 images of one batch and their dataset labels (None when no sample had one)."""

    images: ImageList
    labels: torch.Tensor | None

    @property
    def device(self) -> torch.device:
        return (
            self.images.device if isinstance(self.images, torch.Tensor) else (self.images[0].device)
        )

    def __len__(self) -> int:
        return len(self.images)

    def sizes(self) -> list[tuple[int, int]]:
        """``(H, W)`` of each image."""
        return image_sizes(self.images)

    def labels_on(self, device: torch.device) -> torch.Tensor | None:
        """The labels moved to ``device`` (None when the samples had none)."""
        return None if self.labels is None else self.labels.to(device)


def collect(samples: Any, *, min_size: int | tuple[int, int] = 1, decode: bool = True,
            max_pixels: int = DEFAULT_MAX_PIXELS) -> Images:
    """Convert a collator's input to :class:`Images` (see module docstring).

    Args:
        samples: a uint8 ``B x C x H x W`` tensor or a sequence of samples.
        min_size: smallest ``(H, W)`` (or side) the caller can work with; a smaller image
            raises ValueError naming the sample.
        decode: with False, encoded bytes are kept as :class:`EncodedImage` (size read from the
            header, pixels decoded later by the caller, e.g. at a reduced DCT scale chosen from
            its crop boxes); the result is then a list (never stacked) whenever one is present.
        max_pixels: largest image (H x W) accepted from encoded bytes, checked on the header.

    Raises:
        ValueError: empty input, an unsupported type or dtype, or an image that is too small.
    """
    min_hw = (min_size, min_size) if isinstance(min_size, int) else tuple(min_size)
    if isinstance(samples, torch.Tensor):
        batch = _from_tensor(samples)
        if batch.shape[-2] < min_hw[0] or batch.shape[-1] < min_hw[1]:
            raise ValueError(
                f"samples: images must be at least {min_hw[0]}x{min_hw[1]} (H x W) for this "
                f"task. Got a batch of {batch.shape[-2]}x{batch.shape[-1]}"
            )
        return Images(batch, None)
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence):
        raise ValueError(
            "samples: expected a uint8 B x C x H x W tensor or a list of samples "
            f"(image or (image, label)). Got {type(samples).__name__}"
        )
    if len(samples) == 0:
        raise ValueError("samples: expected at least one sample. Got an empty list")
    images: list[torch.Tensor | EncodedImage] = []
    labels: list[int] = []
    for i, sample in enumerate(samples):
        image, label = _split_sample(sample, i)
        tensor: torch.Tensor | EncodedImage
        if not decode and isinstance(image, (bytes, bytearray, memoryview)):
            tensor = EncodedImage(bytes(image), where=f"samples[{i}]", max_pixels=max_pixels)
        else:
            tensor = to_chw_uint8(image, where=f"samples[{i}]", max_pixels=max_pixels)
        if tensor.shape[-2] < min_hw[0] or tensor.shape[-1] < min_hw[1]:
            raise ValueError(
                f"samples[{i}]: image is {tensor.shape[-2]}x{tensor.shape[-1]} (H x W), smaller "
                f"than the {min_hw[0]}x{min_hw[1]} this task needs; resize it or lower `size`"
            )
        images.append(tensor)
        if label is not None:
            labels.append(int(label))
    if labels and len(labels) != len(images):
        raise ValueError(
            f"samples: either every sample has a label or none does. Got {len(labels)} labels "
            f"for {len(images)} images"
        )
    devices = {im.device for im in images}
    if len(devices) > 1:
        raise ValueError(
            f"samples: all images must be on one device. Got {sorted(map(str, devices))}"
        )
    label_tensor = torch.tensor(labels, dtype=torch.int64) if labels else None
    shapes = {tuple(im.shape) for im in images}
    decoded = [im for im in images if isinstance(im, torch.Tensor)]
    if len(shapes) == 1 and len(decoded) == len(images):
        return Images(stack_channels_last(decoded), label_tensor)
    return Images(images, label_tensor)


def sample_index(where: str) -> int | None:
    """The index ``i`` of a ``"samples[i]"`` name (as :func:`collect` names samples)."""
    match = re.fullmatch(r"samples\[(\d+)\]", where)
    return int(match.group(1)) if match else None


def stack_channels_last(images: list[torch.Tensor]) -> torch.Tensor:
    """Stack ``3 x H x W`` images into a ``B x 3 x H x W`` tensor in channels-last memory
    (what uint8 resizes and the HWC decoders want)."""
    return torch.stack([im.permute(1, 2, 0) for im in images]).permute(0, 3, 1, 2)


def image_sizes(images: ImageList) -> list[tuple[int, int]]:
    """``(H, W)`` of each image of a uint8 batch tensor or a (ragged, maybe lazy) list."""
    if isinstance(images, torch.Tensor):
        h, w = images.shape[-2:]
        return [(int(h), int(w))] * images.shape[0]
    return [(int(im.shape[-2]), int(im.shape[-1])) for im in images]


def to_chw_uint8(image: Any, where: str = "image", *,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """One image (PIL, numpy HWC/HW, tensor CHW/HW, or encoded bytes) as ``3 x H x W`` uint8.

    Encoded bytes and PIL images follow the module's decode policy (EXIF orientation, modes).
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode(bytes(image), where=where, max_pixels=max_pixels)
    if isinstance(image, Image.Image):
        return pil_to_tensor(_upright(image, where))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"{where}: numpy images must be uint8. Got {image.dtype}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise ValueError(
                f"{where}: numpy images must be H x W or H x W x C with C in 1, 3, 4. "
                f"Got shape {image.shape}"
            )
        if not image.flags.writeable:  # torch warns on read-only arrays (e.g. np.asarray(PIL))
            image = image.copy()
        return _to_rgb(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), where)
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise ValueError(f"{where}: image tensors must be uint8 (0-255). Got {image.dtype}")
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3:
            raise ValueError(
                f"{where}: image tensors must be C x H x W. Got shape {tuple(image.shape)}"
            )
        return _to_rgb(image, where)
    raise ValueError(
        f"{where}: expected a PIL image, a uint8 numpy array, a uint8 tensor or encoded "
        f"JPEG/PNG bytes. Got {type(image).__name__}"
    )


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


def _upright(image: Image.Image, where: str) -> Image.Image:
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


def _from_tensor(x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.uint8:
        raise ValueError(f"samples: a batch tensor must be uint8 (0-255). Got {x.dtype}")
    if x.ndim != 4 or x.shape[1] not in (1, 3, 4):
        raise ValueError(
            f"samples: a batch tensor must be B x C x H x W with C in 1, 3, 4. Got shape "
            f"{tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError("samples: expected at least one image. Got a batch of 0")
    if x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    return x[:, :3]


def _to_rgb(x: torch.Tensor, where: str) -> torch.Tensor:
    c = x.shape[0]
    if c == 1:
        return x.expand(3, -1, -1)
    if c in (3, 4):
        return x[:3]
    raise ValueError(f"{where}: image must have 1, 3 or 4 channels. Got {c}")


def _split_sample(sample: Any, index: int) -> tuple[Any, Any]:
    if isinstance(sample, dict):
        image = next((sample[k] for k in _IMAGE_KEYS if k in sample), None)
        if image is None:
            raise ValueError(
                f"samples[{index}]: a dict sample needs one of the keys {list(_IMAGE_KEYS)}. "
                f"Got keys {sorted(sample)}"
            )
        label = next((sample[k] for k in _LABEL_KEYS if k in sample), None)
        return image, _as_label(label, index)
    if isinstance(sample, (tuple, list)):
        if len(sample) == 2:
            return sample[0], _as_label(sample[1], index)
        if len(sample) == 1:
            return sample[0], None
        raise ValueError(
            f"samples[{index}]: expected image or (image, label). Got a {type(sample).__name__} "
            f"of length {len(sample)}"
        )
    return sample, None


def _as_label(label: Any, index: int) -> int | None:
    if label is None:
        return None
    if isinstance(label, (bytes, bytearray)):
        label = label.decode().strip()
    try:
        return int(label)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"samples[{index}]: label must be an integer class index. Got {label!r}"
        ) from err
