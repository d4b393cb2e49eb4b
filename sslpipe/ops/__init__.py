"""Pure batched tensor ops, device-agnostic; random ones take a CPU torch.Generator."""

from sslpipe.ops.color import denormalize, normalize
from sslpipe.ops.geometry import (
    center_square_boxes,
    hflip,
    pad_ragged,
    random_resized_crop_boxes,
    resized_crop,
    rot90,
)
from sslpipe.ops.images import Images, collect, decode
from sslpipe.ops.lab import ab_bins, decode_ab, encode_ab, lab_to_rgb, nearest_ab_bin, rgb_to_lab

__all__ = [
    "Images",
    "ab_bins",
    "center_square_boxes",
    "collect",
    "decode",
    "decode_ab",
    "denormalize",
    "encode_ab",
    "hflip",
    "lab_to_rgb",
    "nearest_ab_bin",
    "normalize",
    "pad_ragged",
    "random_resized_crop_boxes",
    "resized_crop",
    "rgb_to_lab",
    "rot90",
]
