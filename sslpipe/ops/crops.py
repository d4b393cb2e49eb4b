"""Resized crops of uint8 images, uniform or ragged: :func:`resized_crop`, :func:`crop_views`.

Boxes are float ``B x 4`` tensors ``(x0, y0, x1, y1)`` in the pixel coordinates of each source
image (x1, y1 exclusive), as the samplers of :mod:`sslpipe.ops.geometry` draw them. A ragged
batch (images of different sizes) is cropped per image or, padded (:func:`pad_ragged`, in
groups of similar size: :func:`size_groups`), with one ``roi_align``; encoded images are
decoded here, at the reduced DCT scale the crops allow.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sslpipe.ops.decoding import EncodedImage
from sslpipe.ops.images import ImageList

__all__ = ["crop_views", "pad_ragged", "resized_crop", "size_groups"]


def resized_crop(
    images: ImageList, boxes: torch.Tensor, size: int | tuple[int, int], method: str = "auto"
) -> torch.Tensor:
    """Crop each image to its box and resize to ``size``; uint8 in, uint8 out.

    Args:
        images: uint8 ``B x 3 x H x W`` tensor or list of ``3 x H_i x W_i`` tensors.
        boxes: float ``B x 4`` ``(x0, y0, x1, y1)``.
        size: output side, or ``(h, w)``.
        method: ``"interpolate"`` (per image, uint8 bilinear with antialias: the fast path on
            CPU), ``"roi_align"`` (one batched float op with adaptive sampling, which averages
            the source pixels of each output pixel: the fast path on GPUs, ragged batches are
            padded into one tensor), or ``"auto"`` (interpolate on CPU, roi_align elsewhere).
            Box edges are pixel edges for both. They agree to rounding when upscaling, but for
            the outermost output pixels (interpolate clamps at the box, roi_align reads just
            outside it); when downscaling their filters differ (triangle vs box average), by
            about 0.5 levels on average on photos.

    Returns:
        uint8 ``B x 3 x h x w`` on the images' device.
    """
    out_hw = _hw(size)
    if boxes.shape != (len(images), 4):
        raise ValueError(f"boxes must be B x 4 with B={len(images)}. Got {tuple(boxes.shape)}")
    decoded = _decoded(images)
    if decoded is None:  # lazy JPEGs: decoded at the scale the boxes allow
        return crop_views(images, [boxes], out_hw)[0][0]
    device = _device_of(decoded)
    if method == "auto":
        method = "interpolate" if device.type == "cpu" else "roi_align"
    if method == "interpolate":
        return _crop_interpolate(decoded, boxes, out_hw)
    if method == "roi_align":
        return _crop_roi_align(decoded, boxes, out_hw)
    raise ValueError(f"method must be 'auto', 'interpolate' or 'roi_align'. Got {method!r}")


def crop_views(
    images: ImageList, boxes: list[torch.Tensor], size: int | tuple[int, int]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """uint8 ``B x 3 x h x w`` crops for each ``B x 4`` box tensor in ``boxes`` (one per view),
    and the JPEG DCT reduction used per image (int64 ``B``; 1 for decoded inputs).

    :class:`~sslpipe.ops.images.EncodedImage` entries (``collect(..., decode=False)``) are
    decoded here, once for all views, each at the largest reduction ``r`` in (8, 4, 2) with
    every box side ``>= r * size`` (else in full), so that no crop is upscaled by the
    reduction: a 4x smaller decode is several times cheaper than a full one followed by a
    resize. Boxes stay in full-resolution coordinates.
    """
    out_hw = _hw(size)
    n = len(images)
    decoded_images = _decoded(images)
    if decoded_images is not None:
        device = _device_of(decoded_images)
        if device.type != "cpu":  # pad the ragged batch once for all views
            crops = _crop_roi_align_views(decoded_images, boxes, out_hw)
        else:
            crops = [resized_crop(images, b, out_hw) for b in boxes]
        return crops, torch.ones(n, dtype=torch.int64)
    stacked = torch.stack(boxes, 1)  # B x V x 4
    sides = torch.minimum(stacked[..., 2] - stacked[..., 0], stacked[..., 3] - stacked[..., 1])
    smallest = sides.amin(1).tolist()
    decoded: list[torch.Tensor] = []
    factors: list[tuple[float, float]] = []
    for image, side in zip(images, smallest):
        if isinstance(image, EncodedImage):
            r = next((r for r in (8, 4, 2) if side >= r * max(out_hw)), 1)
            pixels = image.decode(r if image.format == "JPEG" else 1)
            factors.append((pixels.shape[-1] / image.width, pixels.shape[-2] / image.height))
        else:
            pixels = image
            factors.append((1.0, 1.0))
        decoded.append(pixels)
    f = torch.tensor(factors, dtype=torch.float32).repeat(1, 2)  # B x 4: fx, fy, fx, fy
    scale = torch.round(1.0 / f[:, 0]).to(torch.int64)
    scaled = stacked * f[:, None, :]
    return [_crop_interpolate(decoded, scaled[:, v], out_hw) for v in range(len(boxes))], scale


def pad_ragged(
    images: Sequence[torch.Tensor], method: str = "auto", fill: str = "zeros"
) -> torch.Tensor:
    """Float32 ``B x C x H_max x W_max`` batch of ``C x H_i x W_i`` images, padded right and
    bottom.

    Args:
        images: tensors of one dtype and channel count on one device.
        method: ``"nested"`` (``torch.nested`` to a padded tensor: one concatenation and one
            padding kernel on CUDA, however many images), ``"loop"`` (one copy per image:
            faster on the CPU, where kernel launches cost nothing), or ``"auto"`` (nested on
            CUDA, loop elsewhere).
        fill: ``"zeros"``, or ``"edge"``: the row below and the column right of each image
            repeat its last row and column, so bilinear sampling up to the image's edge
            (``roi_align`` samples up to ``H_i``) sees the image's own border, not the padding.
    """
    if method == "auto":
        method = "nested" if images[0].is_cuda else "loop"
    if method == "nested":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.nested warns that it is a prototype
            nested = torch.nested.as_nested_tensor(list(images), dtype=torch.float32)
            out = nested.to_padded_tensor(0.0)
    elif method == "loop":
        h = max(im.shape[-2] for im in images)
        w = max(im.shape[-1] for im in images)
        out = images[0].new_zeros((len(images), images[0].shape[0], h, w), dtype=torch.float32)
        for i, im in enumerate(images):
            out[i, :, : im.shape[-2], : im.shape[-1]] = im
    else:
        raise ValueError(f"method must be 'auto', 'nested' or 'loop'. Got {method!r}")
    if fill == "edge":
        _extend_edges(out, [im.shape[-2] for im in images], [im.shape[-1] for im in images])
    elif fill != "zeros":
        raise ValueError(f"fill must be 'zeros' or 'edge'. Got {fill!r}")
    return out


def size_groups(sizes: Sequence[tuple[int, int]], max_waste: float = 4.0) -> list[list[int]]:
    """Indices of ``sizes`` (``(H, W)``) in groups that pad cheaply together.

    In a group, the padded size (its largest height x its largest width) is at most
    ``max_waste`` times the pixels of each of its images: portrait and landscape images of
    different shapes go apart, and an outsized image (a 3000 px photo among 500 px ones) gets
    a group of its own instead of making the whole batch its size.
    """
    order = sorted(range(len(sizes)),
                   key=lambda i: (sizes[i][0] > sizes[i][1], sizes[i][0] * sizes[i][1]))
    groups: list[list[int]] = []
    current: list[int] = []
    max_h = max_w = smallest = 0
    for i in order:
        h, w = sizes[i]
        grown_h, grown_w = max(max_h, h), max(max_w, w)
        if current and grown_h * grown_w > max_waste * min(smallest, h * w):
            groups.append(current)
            current, grown_h, grown_w = [], h, w
        smallest = h * w if not current else min(smallest, h * w)
        current.append(i)
        max_h, max_w = grown_h, grown_w
    if current:
        groups.append(current)
    return groups


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


Decoded = torch.Tensor | list[torch.Tensor]


def _device_of(images: Decoded) -> torch.device:
    return images.device if isinstance(images, torch.Tensor) else images[0].device


def _decoded(images: ImageList) -> Decoded | None:
    """``images`` as decoded tensors, or None when the list holds lazy (encoded) images."""
    if isinstance(images, torch.Tensor):
        return images
    tensors = [im for im in images if isinstance(im, torch.Tensor)]
    return tensors if len(tensors) == len(images) else None


def _crop_interpolate(
    images: Decoded, boxes: torch.Tensor, out_hw: tuple[int, int]
) -> torch.Tensor:
    out = []
    if isinstance(images, torch.Tensor) and images.device.type == "cpu":
        # uint8 antialiased resize is ~3x faster on channels-last memory than on NCHW
        images = images.contiguous(memory_format=torch.channels_last)
    int_boxes = boxes.round().long().tolist()
    for i, (x0, y0, x1, y1) in enumerate(int_boxes):
        crop = images[i][:, y0:y1, x0:x1]
        if crop.shape[-2] == 0 or crop.shape[-1] == 0:
            raise ValueError(f"boxes[{i}] is empty after rounding: {boxes[i].tolist()}")
        if tuple(crop.shape[-2:]) == out_hw:
            out.append(crop.contiguous())
            continue
        src = crop[None]
        if src.device.type != "cpu":  # uint8 interpolate is a CPU kernel
            src = src.float()
        res = F.interpolate(src, size=out_hw, mode="bilinear", antialias=True, align_corners=False)
        if res.dtype != torch.uint8:
            res = res.round_().clamp_(0, 255).to(torch.uint8)
        out.append(res[0])
    return torch.stack(out)


def _crop_roi_align(
    images: Decoded, boxes: torch.Tensor, out_hw: tuple[int, int]
) -> torch.Tensor:
    return _crop_roi_align_views(images, [boxes], out_hw)[0]


def _crop_roi_align_views(
    images: Decoded, views: list[torch.Tensor], out_hw: tuple[int, int]
) -> list[torch.Tensor]:
    """One ``B x 3 x h x w`` crop per box tensor in ``views``: each group of images is padded
    once and every view's crops of it come from one ``roi_align``."""
    if isinstance(images, torch.Tensor):
        return _roi_align(images.float(), views, out_hw)
    groups = size_groups([(im.shape[-2], im.shape[-1]) for im in images])
    if len(groups) == 1:
        return _roi_align(pad_ragged(images, fill="edge"), views, out_hw)
    device = images[0].device
    outs = [torch.empty((len(images), images[0].shape[0], *out_hw), dtype=torch.uint8,
                        device=device) for _ in views]
    for group in groups:
        padded = pad_ragged([images[i] for i in group], fill="edge")
        index = torch.tensor(group, device=device)
        for out, crops in zip(outs, _roi_align(padded, [b[group] for b in views], out_hw)):
            out[index] = crops
    return outs


def _roi_align(stacked: torch.Tensor, views: list[torch.Tensor], out_hw: tuple[int, int]
               ) -> list[torch.Tensor]:
    from torchvision.ops import roi_align

    n = len(stacked)
    idx = torch.arange(n, dtype=torch.float32)[:, None]
    rois = torch.cat([torch.cat([idx, b.float()], 1) for b in views]).to(stacked.device)
    # aligned=True: box edges are pixel edges (pixel i spans [i, i + 1)), as for the slicing
    # in _crop_interpolate; aligned=False would put every crop half a pixel off.
    # sampling_ratio=0 averages ceil(box/out) samples per output pixel, which is what keeps a
    # large downscale from aliasing.
    out = roi_align(stacked, rois, out_hw, spatial_scale=1.0, sampling_ratio=0, aligned=True)
    out = out.round_().clamp_(0, 255).to(torch.uint8)
    return list(out.split(n))


def _extend_edges(padded: torch.Tensor, heights: list[int], widths: list[int]) -> None:
    """Copy each image's last row (column) into the padding row (column) just past it."""
    height, width = padded.shape[-2:]
    # the sizes are host ints: selecting on the host spares a device sync (nonzero) per batch
    for dim, sizes, limit in ((2, heights, height), (3, widths, width)):
        short = [i for i, n in enumerate(sizes) if n < limit]
        if not short:
            continue
        which = torch.tensor(short, device=padded.device)
        edge = torch.tensor([sizes[i] for i in short], device=padded.device)
        if dim == 2:
            padded[which, :, edge, :] = padded[which, :, edge - 1, :]
        else:
            padded[which, :, :, edge] = padded[which, :, :, edge - 1]
