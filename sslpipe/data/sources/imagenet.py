"""ImageNet ILSVRC2012 (CLS-LOC) as distributed, in either common layout.

Class index order is the sorted WordNet ids (wnids) of the 1,000 classes, as torchvision and
timm use it; a class is named ``"<wnid> <first synonym>"`` when the devkit or a synsets file
gives names, else just its wnid. Validation images are either in class folders or flat with a
ground-truth file (Kaggle's ``LOC_val_solution.csv`` or the devkit's
``ILSVRC2012_validation_ground_truth.txt`` with ``meta.mat``). A sample's key is the file name
without its extension (``n01440764_10026``); files whose names would clash (the same name in
two subfolders, or with two extensions) are keyed by their path below the split folder
instead (:func:`~sslpipe.data.sources.base.unique_keys`).
"""

from __future__ import annotations

import csv
import os
import re

from sslpipe.data.sources.base import (
    Record,
    Source,
    check_root,
    check_split,
    layout_error,
    safe_key,
    unique_keys,
)
from sslpipe.data.sources.imagefolder import IMAGE_EXTENSIONS, walk_files

LAYOUT = """\
ROOT/train/n01440764/n01440764_10026.JPEG       (one folder per wnid)
ROOT/val/n01440764/ILSVRC2012_val_00000293.JPEG (class folders), or flat:
ROOT/val/ILSVRC2012_val_00000001.JPEG + one of
    ROOT/LOC_val_solution.csv                   (Kaggle: ImageId,PredictionString)
    ROOT/ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt + meta.mat
optional names: ROOT/LOC_synset_mapping.txt or ROOT/synsets.txt ("n01440764 tench, ...")
(Kaggle's ROOT/ILSVRC/Data/CLS-LOC/{train,val} is found too.)"""
SPLITS = ("train", "val")
_WNID = re.compile(r"^n\d{8}$")
_DEVKIT = os.path.join("ILSVRC2012_devkit_t12", "data")


def read_imagenet(root: str, split: str = "train") -> Source:
    """Read the ``train`` or ``val`` split of ImageNet at ``root`` (see the module docstring).

    Raises:
        ValueError: the split folder is missing, or flat validation images have no ground truth
            (the message shows the layout expected).
    """
    check_split("imagenet", split, SPLITS)
    root = check_root("imagenet", root, LAYOUT)
    base = _data_dir(root, split)
    wnid_dirs = sorted(e.name for e in os.scandir(base) if e.is_dir() and _WNID.match(e.name))
    if wnid_dirs:
        wnids, labels = wnid_dirs, None
    else:
        labels = _val_labels(root)
        wnids = _all_wnids(root) or sorted(set(labels.values()))
    names = _names(root)
    classes = [f"{w} {names[w]}" if w in names else w for w in wnids]
    index = {w: i for i, w in enumerate(wnids)}
    found: list[tuple[str, int]] = []  # (path, label)
    skipped: list[dict[str, str]] = []
    if labels is None:
        for wnid in wnids:
            _add(walk_files(os.path.join(base, wnid)), index[wnid], found, skipped)
    else:
        for path in walk_files(base):
            stem = os.path.splitext(os.path.basename(path))[0]
            if stem not in labels:
                skipped.append({"path": path, "reason": "no ground-truth label for this image"})
            else:
                _add([path], index[labels[stem]], found, skipped)
    if not found:
        raise layout_error("imagenet", root, f"no images in {base!r}", LAYOUT)
    stems = [safe_key(os.path.splitext(os.path.basename(path))[0]) for path, _ in found]
    keys = unique_keys(stems, [os.path.relpath(path, base) for path, _ in found])
    records = [Record(key, label, path=path) for key, (path, label) in zip(keys, found)]
    return Source("imagenet", root, split, classes, True, records, skipped)


def _add(
    paths: list[str], label: int, found: list[tuple[str, int]], skipped: list[dict[str, str]]
) -> None:
    for path in paths:
        if path.lower().endswith(IMAGE_EXTENSIONS):
            found.append((path, label))
        else:
            skipped.append({"path": path, "reason": "not an image file extension"})


def _data_dir(root: str, split: str) -> str:
    for base in (root, os.path.join(root, "ILSVRC", "Data", "CLS-LOC")):
        if os.path.isdir(os.path.join(base, split)):
            return os.path.join(base, split)
    raise layout_error("imagenet", root, f"the {split!r} folder is missing", LAYOUT)


def _val_labels(root: str) -> dict[str, str]:
    """Image stem -> wnid for flat validation images."""
    solution = os.path.join(root, "LOC_val_solution.csv")
    if os.path.isfile(solution):
        with open(solution, newline="", encoding="utf-8") as f:
            return {row["ImageId"]: row["PredictionString"].split()[0] for row in csv.DictReader(f)}
    truth = os.path.join(root, _DEVKIT, "ILSVRC2012_validation_ground_truth.txt")
    meta = os.path.join(root, _DEVKIT, "meta.mat")
    if os.path.isfile(truth) and os.path.isfile(meta):
        by_id = {ilsvrc_id: wnid for ilsvrc_id, wnid, _ in _meta_synsets(meta)}
        with open(truth, encoding="utf-8") as f:
            ids = [int(line) for line in f if line.strip()]
        return {f"ILSVRC2012_val_{i + 1:08d}": by_id[v] for i, v in enumerate(ids)}
    raise layout_error(
        "imagenet", root, "validation images are flat but no ground truth file was found", LAYOUT
    )


def _meta_synsets(meta: str) -> list[tuple[int, str, str]]:
    """``(ILSVRC2012_ID, wnid, words)`` of the leaf classes in the devkit's ``meta.mat``."""
    from scipy.io import loadmat

    synsets = loadmat(meta, squeeze_me=True)["synsets"]
    return [
        (int(s["ILSVRC2012_ID"]), str(s["WNID"]), str(s["words"]))
        for s in synsets if int(s["num_children"]) == 0
    ]


def _all_wnids(root: str) -> list[str]:
    return sorted(_names(root))


def _names(root: str) -> dict[str, str]:
    """wnid -> first synonym, from a synsets file or the devkit (empty when neither exists)."""
    for candidate in ("LOC_synset_mapping.txt", "synsets.txt", "synset_words.txt"):
        path = os.path.join(root, candidate)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                pairs = [line.strip().split(" ", 1) for line in f if line.strip()]
            return {p[0]: (p[1] if len(p) > 1 else p[0]).split(",")[0].strip() for p in pairs}
    meta = os.path.join(root, _DEVKIT, "meta.mat")
    if os.path.isfile(meta):
        return {wnid: words.split(",")[0].strip() for _, wnid, words in _meta_synsets(meta)}
    return {}
