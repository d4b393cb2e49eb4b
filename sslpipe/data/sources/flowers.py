"""Oxford Flowers-102: ``jpg/image_NNNNN.jpg`` with ``imagelabels.mat`` and ``setid.mat``.

``imagelabels.mat`` has ``labels`` (1 x 8189, classes 1-102, stored here as 0-101);
``setid.mat`` has the 1-based image ids of each split: ``trnid``, ``valid``, ``tstid``. Class
``i`` is named by its original label number ``str(i + 1)``.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from sslpipe.data.sources.base import Record, Source, check_root, check_split, layout_error

LAYOUT = """\
ROOT/jpg/image_00001.jpg ... image_08189.jpg
ROOT/imagelabels.mat   (labels: 1 x N, 1-102)
ROOT/setid.mat         (trnid, valid, tstid: 1-based image ids)"""
SPLITS = ("train", "val", "test")
_SET_FIELD = {"train": "trnid", "val": "valid", "test": "tstid"}


def read_flowers102(root: str, split: str = "train") -> Source:
    """Flowers-102 ``train`` (1,020), ``val`` (1,020) or ``test`` (6,149)."""
    from scipy.io import loadmat

    check_split("flowers102", split, SPLITS)
    root = check_root("flowers102", root, LAYOUT)
    for needed in ("jpg", "imagelabels.mat", "setid.mat"):
        if not os.path.exists(os.path.join(root, needed)):
            raise layout_error("flowers102", root, f"{needed} is missing", LAYOUT)
    labels = np.asarray(loadmat(os.path.join(root, "imagelabels.mat"))["labels"]).reshape(-1)
    ids = np.asarray(loadmat(os.path.join(root, "setid.mat"))[_SET_FIELD[split]]).reshape(-1)
    num_classes = int(labels.max())
    records, skipped = [], []
    listed = Counter(int(i) for i in ids)
    for image_id in sorted(listed):
        if not 1 <= image_id <= len(labels):
            raise ValueError(f"flowers102: setid.mat id {image_id} is outside 1-{len(labels)}")
        name = f"image_{image_id:05d}"
        path = os.path.join(root, "jpg", f"{name}.jpg")
        records.append(Record(name, int(labels[image_id - 1]) - 1, path=path))
        if listed[image_id] > 1:  # one image, one sample: the repeats are named, not written
            skipped.append({"path": path, "reason": f"listed {listed[image_id]} times in "
                            f"setid.mat {_SET_FIELD[split]}; written once"})
    classes = [str(i + 1) for i in range(num_classes)]
    return Source("flowers102", root, split, classes, True, records, skipped)
