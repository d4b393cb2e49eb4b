"""Pictures of what a pretext task makes, for ``sslpipe show``.

:func:`load_images` reads a few images (WebDataset shards, a folder or file of images, or the
photos bundled with scikit-image), :func:`show_task` runs a task's collator on them and asks
its ``Task.visualize`` for rows of pictures, and :func:`render_grid` lays the rows out in one
PNG with PIL: one caption line and one row of cells per row.

A task whose pictures need the source images (DINO draws every crop's box on its image) may
define ``visualize_sources(batch, images, max_images)``, which :func:`show_task` then calls
instead of ``visualize``; :func:`draw_boxes` draws the boxes.
"""

from __future__ import annotations

import os
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from sslpipe.atomic import atomic_write
from sslpipe.ops.images import decode, to_chw_uint8

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
                  "hubble_deep_field", "retina", "cat")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm")
CELL = 128
PAD = 6
CAPTION_HEIGHT = 18


@dataclass
class Loaded:
    """Images read for a picture: ``3 x H x W`` uint8 tensors, what was skipped and why."""

    images: list[torch.Tensor]
    source: str
    skipped: list[str] = field(default_factory=list)


def load_images(data: str | None, num: int) -> Loaded:
    """Read up to ``num`` images from ``data``.

    ``data`` may be a directory of WebDataset shards (``*.tar``, read with ``tarfile``), a
    ``.tar`` shard, a directory of image files (searched recursively; a seeded random sample
    across the whole folder, so that an ImageFolder tree shows more than its first class),
    one image file, or None for the photos bundled with scikit-image (``skimage.data``:
    astronaut, coffee, chelsea, rocket, ...). Undecodable files are skipped and listed.

    Raises:
        ValueError: the path does not exist, or holds no readable image.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1. Got {num}")
    if data is None:
        return _skimage_photos(num)
    path = Path(data)
    if not path.exists():
        raise ValueError(f"data: no such file or directory: {data!r}")
    shards = [path] if path.suffix == ".tar" else (
        sorted(path.glob("*.tar")) if path.is_dir() else [])
    loaded = Loaded([], str(path))
    if shards:
        for shard in shards:
            _read_shard(shard, num, loaded)
            if len(loaded.images) >= num:
                break
    else:
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        random.Random(0).shuffle(files)  # the same pictures every time, from every class
        for file in files:
            if len(loaded.images) >= num:
                break
            _add(loaded, file.read_bytes(), str(file))
    if not loaded.images:
        what = "shard samples" if shards else f"image files ({', '.join(IMAGE_SUFFIXES)})"
        skipped = (f"; {len(loaded.skipped)} unreadable: {loaded.skipped[:3]}"
                   if loaded.skipped else "")
        raise ValueError(f"data: found no readable {what} in {data!r}{skipped}")
    return loaded


def show_task(task: Any, images: list[torch.Tensor], num: int) -> list[tuple[str, torch.Tensor]]:
    """Run ``task.collator`` on ``images`` and return ``task.visualize`` rows, checked: each a
    ``(caption, N x 3 x H x W float in [0, 1])``."""
    batch = task.collator(images)
    with_sources = getattr(task, "visualize_sources", None)
    rows = (with_sources(batch, images, max_images=num) if with_sources is not None
            else task.visualize(batch, max_images=num))
    out = []
    for i, row in enumerate(rows):
        if not (isinstance(row, (tuple, list)) and len(row) == 2
                and isinstance(row[1], torch.Tensor) and row[1].ndim == 4
                and row[1].shape[1] in (1, 3)):
            raise ValueError(
                f"{type(task).__name__}.visualize row {i}: expected (caption, N x 3 x H x W "
                f"tensor). Got {type(row).__name__}"
            )
        pictures = row[1].detach().float().cpu().clamp(0, 1)
        out.append((str(row[0]), pictures.expand(-1, 3, -1, -1)))
    return out


def draw_boxes(images: list[torch.Tensor], boxes: list[tuple[torch.Tensor, str]],
               side: int = 2 * CELL) -> torch.Tensor:
    """The images with box outlines drawn in place, each fitted into a ``side`` square.

    Args:
        images: uint8 ``3 x H_i x W_i`` source images.
        boxes: ``(float K x N x 4, colour)`` pairs: ``K`` boxes ``(x0, y0, x1, y1)`` per image
            in its source pixels (``N`` images), drawn in the PIL colour name given.
        side: the output side: each image is scaled to fit (keeping its aspect ratio) and
            centred on a white square.

    Returns:
        float ``N x 3 x side x side`` in [0, 1].
    """
    out = []
    for i, image in enumerate(images):
        h, w = image.shape[-2:]
        scale = side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), "RGB").resize(
            size, Image.Resampling.BILINEAR)
        canvas = Image.new("RGB", (side, side), "white")
        left, top = (side - size[0]) // 2, (side - size[1]) // 2
        canvas.paste(pil, (left, top))
        draw = ImageDraw.Draw(canvas)
        for group, colour in boxes:
            for x0, y0, x1, y1 in group[:, i].tolist():
                draw.rectangle((left + x0 * scale, top + y0 * scale, left + x1 * scale - 1,
                                top + y1 * scale - 1), outline=colour, width=2)
        out.append(torch.from_numpy(np.asarray(canvas).copy()))
    return torch.stack(out).permute(0, 3, 1, 2).float() / 255


def render_grid(rows: list[tuple[str, torch.Tensor]], out: str | os.PathLike[str],
                title: str = "", cell: int = CELL) -> tuple[int, int]:
    """Draw the rows into a PNG (written atomically) and return its ``(width, height)``.

    Each picture is scaled (keeping its aspect ratio, nearest-neighbour when enlarging so pixels
    stay visible) to ``cell`` pixels high. The size is ``width = PAD + max_row(sum(cell_w +
    PAD))`` and ``height = PAD + title + len(rows) * (CAPTION_HEIGHT + cell + PAD)``; long
    captions are cut to the width.
    """
    if not rows:
        raise ValueError("rows: expected at least one row of pictures. Got none")
    widths = [[_cell_width(p, cell) for p in pictures] for _, pictures in rows]
    width = PAD + max(sum(w + PAD for w in ws) for ws in widths)
    top = PAD + (CAPTION_HEIGHT if title else 0)
    height = top + len(rows) * (CAPTION_HEIGHT + cell + PAD)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if title:
        draw.text((PAD, PAD), _fit(draw, title, width - 2 * PAD, font), fill="black", font=font)
    y = top
    for (caption, pictures), ws in zip(rows, widths):
        draw.text((PAD, y + 3), _fit(draw, caption, width - 2 * PAD, font), fill="black",
                  font=font)
        x = PAD
        for picture, w in zip(pictures, ws):
            canvas.paste(_to_pil(picture, (cell, w)), (x, y + CAPTION_HEIGHT))
            x += w + PAD
        y += CAPTION_HEIGHT + cell + PAD
    _save_png(canvas, Path(out))
    return width, height


def _cell_width(picture: torch.Tensor, cell: int) -> int:
    return max(1, round(cell * picture.shape[-1] / picture.shape[-2]))


def _to_pil(picture: torch.Tensor, hw: tuple[int, int]) -> Image.Image:
    mode = "nearest" if hw[0] >= picture.shape[-2] else "area"
    x = F.interpolate(picture[None], size=hw, mode=mode)[0]
    array = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array, "RGB")


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font: Any) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _save_png(image: Image.Image, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: image.save(tmp, format="PNG"))


def _read_shard(shard: Path, num: int, loaded: Loaded) -> None:
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                if len(loaded.images) >= num:
                    return
                suffix = "." + member.name.rsplit(".", 1)[-1].lower()
                if member.isfile() and suffix in IMAGE_SUFFIXES:
                    f = tar.extractfile(member)
                    if f is not None:
                        _add(loaded, f.read(), f"{shard.name}:{member.name}")
    except (tarfile.TarError, OSError) as err:
        loaded.skipped.append(f"{shard}: {err}")


def _add(loaded: Loaded, data: bytes, where: str) -> None:
    try:
        loaded.images.append(decode(data, where=where))
    except ValueError as err:
        loaded.skipped.append(str(err))


def _skimage_photos(num: int) -> Loaded:
    try:
        import skimage.data
    except ImportError as err:
        raise ValueError(
            "data: no --data given and scikit-image (the default photos) is not installed; "
            "pass --data DIR or `pip install scikit-image`"
        ) from err
    images = []
    for i in range(num):
        name = SKIMAGE_PHOTOS[i % len(SKIMAGE_PHOTOS)]
        images.append(to_chw_uint8(getattr(skimage.data, name)(), where=f"skimage.data.{name}"))
    return Loaded(images, "skimage.data photos")
