"""ops.jpeg: the fast decoder gives PIL's pixels at every DCT scale, and hands back what it
does not handle (CMYK, damaged data, other formats) so that PIL decodes or reports it."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from sslpipe.ops.images import EncodedImage, collect, decode
from sslpipe.ops.jpeg import JpegWarning, decode_jpeg, jpeg_size


def _jpeg(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", **kw)
    return buf.getvalue()


PHOTO = Image.fromarray(skimage.data.astronaut()).resize((501, 375))


@pytest.mark.parametrize("reduce", [1, 2, 4, 8])
@pytest.mark.parametrize("progressive", [False, True])
def test_same_pixels_as_pil_at_every_scale(reduce: int, progressive: bool) -> None:
    data = _jpeg(PHOTO, quality=90, progressive=progressive)
    with Image.open(io.BytesIO(data)) as pil:
        if reduce > 1:
            pil.draft("RGB", (501 // reduce, 375 // reduce))
        pil.load()
        expected = np.asarray(pil.convert("RGB"))
    got = decode_jpeg(data, reduce)
    assert got is not None and got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_header_size_and_what_is_left_to_pil() -> None:
    assert jpeg_size(_jpeg(PHOTO)) == (375, 501)
    png = io.BytesIO()
    PHOTO.save(png, "PNG")
    assert jpeg_size(png.getvalue()) is None
    cmyk = _jpeg(PHOTO.convert("CMYK"))
    assert jpeg_size(cmyk) is None and decode_jpeg(cmyk) is None
    # CMYK still decodes, through PIL, to nearly the original colours
    out = decode(cmyk).permute(1, 2, 0).numpy().astype(int)
    assert np.abs(out - np.asarray(PHOTO).astype(int)).mean() < 6


def test_gray_jpeg_becomes_three_equal_channels() -> None:
    out = collect([_jpeg(PHOTO.convert("L"))]).images[0]
    assert out.shape == (3, 375, 501)
    assert (out[0] == out[1]).all() and (out[1] == out[2]).all()


def test_truncated_jpeg_is_reported_by_name() -> None:
    data = _jpeg(PHOTO)[:3000]
    with pytest.raises(JpegWarning, match="Premature end"):
        decode_jpeg(data)
    with pytest.raises(ValueError, match=r"samples\[0\].*cannot decode"):
        EncodedImage(data, where="samples[0]").decode()
    with pytest.raises(ValueError, match="cannot decode"):
        decode(data)


def test_lazy_image_reads_the_header_only_and_decodes_scaled() -> None:
    lazy = EncodedImage(_jpeg(PHOTO))
    assert (lazy.height, lazy.width, lazy.format) == (375, 501, "JPEG")
    assert tuple(lazy.decode(4).shape) == (3, 94, 126)
