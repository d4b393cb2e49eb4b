"""Pure batched tensor ops, device-agnostic; random ones take a CPU torch.Generator."""

from sslpipe.ops.color import denormalize, normalize
from sslpipe.ops.geometry import (
    center_square_boxes,
    hflip,
    random_resized_crop_boxes,
    resized_crop,
    rot90,
)
from sslpipe.ops.images import Images, collect, decode

__all__ = [
    "Images",
    "center_square_boxes",
    "collect",
    "decode",
    "denormalize",
    "hflip",
    "normalize",
    "random_resized_crop_boxes",
    "resized_crop",
    "rot90",
]
