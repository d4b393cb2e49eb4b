"""STL-10, binary version: 96 x 96 RGB, 10 labeled classes plus 100,000 unlabeled images.

``*_X.bin`` holds uint8 images stored column-major per channel (``N x 3 x 96 x 96`` read as
``C x W x H``); ``*_y.bin`` holds labels 1-10 (stored here as 0-9). The unlabeled split has no
labels and is written without ``cls`` files (``manifest["labeled"] = false``).
"""

from __future__ import annotations

import os

import numpy as np

from sslpipe.data.sources.base import Source, array_records, check_root, check_split, layout_error

LAYOUT = """\
ROOT/stl10_binary/{train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin,
                   class_names.txt}   (ROOT may also be the stl10_binary folder itself)"""
SPLITS = ("train", "test", "unlabeled")
CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
_SIDE = 96


def read_stl10(root: str, split: str = "train") -> Source:
    """STL-10 ``train`` (5,000), ``test`` (8,000) or ``unlabeled`` (100,000)."""
    check_split("stl10", split, SPLITS)
    root = check_root("stl10", root, LAYOUT)
    base = next((b for b in (os.path.join(root, "stl10_binary"), root)
                 if os.path.isfile(os.path.join(b, f"{split}_X.bin"))), None)
    if base is None:
        raise layout_error("stl10", root, f"{split}_X.bin is missing", LAYOUT)
    raw = np.memmap(os.path.join(base, f"{split}_X.bin"), np.uint8, mode="r")
    if raw.size % (3 * _SIDE * _SIDE):
        raise ValueError(f"stl10: {split}_X.bin size {raw.size} is not a multiple of 3*96*96")
    # stored as N x C x W x H (column-major planes): move to N x H x W x C
    images = raw.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 3, 2, 1)
    labels = None
    if split != "unlabeled":
        path = os.path.join(base, f"{split}_y.bin")
        if not os.path.isfile(path):
            raise layout_error("stl10", root, f"{split}_y.bin is missing", LAYOUT)
        labels = np.fromfile(path, np.uint8).astype(np.int64) - 1
        if len(labels) != len(images) or labels.min() < 0 or labels.max() > 9:
            raise ValueError(f"stl10: {split}_y.bin must hold {len(images)} labels in 1-10")
    classes = _class_names(base)
    return Source("stl10", root, split, classes, labels is not None,
                  array_records(split, images, labels))


def _class_names(base: str) -> list[str]:
    path = os.path.join(base, "class_names.txt")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) == 10:
            return names
    return list(CLASSES)
