"""CIFAR-10 and CIFAR-100, "python version" (pickled batches).

Each batch is a pickle (``encoding="bytes"``) with ``data``: ``N x 3072`` uint8 (the red, green
and blue 32 x 32 planes in turn) and the labels; the class names are in the meta file.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np

from sslpipe.data.sources.base import Source, array_records, check_root, check_split, layout_error

LAYOUT_10 = """\
ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}   (ROOT may also be
the cifar-10-batches-py folder itself)"""
LAYOUT_100 = """\
ROOT/cifar-100-python/{train, test, meta}   (ROOT may also be the cifar-100-python folder)"""
SPLITS = ("train", "test")


def read_cifar10(root: str, split: str = "train") -> Source:
    """CIFAR-10 ``train`` (50,000) or ``test`` (10,000): 32 x 32 RGB, 10 classes."""
    check_split("cifar10", split, SPLITS)
    base = _base("cifar10", root, "cifar-10-batches-py", "batches.meta", LAYOUT_10)
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    batches = [_load("cifar10", base, f, LAYOUT_10) for f in files]
    meta = _load("cifar10", base, "batches.meta", LAYOUT_10)
    classes = [_text(n) for n in meta[b"label_names"]]
    return _source("cifar10", root, split, classes, batches, b"labels")


def read_cifar100(root: str, split: str = "train") -> Source:
    """CIFAR-100 ``train`` (50,000) or ``test`` (10,000): 32 x 32 RGB, 100 fine classes."""
    check_split("cifar100", split, SPLITS)
    base = _base("cifar100", root, "cifar-100-python", "meta", LAYOUT_100)
    batches = [_load("cifar100", base, split, LAYOUT_100)]
    meta = _load("cifar100", base, "meta", LAYOUT_100)
    classes = [_text(n) for n in meta[b"fine_label_names"]]
    return _source("cifar100", root, split, classes, batches, b"fine_labels")


def _source(name: str, root: str, split: str, classes: list[str], batches: list[dict[Any, Any]],
            label_key: bytes) -> Source:
    data = np.concatenate([np.asarray(b[b"data"], np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(b[label_key], np.int64) for b in batches])
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(f"{name}: expected N x 3072 data and N labels. Got data {data.shape} "
                         f"and {labels.shape} labels")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Source(name, os.path.abspath(root), split, classes, True,
                  array_records(split, images, labels))


def _base(name: str, root: str, folder: str, marker: str, layout: str) -> str:
    root = check_root(name, root, layout)
    for base in (os.path.join(root, folder), root):
        if os.path.isfile(os.path.join(base, marker)):
            return base
    raise layout_error(name, root, f"{folder}/{marker} is missing", layout)


def _load(name: str, base: str, file: str, layout: str) -> dict[Any, Any]:
    path = os.path.join(base, file)
    if not os.path.isfile(path):
        raise layout_error(name, base, f"{file} is missing", layout)
    with open(path, "rb") as f:
        return dict(pickle.load(f, encoding="bytes"))


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
