"""Fit a training run's image size and stem to small images, when the user did not choose.

``sslpipe train rotation --data fashion-mnist-shards`` would otherwise train at the tasks'
ImageNet default of 224 px: 28 px images upscaled eight times, about 50x the compute of the
32 px run that the small-data literature uses. The shard manifest records the images' sizes
(``image_size``; older manifests: the first images of the first shard are read), and
:func:`fit_to_data` picks the output side for the data (32, 64 or 96 px below 128 px images,
with the 3x3 stride-1 stem for 32 and 64 px where the architecture has one to replace). An
option the user gave (``-o size=...``, ``--small-input``/``--no-small-input``) always wins.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

__all__ = ["data_image_side", "fit_to_data", "small_input_supported"]

# (largest image side, output side, small stem) for data smaller than the ImageNet setting
_FITS = ((40, 32, True), (72, 64, True), (128, 96, False))
_SMALL_STEM = re.compile(r"^(alexnet_bn|(se|eca|sk)?res(net|next)\d|wide_resnet)")


def data_image_side(data: str, peek: int = 32) -> int | None:
    """The longer side of the largest image in the shards of ``data``: from the manifest's
    ``image_size``, else from the headers of the first ``peek`` images of the first shard
    (None when it cannot be read)."""
    from sslpipe.data.shard_source import load_manifest, resolve_shards
    from sslpipe.data.tar_samples import iter_shard
    from sslpipe.ops.decoding import EncodedImage

    try:
        manifest = load_manifest(data)
    except ValueError:
        return None
    sizes = manifest.get("image_size")
    if isinstance(sizes, dict) and isinstance(sizes.get("max"), list):
        return int(max(sizes["max"]))
    source = resolve_shards(data)
    side = 0
    for i, sample in enumerate(iter_shard(source.urls[0], [])):
        if i >= peek:
            break
        for ext in ("jpg", "jpeg", "png", "webp"):
            if ext in sample:
                with contextlib.suppress(ValueError):  # a bad image: the next ones tell
                    side = max(side, *EncodedImage(sample[ext]).shape[1:])
                break
    return side or None


def small_input_supported(arch: str) -> bool:
    """True when sslpipe knows how to give ``arch`` the small-input stem."""
    return bool(_SMALL_STEM.match(arch)) and not arch.startswith("resnetv2")


def fit_to_data(task: str, arch: str, side: int | None, task_options: dict[str, Any],
                small_input_chosen: bool) -> tuple[dict[str, Any], bool | None, str | None]:
    """Task options and stem fitted to images whose longer side is at most ``side``.

    Returns:
        ``(task_options, small_input, note)``: the options with ``size`` filled in for every
        member task that has none (the patch- and tile-based tasks get the patch side that
        makes their layout the fitted side), ``small_input`` to set (None: leave it), and the
        one line to tell the user (None when nothing changed).
    """
    if side is None:
        return task_options, None, None
    fit = next(((out, stem) for limit, out, stem in _FITS if side <= limit), None)
    if fit is None:
        return task_options, None, None
    out, stem = fit
    options = dict(task_options)
    members = task.split("+")
    chosen = []
    for name in members:
        own = options.get(name, {}) if len(members) > 1 else options
        if not isinstance(own, dict) or "size" in own or "size" in options:
            continue
        size = _member_size(name, out)
        if len(members) > 1:
            options[name] = {**own, "size": size}
        else:
            options["size"] = size
        chosen.append(f"{name} size={size}")
    small = None
    if stem and not small_input_chosen and small_input_supported(arch):
        small = True
    if not chosen and small is None:
        return task_options, None, None
    what = ", ".join(chosen + (["--small-input (3x3 stride-1 stem)"] if small else []))
    return options, small, (f"data: images of at most {side} px: {what} "
                            "(pass -o size=... or --no-small-input to choose otherwise)")


def _member_size(task: str, side: int) -> int:
    """The ``size`` option that makes ``task``'s layout about ``side`` px."""
    if task == "relative_patch":  # patch side; the 3 x 3 grid with gaps spans ~4.5 patches
        return max(4, side // 5)
    if task == "counting":  # tile side; the crop is 2 x 2 tiles
        return max(4, side // 2)
    return side
