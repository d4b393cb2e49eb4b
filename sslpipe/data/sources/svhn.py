"""SVHN, cropped digits (format 2): ``{train,test,extra}_32x32.mat``.

Each .mat holds ``X``: ``32 x 32 x 3 x N`` uint8 and ``y``: ``N x 1`` labels 1-10, where 10
means the digit 0. Class ``d`` is the digit ``d``.
"""

from __future__ import annotations

import os

import numpy as np

from sslpipe.data.sources.base import Source, array_records, check_root, check_split, layout_error

LAYOUT = "ROOT/{train_32x32.mat, test_32x32.mat, extra_32x32.mat}"
SPLITS = ("train", "test", "extra")


def read_svhn(root: str, split: str = "train") -> Source:
    """SVHN ``train`` (73,257), ``test`` (26,032) or ``extra`` (531,131): 32 x 32 RGB digits."""
    from scipy.io import loadmat

    check_split("svhn", split, SPLITS)
    root = check_root("svhn", root, LAYOUT)
    path = os.path.join(root, f"{split}_32x32.mat")
    if not os.path.isfile(path):
        raise layout_error("svhn", root, f"{split}_32x32.mat is missing", LAYOUT)
    mat = loadmat(path)
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise ValueError(f"svhn: {path!r} must hold X (32 x 32 x 3 x N) and y (N x 1)")
    images = np.ascontiguousarray(x.transpose(3, 0, 1, 2), dtype=np.uint8)
    labels = np.asarray(y, np.int64).reshape(-1) % 10  # the label 10 stands for the digit 0
    if len(labels) != len(images):
        raise ValueError(f"svhn: {path!r} has {len(images)} images but {len(labels)} labels")
    classes = [str(d) for d in range(10)]
    return Source("svhn", root, split, classes, True, array_records(split, images, labels))
