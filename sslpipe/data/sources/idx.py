"""MNIST and Fashion-MNIST in their IDX files (gzipped or not).

Layout (the file names of the original distribution, ``.gz`` optional)::

    ROOT/train-images-idx3-ubyte[.gz]   ROOT/train-labels-idx1-ubyte[.gz]
    ROOT/t10k-images-idx3-ubyte[.gz]    ROOT/t10k-labels-idx1-ubyte[.gz]

IDX: two zero bytes, a type byte (0x08 = uint8), the number of dimensions, then one big-endian
int32 per dimension and the data in C order.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from sslpipe.data.sources.base import Source, array_records, check_root, check_split, layout_error

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
MNIST_CLASSES = [str(d) for d in range(10)]

LAYOUT = """\
ROOT/train-images-idx3-ubyte[.gz]   ROOT/train-labels-idx1-ubyte[.gz]
ROOT/t10k-images-idx3-ubyte[.gz]    ROOT/t10k-labels-idx1-ubyte[.gz]"""
SPLITS = ("train", "test")


def read_fashion_mnist(root: str, split: str = "train") -> Source:
    """Fashion-MNIST ``train`` (60,000) or ``test`` (10,000): 28 x 28 grayscale, 10 classes."""
    return _read("fashion-mnist", FASHION_MNIST_CLASSES, root, split)


def read_mnist(root: str, split: str = "train") -> Source:
    """MNIST ``train`` (60,000) or ``test`` (10,000): 28 x 28 grayscale digits."""
    return _read("mnist", MNIST_CLASSES, root, split)


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (gzipped or not) as a uint8 array of its stored shape.

    Raises:
        ValueError: not an IDX file, not uint8, or the data length does not match the header.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\0\0":
        raise ValueError(f"{path!r}: expected an IDX file (starting with two zero bytes)")
    if data[2] != 0x08:
        raise ValueError(f"{path!r}: expected IDX type 0x08 (uint8). Got 0x{data[2]:02x}")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, ">i4", ndim, 4))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(
            f"{path!r}: header shape {shape} needs {int(np.prod(shape))} bytes. Got {body.size}"
        )
    return body.reshape(shape)


def _read(name: str, classes: list[str], root: str, split: str) -> Source:
    check_split(name, split, SPLITS)
    root = check_root(name, root, LAYOUT)
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find(name, root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(name, root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{name}: expected N x H x W images and N labels in {root!r}. "
            f"Got images {images.shape} and labels {labels.shape}"
        )
    if labels.size and int(labels.max()) >= len(classes):
        raise ValueError(f"{name}: labels must be < {len(classes)}. Got {int(labels.max())}")
    return Source(name, root, split, list(classes), True, array_records(split, images, labels))


def _find(name: str, root: str, stem: str) -> str:
    for candidate in (stem, f"{stem}.gz"):
        path = os.path.join(root, candidate)
        if os.path.isfile(path):
            return path
    raise layout_error(name, root, f"{stem}[.gz] is missing", LAYOUT)
